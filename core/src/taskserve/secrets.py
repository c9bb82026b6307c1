"""Deprecated: import RedactedUrl, SecretUrl and redact_url from :mod:`taskserve.kit`."""

from taskserve._deprecated import moved
from taskserve.redaction import RedactedUrl, SecretUrl, redact_url

moved("taskserve.secrets", "RedactedUrl, SecretUrl and redact_url")

__all__ = ["RedactedUrl", "SecretUrl", "redact_url"]
