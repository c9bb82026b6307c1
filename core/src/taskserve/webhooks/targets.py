"""Where a task's webhook may be sent: checked at enqueue and at each delivery.

A webhook URL is ``http`` or ``https`` with a host. Unless the queue's
``webhooks.allow_private_targets`` is set, its host must be (or resolve to)
public addresses only: a URL whose host is, or whose name resolves to, a
loopback, private, link-local, shared, multicast, reserved or unspecified
address (IPv4, IPv6, and IPv4 inside IPv6) is refused - every address the
name has is checked, so one private address among public ones is enough. A
producer thus cannot make consumers call into their own network (server-side
request forgery).

The same check runs again before each delivery (a name can be made to
resolve elsewhere after the enqueue: DNS rebinding), and the delivery then
connects to the address that was checked (:func:`pinned_address`), not to
whatever a second lookup would give.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from taskserve.errors import ConfigError, InvalidArgument
from taskserve.redaction import redact_url
from taskserve.webhooks.settings import DEFAULT_WEBHOOK_EVENTS, WebhookEvent, WebhookSettings

MAX_WEBHOOK_URL_LENGTH = 2048
"""Longest webhook URL accepted, in characters."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Resolver = Callable[[str, int], Sequence[str]]
"""Host name and port -> the addresses the name resolves to."""


class WebhookTargetRefused(InvalidArgument):
    """A webhook URL names a host that is (or resolves to) an address the queue
    does not send to (loopback, private, link-local, reserved...)."""


@dataclass(frozen=True)
class WebhookTarget:
    """A task's webhook: where to send it and for which events."""

    url: str
    events: tuple[WebhookEvent, ...]


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (``socket.getaddrinfo``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def webhook_events(events: Any) -> tuple[WebhookEvent, ...]:
    """``events`` as a tuple of :class:`WebhookEvent` (None: the default set);
    InvalidArgument naming an unknown event or the wrong type."""
    if events is None:
        return DEFAULT_WEBHOOK_EVENTS
    if isinstance(events, (str, bytes)) or not isinstance(events, Collection):
        raise InvalidArgument(
            "webhook_events must be a list of event names (started, progress, succeeded, "
            f"failed, cancelled, dead_lettered), got {type(events).__name__}"
        )
    known = ", ".join(e.value for e in WebhookEvent)
    chosen: list[WebhookEvent] = []
    for item in events:
        try:
            event = WebhookEvent(item)
        except ValueError:
            raise InvalidArgument(
                f"webhook_events: unknown event {item!r:.60}; the events are {known}"
            ) from None
        if event not in chosen:
            chosen.append(event)
    if not chosen:
        raise InvalidArgument(
            f"webhook_events must name at least one event ({known}); leave it out for the "
            "default (succeeded, failed, cancelled)"
        )
    return tuple(chosen)


def webhook_url(url: Any) -> SplitResult:
    """``url`` split, if it is an http or https URL with a host; InvalidArgument
    saying what is wrong otherwise (the URL is shown redacted)."""
    if not isinstance(url, str):
        raise InvalidArgument(f"webhook_url must be a str, got {type(url).__name__}")
    if len(url) > MAX_WEBHOOK_URL_LENGTH:
        raise InvalidArgument(
            f"webhook_url is {len(url)} characters long, over the limit of {MAX_WEBHOOK_URL_LENGTH}"
        )
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise InvalidArgument("webhook_url must not hold spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidArgument(f"webhook_url is not a valid URL: {e}") from e
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidArgument(
            f"webhook_url must be an http:// or https:// URL, got {redact_url(url)!r:.100}"
        )
    if not parts.hostname:
        raise InvalidArgument(f"webhook_url has no host: {redact_url(url)!r:.100}")
    if port == 0:
        raise InvalidArgument("webhook_url must not name port 0")
    return parts


def _address(text: str) -> IPAddress:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone is local anyway
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is a public unicast address (not loopback, private,
    link-local, shared, reserved, multicast or unspecified)."""
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def public_addresses(url: str, resolve: Resolver = resolve_host) -> list[str]:
    """The addresses the host of ``url`` is or resolves to, each of them public;
    :class:`WebhookTargetRefused` when one is not, or the name does not resolve."""
    parts = webhook_url(url)
    host = str(parts.hostname)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    shown = redact_url(url)
    try:
        literal: IPAddress | None = _address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [host]
    else:
        try:
            found = list(resolve(host, port))
        except (OSError, UnicodeError) as e:
            raise WebhookTargetRefused(
                f"webhook_url host '{host}' does not resolve ({type(e).__name__}: {e}); "
                f"cannot check that {shown} is a public address"
            ) from e
        if not found:
            raise WebhookTargetRefused(f"webhook_url host '{host}' resolves to no address")
    for text in found:
        try:
            address = _address(text)
        except ValueError:
            raise WebhookTargetRefused(
                f"webhook_url host '{host}' resolves to {text!r}, not an IP address"
            ) from None
        if not is_public(address):
            via = "" if literal is not None else f" (it resolves to {address})"
            raise WebhookTargetRefused(
                f"webhook_url {shown} targets a loopback, private, link-local or reserved "
                f"address{via}; such targets are refused unless the queue's "
                "webhooks.allow_private_targets is set"
            )
    return found


def webhook_target(
    url: Any,
    events: Any,
    settings: WebhookSettings,
    *,
    resolve: Resolver = resolve_host,
) -> WebhookTarget:
    """The webhook a task asks for, checked in this order: a signing secret in
    ``settings`` (:class:`ConfigError` without one: the queue sends no
    webhooks), an http(s) URL, known events (default:
    :data:`DEFAULT_WEBHOOK_EVENTS`) and, unless private targets are allowed, a
    host of public addresses only (:class:`WebhookTargetRefused`); the others
    raise :class:`InvalidArgument` naming what is wrong."""
    if not settings.enabled:
        raise ConfigError(
            "this queue sends no webhooks: set webhooks.signing_secret in its "
            "TaskProcessorConfig (a 'whsec_' Standard Webhooks secret) to let tasks ask for one"
        )
    if url is None:
        raise InvalidArgument("webhook_events needs a webhook_url to send them to")
    webhook_url(url)
    chosen = webhook_events(events)
    if not settings.allow_private_targets:
        public_addresses(url, resolve)
    return WebhookTarget(url=url, events=chosen)


def pinned_address(
    url: str, settings: WebhookSettings, resolve: Resolver = resolve_host
) -> str | None:
    """The checked address a delivery to ``url`` connects to, or None when
    private targets are allowed (then the URL's host is used as it is);
    :class:`WebhookTargetRefused` when the host now is or resolves to a private
    address."""
    if settings.allow_private_targets:
        return None
    return public_addresses(url, resolve)[0]
