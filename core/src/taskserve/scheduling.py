"""When a delayed task is due: ``delay_s`` and ``eta`` of an enqueue, checked."""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

from taskserve.errors import InvalidArgument

MAX_DELAY_S = 366 * 24 * 3600.0
"""The longest wait a task may be enqueued with (a year and a day)."""


def due_time(delay_s: Any = None, eta: Any = None, *, now: float | None = None) -> float | None:
    """The unix time a task enqueued with ``delay_s`` or ``eta`` is due, or
    None when neither is given (deliverable at once).

    ``delay_s`` is a finite number of seconds from now, 0 up to
    :data:`MAX_DELAY_S`; ``eta`` an aware :class:`~datetime.datetime` (a time
    in the past means at once), at most :data:`MAX_DELAY_S` ahead. Anything
    else, or both at once, raises :class:`~taskserve.InvalidArgument` naming
    the argument.
    """
    if delay_s is None and eta is None:
        return None
    if delay_s is not None and eta is not None:
        raise InvalidArgument("give delay_s or eta, not both")
    now = time.time() if now is None else now
    if delay_s is not None:
        if isinstance(delay_s, bool) or not isinstance(delay_s, (int, float)):
            raise InvalidArgument(
                f"delay_s must be a number of seconds, got {type(delay_s).__name__}"
            )
        if not math.isfinite(delay_s) or not 0 <= delay_s <= MAX_DELAY_S:
            raise InvalidArgument(
                f"delay_s must be between 0 and {MAX_DELAY_S:.0f} seconds, got {delay_s!r}"
            )
        return now + float(delay_s)
    if not isinstance(eta, datetime):
        raise InvalidArgument(f"eta must be a datetime, got {type(eta).__name__}")
    if eta.tzinfo is None or eta.utcoffset() is None:
        raise InvalidArgument(
            "eta must be an aware datetime (with a time zone, e.g. datetime.now(timezone.utc)); "
            f"got the naive {eta.isoformat()}"
        )
    due = eta.timestamp()
    if due - now > MAX_DELAY_S:
        raise InvalidArgument(f"eta {eta.isoformat()} is more than {MAX_DELAY_S:.0f} s ahead")
    return max(due, now)
