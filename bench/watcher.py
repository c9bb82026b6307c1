"""When does SUCCESS become visible to a client? One thread that asks, in order.

The watcher polls the system's own status call for the oldest task not yet
seen succeeding, and moves on at once when it has; a task that finished out of
order (concurrent tasks) is credited when the ones before it are, at most one
task's run time late. Polling the head only keeps the status calls to about
one per task plus one per 0.5 ms of waiting, the same for every system.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from bench.engines.base import Trial

POLL_S = 0.0005


class VisibilityWatcher:
    """Records ``time.perf_counter()`` when each added task is seen SUCCESS."""

    def __init__(self, trial: Trial) -> None:
        self._trial = trial
        self._ids: list[str] = []
        self.visible_at: list[float] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-watcher", daemon=True)

    def add(self, task_id: str) -> None:
        """Watch ``task_id`` (after every task added before it)."""
        self._ids.append(task_id)

    def wait(self, count: int, timeout_s: float) -> list[float]:
        """Return the visibility times once the first ``count`` tasks are seen."""
        deadline = time.monotonic() + timeout_s
        while len(self.visible_at) < count:
            if self._error is not None:
                raise self._error
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(self.visible_at)} of {count} tasks succeeded within {timeout_s:.0f}s"
                )
            time.sleep(0.01)
        return self.visible_at[:count]

    def _run(self) -> None:
        seen = 0
        try:
            while not self._stop.is_set():
                if seen < len(self._ids) and self._trial.succeeded(self._ids[seen]):
                    self.visible_at.append(time.perf_counter())
                    seen += 1
                else:
                    time.sleep(POLL_S)
        except BaseException as e:
            self._error = e

    def start(self) -> None:
        """Start polling (tasks may be added before and after)."""
        self._thread.start()

    def __enter__(self) -> VisibilityWatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
