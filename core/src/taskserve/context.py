"""The running task's context, readable from inside a handler."""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass, field

from taskserve.errors import TaskCancelled


@dataclass
class TaskContext:
    """The task a handler is running for.

    Sync handlers poll :attr:`cancelled` (or call :meth:`raise_if_cancelled`)
    to stop early once the task is cancelled; async handlers are interrupted
    with ``asyncio.CancelledError`` instead.
    """

    id: str
    name: str
    queue_name: str
    attempt: int
    _cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

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


def set_current_task(context: TaskContext | None) -> contextvars.Token[TaskContext | None]:
    """Bind ``context`` to the current thread or coroutine (consumer use only)."""
    return _current.set(context)


def reset_current_task(token: contextvars.Token[TaskContext | None]) -> None:
    """Undo :func:`set_current_task`."""
    _current.reset(token)
