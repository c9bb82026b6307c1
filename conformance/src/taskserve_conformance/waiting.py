"""Bounded waiting: conditions are polled until true or until a deadline.

Tests never sleep a fixed time and then assert; they wait for a condition
with a timeout derived from the configuration (see :mod:`deadlines`), and a
timeout fails the test with what was last seen.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal, TypeVar

import pytest

from taskserve import TaskProcessorAdapter, TaskResult, TaskState
from taskserve_conformance.consumers import ConsumerProcess

_T = TypeVar("_T")

POLL_INTERVAL_S = 0.05


def wait_until(
    predicate: Callable[[], _T | Literal[False] | None],
    timeout: float,
    message: str,
    *,
    interval: float = POLL_INTERVAL_S,
    describe: Callable[[], object] | None = None,
) -> _T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Fails the test after ``timeout`` seconds with ``message``, the last value
    returned and, if given, ``describe()`` (the state worth seeing then).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"; last value: {value!r}"
            if describe is not None:
                detail += f"; {describe()}"
            pytest.fail(f"{message} (waited {timeout:.1f}s){detail}", pytrace=False)
        time.sleep(interval)


def hold_for(
    predicate: Callable[[], object],
    seconds: float,
    message: str,
    *,
    interval: float = POLL_INTERVAL_S,
) -> None:
    """Check that ``predicate`` stays truthy for ``seconds``; fail as soon as it is not.

    For promises that something does *not* happen (a second delivery, a late
    overwrite); ``seconds`` is derived from the configuration.
    """
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if not value:
            pytest.fail(f"{message}; got {value!r}", pytrace=False)
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def wait_for_status(
    adapter: TaskProcessorAdapter,
    task_id: str,
    states: TaskState | Iterable[TaskState],
    timeout: float,
) -> TaskResult:
    """Poll the task's status until it is one of ``states``; return that result."""
    wanted = frozenset([states] if isinstance(states, TaskState) else states)
    seen: list[TaskResult] = []

    def reached() -> TaskResult | None:
        result = adapter.get_task_status_sync(task_id)
        seen.append(result)
        return result if result.status in wanted else None

    found = wait_until(
        reached,
        timeout,
        f"task {task_id} did not reach {' or '.join(sorted(s.value for s in wanted))}",
        describe=lambda: (
            f"last status: {seen[-1].status.value if seen else 'none'}, "
            f"attempts: {seen[-1].attempts if seen else '?'}, error: "
            f"{seen[-1].error.message if seen and seen[-1].error else None}"
        ),
    )
    assert found is not None
    return found


def wait_terminal(adapter: TaskProcessorAdapter, task_id: str, timeout: float) -> TaskResult:
    """Wait until the task is SUCCESS, FAILURE or CANCELLED."""
    return wait_for_status(
        adapter, task_id, (TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED), timeout
    )


def run_barrier(adapter: TaskProcessorAdapter, timeout: float) -> TaskResult:
    """Enqueue an ``echo`` task and wait until it succeeds.

    With one consumer of concurrency 1, every task queued before the barrier
    has been taken (run, skipped or dead-lettered) once the barrier is done:
    the way to check that something did *not* happen without a fixed sleep.
    """
    barrier = adapter.enqueue_task_sync("echo", ["barrier"])
    return wait_for_status(adapter, barrier.id, TaskState.SUCCESS, timeout)


def wait_for_exit(consumer: ConsumerProcess, timeout: float, message: str) -> int:
    """Wait for a consumer process to exit and return its exit code; fail the
    test with ``message`` and the consumer's output if it is still running."""
    try:
        return consumer.wait_exit(timeout)
    except subprocess.TimeoutExpired:
        pass  # fail outside the handler: the exception shows the command line
    pytest.fail(
        f"{message} (still running after {timeout:.1f}s)\n{consumer.output_tail()}",
        pytrace=False,
    )


def run_async(awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable`` (an adapter's ``..._async`` call) in a fresh event loop."""

    async def wait() -> _T:
        return await awaitable

    return asyncio.run(wait())
