"""Signing deliveries the Standard Webhooks way, with the ``standardwebhooks`` package.

Each delivery carries ``webhook-id`` (the event's stable id), ``webhook-timestamp``
(unix seconds of this try) and ``webhook-signature`` (``v1,`` and the base64
HMAC-SHA256 of ``<id>.<timestamp>.<body>`` under the queue's secret). A
receiver checks them with the same package::

    from standardwebhooks import Webhook

    event = Webhook(secret).verify(body, headers)  # raises if forged or stale
"""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks import Webhook


class Signer:
    """Signs the deliveries of one queue with its ``whsec_`` secret."""

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)

    def headers(self, event_id: str, body: str, at: datetime | None = None) -> dict[str, str]:
        """The headers of one try of event ``event_id`` with ``body``, signed at
        ``at`` (default: now)."""
        moment = (at or datetime.now(tz=UTC)).astimezone(UTC)
        return {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": self._webhook.sign(event_id, moment, body),
        }
