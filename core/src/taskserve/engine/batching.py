"""Gathering the deliveries of a batched task name into batches.

A consumer runs each delivery in a thread of its own: a thread of the kit's
pool, or one of the engine's worker threads calling ``run_inline``. For a
batched task name the :class:`~taskserve.engine.runner.TaskRunner` hands
each begun delivery to the name's :class:`Batcher`, where those threads
meet:

* the first delivery to arrive opens a batch; deliveries arriving while it
  is open join it;
* the batch closes once it holds ``max_size`` tasks, or ``wait_s`` seconds
  after its first task arrived, or at once when the consumer stops (no more
  deliveries can come);
* the thread of its first task then runs it - one handler call - while the
  others wait, and each goes on with its own outcome;
* a task cancelled while its batch is open leaves the batch at once; one
  whose cancel is seen as the batch closes is left out of it. Neither is in
  the handler's call.

Several batches of one name may run at once (a consumer of concurrency 8
with ``max_size`` 4 runs two full ones), and a new one opens as soon as the
previous one closed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

M = TypeVar("M")


class _Batch(Generic[M]):
    """One batch: open while tasks may join, then closed and run once."""

    __slots__ = ("closed", "done", "left_out", "members", "opened_at")

    def __init__(self, opened_at: float) -> None:
        self.opened_at = opened_at
        self.members: list[M] = []
        self.left_out: list[M] = []
        self.closed = False
        self.done = threading.Event()


class Batcher(Generic[M]):
    """Gathers the members of one batched task name into batches and runs each
    once, in the thread of its first member.

    ``run(members)`` is called with the members of a closed batch, in their
    order of arrival; it must give each member its outcome and should not
    raise. ``cancelled(member)`` tells whether a member's task was cancelled
    (call :meth:`wake` after a cancel, so that a waiting member notices).
    """

    def __init__(
        self,
        max_size: int,
        wait_s: float,
        run: Callable[[list[M]], None],
        cancelled: Callable[[M], bool],
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        self._max_size = max_size
        self.wait_s = wait_s
        self._run = run
        self._cancelled = cancelled
        self._cond = threading.Condition()
        self._open: _Batch[M] | None = None
        self._flushing = False

    @property
    def max_size(self) -> int:
        """The most members of one batch."""
        return self._max_size

    @max_size.setter
    def max_size(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"max_size must be at least 1, got {value}")
        with self._cond:
            self._max_size = value
            self._cond.notify_all()

    def join(self, member: M) -> bool:
        """Add ``member`` to the open batch and return once that batch has run:
        True if ``member`` was in the call (``run`` gave it its outcome), False
        if its task was cancelled before the batch started (it left, or was
        left out)."""
        with self._cond:
            batch = self._open
            if batch is None:
                batch = self._open = _Batch(time.monotonic())
            batch.members.append(member)
            while not batch.closed:
                if self._cancelled(member):
                    self._leave(batch, member)
                    return False
                remaining = batch.opened_at + self.wait_s - time.monotonic()
                if len(batch.members) >= self._max_size or self._flushing or remaining <= 0:
                    self._close(batch)
                    break
                self._cond.wait(remaining)
            if any(m is member for m in batch.left_out):
                return False
            runs_it = batch.members[0] is member
        if runs_it:
            try:
                self._run(batch.members)
            finally:
                batch.done.set()
        else:
            batch.done.wait()
        return True

    def wake(self) -> None:
        """Have waiting members look again (a task was cancelled)."""
        with self._cond:
            self._cond.notify_all()

    def flush(self) -> None:
        """Close the open batch now, and every later one as soon as it opens
        (the consumer stops: no more deliveries will join)."""
        with self._cond:
            self._flushing = True
            self._cond.notify_all()

    # -- lock held -----------------------------------------------------------------
    def _leave(self, batch: _Batch[M], member: M) -> None:
        batch.members = [m for m in batch.members if m is not member]
        if not batch.members and self._open is batch:
            self._open = None

    def _close(self, batch: _Batch[M]) -> None:
        batch.closed = True
        if self._open is batch:
            self._open = None
        kept: list[M] = []
        for m in batch.members:
            (batch.left_out if self._cancelled(m) else kept).append(m)
        batch.members = kept
        self._cond.notify_all()
