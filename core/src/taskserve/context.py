"""The running task's context, readable from inside a handler."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from taskserve.errors import TaskCancelled


@dataclass
class TaskContext:
    """The task a handler is running for.

    Sync handlers poll :attr:`cancelled` (or call :meth:`raise_if_cancelled`)
    to stop early once the task is cancelled; async handlers are interrupted
    with ``asyncio.CancelledError`` instead. Both may tell how far they are
    with :meth:`report_progress`.
    """

    id: str
    name: str
    queue_name: str
    attempt: int
    _cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    _report: Callable[[Any, Any, Any], None] | None = field(default=None, repr=False)
    """Where :meth:`report_progress` sends a report (set by the consumer's runner)."""

    @property
    def cancelled(self) -> bool:
        """True once a cancel of this task has been requested."""
        return self._cancel_event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~taskserve.errors.TaskCancelled` if the task was cancelled."""
        if self.cancelled:
            raise TaskCancelled(f"task {self.id} was cancelled")

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on cancel; True if cancelled."""
        return self._cancel_event.wait(timeout)

    def request_cancel(self) -> None:
        """Mark the task cancelled (called by the consumer, not by handlers)."""
        self._cancel_event.set()

    def report_progress(
        self, fraction: float, message: str | None = None, data: Any = None
    ) -> None:
        """Report how far the task is; callable from sync and async handlers
        (and from threads they start), as often as the handler likes.

        ``fraction`` is a number from 0 to 1 (not a bool, not NaN);
        ``message`` an optional text of at most
        :data:`~taskserve.engine.progress.MAX_PROGRESS_MESSAGE_LENGTH`
        characters; ``data`` an optional JSON value of at most
        :data:`~taskserve.engine.progress.MAX_PROGRESS_DATA_BYTES` bytes. Anything
        else raises :class:`~taskserve.InvalidArgument` naming the argument.

        The report becomes the task's ``progress`` (:class:`~taskserve.TaskProgress`
        in its status) without blocking the handler: the consumer writes at most
        one report per task every
        :data:`~taskserve.engine.progress.PROGRESS_WRITE_INTERVAL_S` seconds, the
        latest one, and the last one before the outcome is recorded, so the
        finished task shows it. Reports are written only while this delivery
        runs the task: once the handler has returned (or another delivery took
        the task over) they are dropped, and a finished task never changes. A
        report that cannot be written (the broker is down) is logged and never
        fails the task. On an adapter that does not declare the ``progress``
        capability a report is checked and then ignored, with one warning.
        """
        if self._report is not None:
            self._report(fraction, message, data)


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "taskserve_current_task", default=None
)


def current_task() -> TaskContext:
    """The context of the task this handler runs for.

    Raises RuntimeError when called outside a task handler.
    """
    context = _current.get()
    if context is None:
        raise RuntimeError("current_task() called outside a running task handler")
    return context


def current_task_or_none() -> TaskContext | None:
    """The context of the task the current thread or coroutine runs for, or
    None outside a task handler (never raises; what log filters read)."""
    return _current.get()


def set_current_task(context: TaskContext | None) -> contextvars.Token[TaskContext | None]:
    """Bind ``context`` to the current thread or coroutine (consumer use only)."""
    return _current.set(context)


def reset_current_task(token: contextvars.Token[TaskContext | None]) -> None:
    """Undo :func:`set_current_task`."""
    _current.reset(token)
