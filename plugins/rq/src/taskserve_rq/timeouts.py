"""Job timeouts that work in any thread.

RQ enforces a job's ``timeout`` with a "death penalty". Its default one arms
``SIGALRM``, which only the main thread may do, and taskserve runs RQ workers
in threads of a replica. :class:`ThreadDeathPenalty` instead raises the
timeout exception in the thread that entered it, from a timer thread, and
only while that thread is still inside the guarded block.

:func:`time_limited` applies a job's timeout to a task handler: a sync handler
runs under a :class:`ThreadDeathPenalty`, an ``async def`` one under
``asyncio.timeout`` (so the coroutine is cancelled, not its event loop's
thread). Either way the handler fails with RQ's ``JobTimeoutException``, which
taskserve retries or dead-letters like any other failure.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import heapq
import inspect
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from rq.timeouts import BaseDeathPenalty, BaseTimeoutException, JobTimeoutException

from taskserve.kit import current_task


class TimeLimitReached(BaseTimeoutException):
    """Raised asynchronously into a thread whose time limit passed."""


class _Watchdog:
    """One daemon thread firing the death penalties whose time has come.

    Arming a penalty only pushes it on a heap: the guarded thread never starts
    a thread or waits on one, so the exception cannot land inside threading's
    own code while the penalty is being set up.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, ThreadDeathPenalty]] = []
        self._count = itertools.count()
        self._cancelled = 0
        self._thread: threading.Thread | None = None

    def schedule(self, deadline: float, penalty: ThreadDeathPenalty) -> None:
        with self._wake:
            heapq.heappush(self._heap, (deadline, next(self._count), penalty))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="taskserve-rq-timeouts", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def cancelled(self) -> None:
        """A penalty left its block; drop the cancelled ones once they are many."""
        with self._wake:
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if entry[2].armed]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap:
                    self._wake.wait()
                deadline, _, penalty = self._heap[0]
                wait_s = deadline - time.monotonic()
                if wait_s > 0:
                    self._wake.wait(wait_s)
                    continue
                heapq.heappop(self._heap)
            penalty.fire()


_WATCHDOG = _Watchdog()


class ThreadDeathPenalty(BaseDeathPenalty):
    """A death penalty for any thread (RQ's ``death_penalty_class`` interface).

    Once ``timeout`` seconds pass, a watchdog thread raises ``exception`` in
    the thread that entered the block. Leaving the block disarms it under a
    lock, so the exception never lands after the block. Like every
    asynchronous exception it takes effect between Python bytecodes: a handler
    blocked in one long C call (``time.sleep(3600)``) sees it only when that
    call returns.
    """

    def __init__(
        self,
        timeout: float | None,
        exception: type[BaseException] = JobTimeoutException,
        **kwargs: Any,
    ) -> None:
        super().__init__(timeout, exception, **kwargs)  # type: ignore[no-untyped-call]
        self._thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._armed = False

    @property
    def armed(self) -> bool:
        """Whether the penalty can still fire."""
        return self._armed

    def setup_death_penalty(self) -> None:
        """Arm the penalty for the current thread (no limit when timeout <= 0)."""
        if self._timeout is None or self._timeout <= 0:
            return
        self._thread_id = threading.get_ident()
        with self._lock:
            self._armed = True
        _WATCHDOG.schedule(time.monotonic() + self._timeout, self)

    def cancel_death_penalty(self) -> None:
        """Disarm; after this returns no exception can be raised."""
        with self._lock:
            was_armed, self._armed = self._armed, False
        if was_armed:
            _WATCHDOG.cancelled()

    def fire(self) -> None:
        """Raise the exception in the guarded thread if it is still in the block."""
        with self._lock:
            if not self._armed:
                return
            self._armed = False
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._thread_id), ctypes.py_object(self._exception)
            )


def _timeout_error(limit: float, task_name: str) -> JobTimeoutException:
    return JobTimeoutException(f"task '{task_name}' exceeded its job timeout of {limit:g} seconds")


def time_limited(
    handler: Callable[..., Any], limit_of: Callable[[str], float | None]
) -> Callable[..., Any]:
    """Wrap ``handler`` so each run stops after ``limit_of(task id)`` seconds.

    The wrapper keeps the handler's name, signature and sync/async kind, so the
    runner binds arguments and awaits exactly as it would the handler itself.
    """
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            task = current_task()
            limit = limit_of(task.id)
            if limit is None:
                return await handler(*args, **kwargs)
            scope = asyncio.timeout(limit)
            try:
                async with scope:
                    return await handler(*args, **kwargs)
            except TimeoutError as e:
                if scope.expired():
                    raise _timeout_error(limit, task.name) from e
                raise

        return run_async

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        task = current_task()
        limit = limit_of(task.id)
        if limit is None:
            return handler(*args, **kwargs)
        try:
            with ThreadDeathPenalty(limit, TimeLimitReached):
                return handler(*args, **kwargs)
        except TimeLimitReached as e:
            raise _timeout_error(limit, task.name) from e

    return run
