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
import inspect
import threading
from collections.abc import Callable
from typing import Any

from rq.timeouts import BaseDeathPenalty, BaseTimeoutException, JobTimeoutException

from taskserve.context import current_task


class TimeLimitReached(BaseTimeoutException):
    """Raised asynchronously into a thread whose time limit passed."""


class ThreadDeathPenalty(BaseDeathPenalty):
    """A death penalty for any thread (RQ's ``death_penalty_class`` interface).

    A timer raises ``exception`` in the entering thread once ``timeout``
    seconds pass. Leaving the block disarms it under a lock, so the exception
    never lands after the block. Like every asynchronous exception it takes
    effect between Python bytecodes: a handler blocked in one long C call
    (``time.sleep(3600)``) sees it only when that call returns.
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
        self._timer: threading.Timer | None = None

    def setup_death_penalty(self) -> None:
        """Arm the timer for the current thread (no limit when timeout <= 0)."""
        if self._timeout is None or self._timeout <= 0:
            return
        self._thread_id = threading.get_ident()
        self._armed = True
        self._timer = threading.Timer(self._timeout, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel_death_penalty(self) -> None:
        """Disarm the timer; after this returns no exception can be raised."""
        with self._lock:
            self._armed = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
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
