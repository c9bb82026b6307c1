"""Keeping passwords in broker URLs out of logs, errors, reprs and dumps.

The rule, for every URL field of every adapter config (the :data:`RedactedUrl`
field type): the value is a :class:`SecretUrl`. Whatever turns it into text
for a person - ``repr()``, ``str()``, f-strings and ``%s`` (so logging),
``model_dump()``/``model_dump_json()`` of the config, error messages - shows
it redacted. An engine that needs the real URL asks for it by name:
``url.get_secret_value()`` (or :func:`secret_value` for a value that may be a
plain ``str``). A config dump that must carry the real URLs to another
process says so: ``config.model_dump(mode="json", context=REVEAL_SECRETS)``.

:func:`redact_url` hides, in a URL or in any text holding URLs:

* the password of the userinfo (``redis://user:***@host``), whatever it
  holds (``@``, ``/``, ``%``...: everything up to the last ``@`` before the
  host counts as userinfo); a userinfo without a ``:`` (a bare token) is
  hidden whole (``redis://***@host``);
* the value of query parameters whose name says they hold a secret
  (``password``, ``passwd``, ``pass``, ``pwd``, ``token``, ``secret``,
  ``access_key``, ``api_key``, ``auth``, ``credential``, ``signature``...),
  as in redis-py's ``unix:///run/redis.sock?password=...``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, overload

from pydantic import AfterValidator, PlainSerializer, SerializationInfo

MASK = "***"

REVEAL_SECRETS: dict[str, Any] = {"taskserve_reveal_secrets": True}
"""Serialization context under which :data:`RedactedUrl` fields dump their real
value: ``config.model_dump(mode="json", context=REVEAL_SECRETS)``."""

# scheme://rest-of-the-url; whitespace, a quote or an angle bracket ends a URL in a text.
_URL = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<rest>[^\s'\"<>]*)")
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:[A-Za-z0-9_.\-]*?)"
    r"(?:pass(?:word|wd)?|pwd|secret|token|(?:access|api|secret|private|sas|account)[_\-]?key"
    r"|apikey|auth|credentials?|signature|sig)[A-Za-z0-9_.\-]*=)"
    r"(?P<value>[^&#;\s'\"<>]*)",
    re.IGNORECASE,
)


def _redact_authority(match: re.Match[str]) -> str:
    scheme, rest = match["scheme"], match["rest"]
    # Query and fragment first, so an '@' inside them is not taken for userinfo.
    cut = len(rest)
    for mark in ("?", "#"):
        at = rest.find(mark)
        if at != -1:
            cut = min(cut, at)
    head, tail = rest[:cut], rest[cut:]
    at = head.rfind("@")
    if at != -1:
        userinfo, head = head[:at], head[at + 1 :]
        user, colon, _ = userinfo.partition(":")
        shown = f"{user}:{MASK}" if colon else MASK
        head = f"{shown}@{head}"
    return f"{scheme}{head}{tail}"


def redact_url(url: str) -> str:
    """Return ``url`` (or a text holding URLs) with every secret replaced by ``***``.

    ``redis://:secret@host:6379/0`` becomes ``redis://:***@host:6379/0``;
    ``unix:///run/redis.sock?password=secret`` becomes
    ``unix:///run/redis.sock?password=***``.
    """
    text = str.__str__(url) if isinstance(url, str) else str(url)
    text = _URL.sub(_redact_authority, text)
    return _SECRET_PARAM.sub(lambda m: f"{m['name']}{MASK}", text)


class SecretUrl(str):
    """A URL whose every textual form for people is redacted.

    It is a ``str`` holding the real URL, so code that parses it (``urlsplit``)
    and clients given it work; but ``repr()``, ``str()``, ``format()`` (so
    f-strings and logging) show it with :func:`redact_url`. The real URL is
    :meth:`get_secret_value`.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(self.redacted)

    def __str__(self) -> str:
        return self.redacted

    def __format__(self, format_spec: str) -> str:
        return format(self.redacted, format_spec)

    @property
    def redacted(self) -> str:
        """The URL with its secrets replaced by ``***``."""
        return redact_url(self)

    def get_secret_value(self) -> str:
        """The real URL, as a plain ``str`` (for engines and clients)."""
        return str.__str__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SecretUrl, (self.get_secret_value(),))


@overload
def secret_value(url: str) -> str: ...
@overload
def secret_value(url: None) -> None: ...
def secret_value(url: str | None) -> str | None:
    """The real URL of a :class:`SecretUrl` or plain ``str`` (None stays None)."""
    if url is None:
        return None
    if isinstance(url, SecretUrl):
        return url.get_secret_value()
    return str.__str__(url)


def _to_secret_url(value: Any) -> SecretUrl:
    return SecretUrl(secret_value(value) if isinstance(value, str) else value)


def _dump_url(value: Any, info: SerializationInfo) -> Any:
    context = info.context
    if isinstance(context, dict) and context.get("taskserve_reveal_secrets"):
        return secret_value(value) if isinstance(value, str) else value
    if isinstance(value, str):
        return redact_url(value) if info.mode == "json" else SecretUrl(secret_value(value))
    return value


RedactedUrl = Annotated[
    str, AfterValidator(_to_secret_url), PlainSerializer(_dump_url, return_type=str)
]
"""Field type for broker and backend URLs: validated as str, held as a
:class:`SecretUrl`; dumps redacted unless the context is :data:`REVEAL_SECRETS`."""
