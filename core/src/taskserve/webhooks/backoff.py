"""When a refused webhook delivery is tried again, and when it is given up.

The n-th retry waits ``retry_backoff_s * 2**(n - 1)``, at most
``retry_backoff_max_s``; an event is tried at most ``max_deliveries`` times,
and never later than ``delivery_window_s`` after it happened.
"""

from __future__ import annotations

from taskserve.webhooks.settings import WebhookSettings


def retry_delay_s(settings: WebhookSettings, deliveries: int) -> float:
    """The pause after the ``deliveries``-th failed try (1 for the first)."""
    exponent = min(max(deliveries - 1, 0), 60)
    return min(settings.retry_backoff_s * 2.0**exponent, settings.retry_backoff_max_s)


def next_try_at(
    settings: WebhookSettings, deliveries: int, created_at: float, now: float
) -> float | None:
    """When an event tried ``deliveries`` times, the last one failed at ``now``,
    is tried again; None when it is given up."""
    if deliveries >= settings.max_deliveries:
        return None
    due = now + retry_delay_s(settings, deliveries)
    if due > created_at + settings.delivery_window_s:
        return None
    return due


def schedule(settings: WebhookSettings) -> list[float]:
    """The pauses between the tries of an event refused every time, as far as
    the window allows (offsets from the first try's failure)."""
    pauses: list[float] = []
    at = 0.0
    for deliveries in range(1, settings.max_deliveries):
        due = next_try_at(settings, deliveries, 0.0, at)
        if due is None:
            break
        pauses.append(due - at)
        at = due
    return pauses
