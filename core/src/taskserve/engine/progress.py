"""Progress reports of running handlers: checked, then written at a bounded rate.

A handler calls :meth:`~taskserve.TaskContext.report_progress` as often as it
likes; :func:`check_progress` turns the arguments into a
:class:`~taskserve.TaskProgress` (or raises :class:`~taskserve.InvalidArgument`),
and the delivery's :class:`ProgressThrottle` keeps it. A report never does
I/O in the handler's thread (async handlers share one event loop): the
consumer's lease keeper calls :meth:`ProgressThrottle.flush` every tick,
which writes the latest report at most once every
:data:`PROGRESS_WRITE_INTERVAL_S`; reports made in between replace the
pending one. When the handler returns, :meth:`ProgressThrottle.close` writes
the report still pending (so the finished task shows the last one) and drops
every later report. A write the store refuses (the task is no longer STARTED
under this delivery's lease) ends the writes of that delivery; a write that
fails (the broker is down) is logged and tried again an interval later, and
never fails the task.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from taskserve.errors import InvalidArgument, PayloadError
from taskserve.models import TaskProgress
from taskserve.serialization import dumps_json

logger = logging.getLogger("taskserve.progress")

PROGRESS_WRITE_INTERVAL_S = 0.5
"""Shortest time between two progress writes of one running task (the write
of the report pending when the handler returns excepted)."""

MAX_PROGRESS_MESSAGE_LENGTH = 1000
"""Longest ``message`` of a progress report, in characters."""

MAX_PROGRESS_DATA_BYTES = 16 * 1024
"""Largest ``data`` of a progress report, as UTF-8 JSON."""


def check_progress(
    fraction: Any, message: Any = None, data: Any = None, *, now: float | None = None
) -> TaskProgress:
    """The report ``report_progress(fraction, message, data)`` makes, made at
    ``now`` (default: the current time); :class:`~taskserve.InvalidArgument`
    naming the argument that is not acceptable."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise InvalidArgument(
            f"fraction must be a number from 0 to 1, got {type(fraction).__name__}"
        )
    if not math.isfinite(fraction) or not 0 <= fraction <= 1:
        raise InvalidArgument(f"fraction must be from 0 to 1, got {fraction!r}")
    if message is not None:
        if not isinstance(message, str):
            raise InvalidArgument(f"message must be a str or None, got {type(message).__name__}")
        if len(message) > MAX_PROGRESS_MESSAGE_LENGTH:
            raise InvalidArgument(
                f"message is {len(message)} characters long, over the limit of "
                f"{MAX_PROGRESS_MESSAGE_LENGTH}"
            )
    try:
        dumps_json(message, "message")
        text = dumps_json(data, "data")
    except PayloadError as e:
        raise InvalidArgument(str(e)) from e
    size = len(text.encode())
    if size > MAX_PROGRESS_DATA_BYTES:
        raise InvalidArgument(
            f"data is {size} bytes of JSON, over the limit of {MAX_PROGRESS_DATA_BYTES} "
            "(MAX_PROGRESS_DATA_BYTES); report a summary and keep the rest elsewhere"
        )
    return TaskProgress(
        fraction=float(fraction),
        message=message,
        data=json.loads(text),  # a copy: the handler may change its value afterwards
        updated_at=time.time() if now is None else now,
    )


def progress_json(progress: TaskProgress) -> str:
    """A report as the JSON text a store keeps."""
    return progress.model_dump_json()


def stored_progress(text: str | bytes | None) -> TaskProgress | None:
    """A report a store kept, or None when there is none or it cannot be read
    (a broken value never breaks a status read)."""
    if not text:
        return None
    try:
        return TaskProgress.model_validate_json(text)
    except ValueError:
        logger.debug("taskserve: a stored progress report could not be read; it is left out")
        return None


ProgressWriter = Callable[[TaskProgress], bool]
"""Writes one report to the task's record; False when the store refused it
(the task is not STARTED under this delivery's lease)."""


class ProgressThrottle:
    """The progress reports of one running delivery, written at most once per
    ``interval_s`` by :meth:`flush` (see the module docstring).

    :meth:`report` only keeps the report and never blocks on the store;
    :meth:`flush` and :meth:`close` write, one at a time and in order, so a
    newer report is never overwritten by an older one.
    """

    def __init__(
        self,
        task_id: str,
        write: ProgressWriter,
        interval_s: float = PROGRESS_WRITE_INTERVAL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task_id = task_id
        self.interval_s = interval_s
        self.writes = 0
        """How many reports were written (and taken by the store)."""
        self._write = write
        self._clock = clock
        self._state = threading.Lock()
        self._writing = threading.Lock()
        self._pending: TaskProgress | None = None
        self._last_write: float | None = None
        self._closed = False
        self._warned = False

    @property
    def closed(self) -> bool:
        """True once the delivery ended (or the store refused a write)."""
        return self._closed

    def report(self, progress: TaskProgress) -> bool:
        """Keep ``progress`` as the report to write next; False (nothing kept)
        once the delivery has ended."""
        with self._state:
            if self._closed:
                return False
            self._pending = progress
            return True

    def due(self) -> bool:
        """Whether :meth:`flush` would write now."""
        with self._state:
            return self._is_due()

    def _is_due(self) -> bool:
        if self._closed or self._pending is None:
            return False
        return self._last_write is None or self._clock() - self._last_write >= self.interval_s

    def flush(self) -> None:
        """Write the pending report if the interval since the last write has
        passed (called by the lease keeper each tick)."""
        with self._writing:
            with self._state:
                if not self._is_due():
                    return
                progress, self._pending = self._pending, None
                self._last_write = self._clock()
            assert progress is not None
            self._store(progress, keep_if_failed=True)

    def close(self) -> None:
        """End the delivery's reports: write the one still pending, whatever
        the interval, and drop every later one."""
        with self._writing:
            with self._state:
                if self._closed:
                    return
                self._closed = True
                progress, self._pending = self._pending, None
            if progress is not None:
                self._store(progress, keep_if_failed=False)

    def _store(self, progress: TaskProgress, *, keep_if_failed: bool) -> None:
        try:
            taken = self._write(progress)
        except Exception as e:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            logger.log(
                level,
                "taskserve: the progress of task %s could not be written (%s: %s); the task "
                "goes on",
                self.task_id,
                type(e).__name__,
                e,
            )
            if keep_if_failed:
                with self._state:
                    if self._pending is None:
                        self._pending = progress
            return
        if taken:
            self.writes += 1
            return
        logger.debug(
            "taskserve: task %s is no longer STARTED under this delivery; its progress "
            "reports are dropped",
            self.task_id,
        )
        with self._state:
            self._closed = True
            self._pending = None
