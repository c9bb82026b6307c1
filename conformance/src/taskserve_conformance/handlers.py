"""Task handlers run by the suite's consumer processes.

Consumers load them with ``--handlers taskserve_conformance.handlers:HANDLERS``;
each task name is the function's name. The batched handlers are apart, in
``BATCH_HANDLERS``, so that only consumers of the batching group (adapters
declaring ``batching``) register them. Every handler records its runs in the
journal (``start``, then ``end``, ``raise`` or ``interrupted``) with its task
id, attempt, arguments and process id, so tests count runs and duplicates
without asking the adapter under test. This module imports neither pytest nor
the suite: it is all a consumer process needs.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from taskserve import BatchItem, NonRetryableError, current_task
from taskserve.context import TaskContext
from taskserve.serve import task_handler
from taskserve_conformance.journal import gate_is_open, write_event

_F = TypeVar("_F", bound=Callable[..., Any])

BATCH_MAX_SIZE = 4
"""``batch_max_size`` of the batched handlers."""

BATCH_WAIT_S = 0.5
"""``batch_wait_timeout_s`` of the batched handlers that run what has arrived soon."""

PATIENT_BATCH_WAIT_S = 60.0
"""``batch_wait_timeout_s`` of the patient batched handlers: within a test their
batches start only once full (or when every task of one was cancelled)."""

GATE_MAX_WAIT_S = 300.0
"""A handler waiting for a gate gives up after this long, so nothing hangs forever."""


class HandlerFailure(RuntimeError):
    """The error the suite's failing handlers raise."""


def _record(event: str, task: TaskContext, **fields: Any) -> None:
    write_event(event, task_id=task.id, name=task.name, attempt=task.attempt, **fields)


def journaled(func: _F) -> _F:
    """Record each run of ``func`` in the journal; keeps its signature."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            task = current_task()
            _record("start", task, args=list(args), kwargs=kwargs)
            try:
                result = await func(*args, **kwargs)
            except asyncio.CancelledError:
                _record("interrupted", task)
                raise
            except BaseException as e:
                _record("raise", task, detail=type(e).__name__)
                raise
            _record("end", task, detail=result)
            return result

        return run_async  # type: ignore[return-value]

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        task = current_task()
        _record("start", task, args=list(args), kwargs=kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as e:
            _record("raise", task, detail=type(e).__name__)
            raise
        _record("end", task, detail=result)
        return result

    return run  # type: ignore[return-value]


def _record_batch_start(items: list[BatchItem]) -> None:
    batch = [item.task_id for item in items]
    for item in items:
        _record("start", item.task, args=list(item.args), kwargs=item.kwargs, detail=batch)


def _record_batch_end(items: list[BatchItem], results: Any) -> None:
    if not isinstance(results, list) or len(results) != len(items):
        return
    for item, result in zip(items, results, strict=True):
        if isinstance(result, BaseException):
            _record("raise", item.task, detail=type(result).__name__)
        else:
            _record("end", item.task, detail=result)


def _record_batch_error(items: list[BatchItem], error: BaseException) -> None:
    event = "interrupted" if isinstance(error, asyncio.CancelledError) else "raise"
    for item in items:
        _record(event, item.task, detail=type(error).__name__)


def journaled_batch(func: _F) -> _F:
    """Record each call of the batched handler ``func``: a ``start`` for each
    of its tasks (``detail``: the ids of the call's tasks, in order), then an
    ``end`` (``detail``: the task's result) or a ``raise`` for each task."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(items: list[BatchItem]) -> Any:
            _record_batch_start(items)
            try:
                results = await func(items)
            except BaseException as e:
                _record_batch_error(items, e)
                raise
            _record_batch_end(items, results)
            return results

        return run_async  # type: ignore[return-value]

    @functools.wraps(func)
    def run(items: list[BatchItem]) -> Any:
        _record_batch_start(items)
        try:
            results = func(items)
        except BaseException as e:
            _record_batch_error(items, e)
            raise
        _record_batch_end(items, results)
        return results

    return run  # type: ignore[return-value]


def _gate_timeout(gate: str) -> TimeoutError:
    return TimeoutError(f"gate '{gate}' was not opened within {GATE_MAX_WAIT_S}s")


def _wait_for_gate(gate: str) -> None:
    deadline = time.monotonic() + GATE_MAX_WAIT_S
    while not gate_is_open(gate):
        if time.monotonic() > deadline:
            raise _gate_timeout(gate)
        time.sleep(0.01)


@journaled
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the arguments it got."""
    return {"args": list(args), "kwargs": kwargs}


@journaled
async def async_echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """``echo`` as an ``async def`` handler."""
    await asyncio.sleep(0)
    return {"args": list(args), "kwargs": kwargs}


@journaled
def noop() -> None:
    """Do nothing."""


@journaled
def add(a: float, b: float) -> float:
    """Return ``a + b`` (two required arguments: a binding error is easy to cause)."""
    return a + b


@journaled
def always_fail(*args: Any, **kwargs: Any) -> None:
    """Raise :class:`HandlerFailure` on every attempt."""
    raise HandlerFailure(f"always_fail was told to fail (args={args!r}, kwargs={kwargs!r})")


@journaled
def fail_n_times(n: int, result: Any = None) -> Any:
    """Raise on attempts 1..n, then return ``result``."""
    attempt = current_task().attempt
    if attempt <= n:
        raise HandlerFailure(f"fail_n_times({n}) fails attempt {attempt}")
    return result


@journaled
def fail_until_gate(gate: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Raise until gate ``gate`` is open, then return the other arguments."""
    if not gate_is_open(gate):
        raise HandlerFailure(f"gate '{gate}' is closed")
    return {"args": list(args), "kwargs": kwargs}


@journaled
def non_retryable() -> None:
    """Raise :class:`taskserve.NonRetryableError`."""
    raise NonRetryableError("non_retryable refuses to be retried")


@journaled
def unserializable_result() -> set[int]:
    """Return a value JSON cannot carry."""
    return {1, 2, 3}


@journaled
def sleep(seconds: float) -> float:
    """Sleep, ignoring cancellation; return ``seconds``."""
    time.sleep(seconds)
    return seconds


@journaled
async def async_sleep(seconds: float) -> float:
    """Sleep asynchronously; a cancel interrupts it (journal: ``interrupted``)."""
    await asyncio.sleep(seconds)
    return seconds


@journaled
def cooperative_sleep(seconds: float) -> str:
    """Sleep while polling ``current_task().cancelled``; stop early once it is set."""
    task = current_task()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if task.cancelled:
            _record("saw_cancel", task)
            return "stopped early"
        time.sleep(0.01)
    return "slept"


@journaled
def wait_for_gate(gate: str, result: Any = None) -> Any:
    """Block until gate ``gate`` opens (ignoring cancellation); return ``result``."""
    _wait_for_gate(gate)
    return result


@journaled
async def async_wait_for_gate(gate: str, result: Any = None) -> Any:
    """``wait_for_gate`` as an ``async def`` handler."""
    deadline = time.monotonic() + GATE_MAX_WAIT_S
    while not gate_is_open(gate):
        if time.monotonic() > deadline:
            raise _gate_timeout(gate)
        await asyncio.sleep(0.01)
    return result


@journaled
def fail_after_gate(gate: str) -> None:
    """Block until gate ``gate`` opens (ignoring cancellation), then raise."""
    _wait_for_gate(gate)
    raise HandlerFailure(f"fail_after_gate('{gate}') fails after its gate opened")


@journaled
def report_pid(gate: str | None = None) -> int:
    """Wait for gate ``gate`` if given, then return the id of this process."""
    if gate is not None:
        _wait_for_gate(gate)
    return os.getpid()


@journaled
def progress_and_wait(
    gate: str, fraction: float, message: str | None = None, data: Any = None, result: Any = None
) -> Any:
    """Report progress once (journal: ``reported``), block until gate ``gate``
    opens, and return ``result``."""
    task = current_task()
    task.report_progress(fraction, message, data)
    _record("reported", task)
    _wait_for_gate(gate)
    return result


@journaled
async def async_progress_and_wait(
    gate: str, fraction: float, message: str | None = None, data: Any = None, result: Any = None
) -> Any:
    """``progress_and_wait`` as an ``async def`` handler."""
    task = current_task()
    task.report_progress(fraction, message, data)
    _record("reported", task)
    deadline = time.monotonic() + GATE_MAX_WAIT_S
    while not gate_is_open(gate):
        if time.monotonic() > deadline:
            raise _gate_timeout(gate)
        await asyncio.sleep(0.01)
    return result


@journaled
def progress_burst(count: int, spacing_s: float) -> int:
    """Report progress ``count`` times, ``spacing_s`` apart (fraction ``i/count``,
    message ``"i/count"``, data ``{"i": i}``); journal ``burst_start`` before the
    first report and ``burst_end`` after the last; return ``count``."""
    task = current_task()
    _record("burst_start", task)
    for i in range(1, count + 1):
        task.report_progress(i / count, f"{i}/{count}", {"i": i})
        time.sleep(spacing_s)
    _record("burst_end", task)
    return count


@journaled
def progress_outliving_the_run(gate: str, reports: int, until_cancelled: bool = False) -> str:
    """Report ``0.5, "in the handler"``; with ``until_cancelled`` wait (polling)
    until the task is cancelled. Then start a thread that, once gate ``gate``
    opens, reports ``reports`` times more through the same context
    (``1.0, "late"``, journal: ``late_report`` each) after this handler has
    returned, and return."""
    task = current_task()
    task.report_progress(0.5, "in the handler")
    _record("reported", task)
    if until_cancelled:
        deadline = time.monotonic() + GATE_MAX_WAIT_S
        while not task.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)

    def late() -> None:
        try:
            _wait_for_gate(gate)
        except TimeoutError:
            return
        for _ in range(reports):
            task.report_progress(1.0, "late", {"late": True})
            _record("late_report", task)
            time.sleep(0.02)

    threading.Thread(target=late, name="late-progress", daemon=True).start()
    return "stopped" if task.cancelled else "returned"


@journaled
def crash() -> None:
    """Kill this consumer process with SIGKILL."""
    os.kill(os.getpid(), signal.SIGKILL)


@journaled
def crash_once(result: Any = None) -> Any:
    """Kill this consumer on the first attempt; return ``result`` on later ones."""
    if current_task().attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return result


@task_handler(max_retries=3)
@journaled
def policy_fail() -> None:
    """Raise on every attempt; its own ``max_retries=3`` overrides the config."""
    raise HandlerFailure("policy_fail fails every attempt")


@task_handler(max_retries=0)
@journaled
def policy_no_retry() -> None:
    """Raise on every attempt; its own ``max_retries=0`` allows no retry."""
    raise HandlerFailure("policy_no_retry fails its only attempt")


@task_handler(non_retryable=(ValueError, KeyError))
@journaled
def policy_non_retryable(kind: str) -> None:
    """Raise ``ValueError`` or ``KeyError`` (listed as non-retryable) or else
    :class:`HandlerFailure`, as ``kind`` names."""
    errors: dict[str, type[Exception]] = {"ValueError": ValueError, "KeyError": KeyError}
    raise errors.get(kind, HandlerFailure)(f"policy_non_retryable raises {kind}")


@task_handler(max_retries=2, retry_backoff_s=0.4, retry_backoff_max_s=0.6)
@journaled
def policy_backoff() -> None:
    """Raise on every attempt, retried after its own backoff (0.4 s, then the cap 0.6 s)."""
    raise HandlerFailure("policy_backoff fails every attempt")


@task_handler(max_retries=0)
@journaled
def policy_crash() -> None:
    """Kill this consumer with SIGKILL; its own ``max_retries=0`` allows one delivery."""
    os.kill(os.getpid(), signal.SIGKILL)


@task_handler(max_retries=1)
@journaled
def policy_crash_once(result: Any = None) -> Any:
    """Kill this consumer on the first attempt; return ``result`` on the retry
    its own ``max_retries=1`` allows."""
    if current_task().attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return result


def _busy_loop(seconds: float) -> float:
    """Run Python code (short sleeps) for ``seconds``: interruptible at any time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return seconds


@journaled
def busy_loop(seconds: float) -> float:
    """Loop in Python code for ``seconds`` under the config's time limit; a time
    limit ends it early (journal: ``raise`` with ``TaskTimeLimitExceeded``)."""
    return _busy_loop(seconds)


@journaled
async def async_busy_loop(seconds: float) -> float:
    """Await ``asyncio.sleep`` for ``seconds``; a time limit cancels it (journal:
    ``interrupted``)."""
    await asyncio.sleep(seconds)
    return seconds


@task_handler(time_limit_s=0.5)
@journaled
def short_limit_loop(seconds: float) -> float:
    """``busy_loop`` with its own ``time_limit_s=0.5`` over the config's."""
    return _busy_loop(seconds)


@task_handler(time_limit_s=10.0)
@journaled
def long_limit_loop(seconds: float) -> float:
    """``busy_loop`` with its own ``time_limit_s=10`` over the config's."""
    return _busy_loop(seconds)


@task_handler(max_retries=1, time_limit_s=0.5)
@journaled
def outlive_time_limit(seconds: float) -> int:
    """On the first attempt block in one C call (``time.sleep(seconds)``), which
    the interruption of its ``time_limit_s=0.5`` cannot reach; on later attempts
    return this process's id at once."""
    if current_task().attempt == 1:
        time.sleep(seconds)
    return os.getpid()


HANDLERS: dict[str, Callable[..., Any]] = {
    handler.__name__: handler
    for handler in (
        echo,
        async_echo,
        noop,
        add,
        always_fail,
        fail_n_times,
        fail_until_gate,
        non_retryable,
        unserializable_result,
        sleep,
        async_sleep,
        cooperative_sleep,
        wait_for_gate,
        async_wait_for_gate,
        fail_after_gate,
        report_pid,
        progress_and_wait,
        async_progress_and_wait,
        progress_burst,
        progress_outliving_the_run,
        crash,
        crash_once,
        policy_fail,
        policy_no_retry,
        policy_non_retryable,
        policy_backoff,
        policy_crash,
        policy_crash_once,
        busy_loop,
        async_busy_loop,
        short_limit_loop,
        long_limit_loop,
        outlive_time_limit,
    )
}
"""Task name -> handler, as consumer processes register them."""


def _echo_item(item: BatchItem) -> Any:
    """``echo``'s result for one item, or a :class:`HandlerFailure` instance
    while its attempt is at most its ``fail_attempts`` keyword argument."""
    if item.kwargs.get("fail_attempts", 0) >= item.task.attempt:
        return HandlerFailure(
            f"batch item of task {item.task_id} fails attempt {item.task.attempt}"
        )
    return {"args": list(item.args), "kwargs": item.kwargs}


@task_handler(batch_max_size=BATCH_MAX_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
@journaled_batch
def batch_echo(items: list[BatchItem]) -> list[Any]:
    """Return for each item what ``echo`` would, or fail that item alone (a
    :class:`HandlerFailure` instance in its slot) while its attempt is at most
    its ``fail_attempts`` keyword argument."""
    return [_echo_item(item) for item in items]


@task_handler(batch_max_size=BATCH_MAX_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
@journaled_batch
async def async_batch_echo(items: list[BatchItem]) -> list[Any]:
    """``batch_echo`` as an ``async def`` handler."""
    await asyncio.sleep(0)
    return [_echo_item(item) for item in items]


@task_handler(batch_max_size=BATCH_MAX_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
@journaled_batch
def batch_always_fail(items: list[BatchItem]) -> list[Any]:
    """Raise :class:`HandlerFailure` on every call: every task of the batch fails."""
    raise HandlerFailure(f"batch_always_fail fails its batch of {len(items)} tasks")


@task_handler(batch_max_size=BATCH_MAX_SIZE, batch_wait_timeout_s=PATIENT_BATCH_WAIT_S)
@journaled_batch
def batch_patient_echo(items: list[BatchItem]) -> list[Any]:
    """``batch_echo`` whose batches start only once full."""
    return [_echo_item(item) for item in items]


@task_handler(batch_max_size=BATCH_MAX_SIZE, batch_wait_timeout_s=PATIENT_BATCH_WAIT_S)
@journaled_batch
def batch_wait_for_gate(items: list[BatchItem]) -> list[Any]:
    """Once full, block until the gate named by the first item's first argument
    opens, journaling ``saw_cancel`` for each task cancelled meanwhile; then
    return for each item what ``echo`` would."""
    gate = str(items[0].args[0])
    deadline = time.monotonic() + GATE_MAX_WAIT_S
    seen: set[str] = set()
    while not gate_is_open(gate):
        for item in items:
            if item.task.cancelled and item.task_id not in seen:
                seen.add(item.task_id)
                _record("saw_cancel", item.task)
        if time.monotonic() > deadline:
            raise _gate_timeout(gate)
        time.sleep(0.01)
    return [_echo_item(item) for item in items]


BATCH_HANDLERS: dict[str, Callable[..., Any]] = {
    handler.__name__: handler
    for handler in (
        batch_echo,
        async_batch_echo,
        batch_always_fail,
        batch_patient_echo,
        batch_wait_for_gate,
    )
}
"""Task name -> batched handler (``batch_max_size`` :data:`BATCH_MAX_SIZE`), as the
batching group's consumer processes register them."""
