"""When and in what order a task runs: ``delay_s``, ``eta`` and ``priority`` of an
enqueue, checked."""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

from taskserve.errors import InvalidArgument

MAX_DELAY_S = 366 * 24 * 3600.0
"""The longest wait a task may be enqueued with (a year and a day)."""

MIN_PRIORITY = 0
"""The lowest priority, and that of a task enqueued without one."""
MAX_PRIORITY = 9
"""The highest priority: within a queue, higher priorities run first."""
PRIORITY_LEVELS = range(MIN_PRIORITY, MAX_PRIORITY + 1)
"""Every priority, lowest first."""
PRIORITY_LEVEL_SUFFIX = "@priority-"
"""What the name of a priority level's own list or queue adds to its queue's
name, followed by the level's digit (:func:`priority_level_name`)."""


def priority_level_name(name: str, priority: int) -> str:
    """The name of ``name``'s list or queue for tasks of ``priority``, for
    engines that keep one per level: ``name`` itself for :data:`MIN_PRIORITY`
    (so plain producers of the engine feed the lowest level), else
    ``<name>@priority-<n>``. Adapters refuse queue names of the second form."""
    if priority == MIN_PRIORITY:
        return name
    return f"{name}{PRIORITY_LEVEL_SUFFIX}{priority}"


def task_priority(priority: Any) -> int | None:
    """``priority`` of an enqueue, checked: None (the lowest, :data:`MIN_PRIORITY`)
    or an integer from :data:`MIN_PRIORITY` to :data:`MAX_PRIORITY`, higher first.
    Anything else raises :class:`~taskserve.InvalidArgument` naming it."""
    if priority is None:
        return None
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidArgument(
            f"priority must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, "
            f"got {type(priority).__name__}"
        )
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidArgument(
            f"priority must be from {MIN_PRIORITY} (lowest) to {MAX_PRIORITY} (highest), "
            f"got {priority}"
        )
    return priority


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
