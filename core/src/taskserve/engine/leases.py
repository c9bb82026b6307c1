"""Keeping the leases of running tasks alive and noticing cancel requests.

Every consumer runs one :class:`LeaseKeeper` thread beside its workers. Each
tick it asks the adapter's store which running tasks have a cancel request
(and interrupts them through the runner) and writes the progress reports
that are due (:meth:`~taskserve.engine.runner.TaskRunner.flush_progress`),
and enforces the time limits of the running tasks
(:meth:`~taskserve.engine.runner.TaskRunner.check_time_limits`: the one timer
of the consumer, whatever the number of tasks);
every third of the lease it extends the leases of the tasks still running,
so a task longer than the lease is never delivered twice while its consumer
lives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from taskserve.engine.runner import TaskRunner

logger = logging.getLogger(__name__)

MAX_TICK_S = 0.25
"""Longest pause between two cancel checks (bounds cancel latency)."""


class LeaseKeeper:
    """A daemon thread extending leases and relaying cancel requests."""

    def __init__(
        self,
        runner: TaskRunner,
        lease_s: float,
        *,
        extend: Callable[[list[str]], None],
        cancel_requested: Callable[[list[str]], list[str]],
        housekeeping: Callable[[], object] | None = None,
        housekeeping_every_s: float = 30.0,
        name: str = "taskserve-leases",
    ) -> None:
        self._runner = runner
        self._lease_s = lease_s
        self._extend = extend
        self._cancel_requested = cancel_requested
        self._housekeeping = housekeeping
        self._housekeeping_every_s = housekeeping_every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def alive(self) -> bool:
        """Whether the thread is running."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread at once; call it once running tasks have finished or
        been handed back (their leases must no longer be extended)."""
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        tick = min(self._lease_s / 3, MAX_TICK_S)
        extend_every = self._lease_s / 3
        last_extend = last_housekeeping = time.monotonic()
        while not self._stop.wait(tick):
            try:
                self._runner.check_time_limits()
                running = self._runner.running_task_ids()
                if running:
                    self._runner.flush_progress()
                    for task_id in self._cancel_requested(running):
                        self._runner.cancel_running(task_id)
                now = time.monotonic()
                if running and now - last_extend >= extend_every:
                    self._extend(running)
                    last_extend = now
                if self._housekeeping and now - last_housekeeping >= self._housekeeping_every_s:
                    self._housekeeping()
                    last_housekeeping = now
            except Exception:
                logger.exception("taskserve: keeping leases failed; trying again")
