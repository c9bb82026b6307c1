"""Keeping passwords in broker URLs out of logs, errors and reprs."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@]*):(?P<pw>[^@/]*)@")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``.

    ``redis://:secret@host:6379/0`` becomes ``redis://:***@host:6379/0``.
    """
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


class SecretUrl(str):
    """A URL string whose ``repr`` hides the password.

    It is a real ``str`` (engines receive the full URL), but ``repr()`` - which
    pydantic models, tracebacks and debuggers use - shows it redacted.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(redact_url(str.__str__(self)))

    @property
    def redacted(self) -> str:
        """The URL with its password replaced by ``***``."""
        return redact_url(self)


def _to_secret_url(value: Any) -> SecretUrl:
    return SecretUrl(value)


RedactedUrl = Annotated[str, AfterValidator(_to_secret_url)]
"""Field type for broker and backend URLs: validated as str, repr redacted."""
