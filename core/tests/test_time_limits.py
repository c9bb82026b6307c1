"""Time limits (SPEC §11.3): the config's ``task_time_limit_s`` and a handler's
``time_limit_s``, enforced by the consumer's lease keeper on a real sqlite
store; a handler that outlives its limit by the grace makes its consumer
unhealthy and its task runs again on another consumer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskserve import (
    ConfigError,
    TaskProcessorAdapter,
    TaskProcessorConfig,
    TaskState,
    TaskTimeLimitExceeded,
    current_task,
    instantiate_adapter_from_config,
)
from taskserve.policy import NOT_GIVEN, HandlerPolicy, handler_policy
from taskserve.serve import task_handler

WAIT_S = 15.0


# -- validation ----------------------------------------------------------------------
def test_config_defaults_and_accepted_values() -> None:
    config = TaskProcessorConfig(queue_name="q")
    assert config.task_time_limit_s is None
    assert config.task_time_limit_grace_s > 0
    limited = TaskProcessorConfig(queue_name="q", task_time_limit_s=2, task_time_limit_grace_s=1)
    assert limited.task_time_limit_s == 2.0 and limited.task_time_limit_grace_s == 1.0


@pytest.mark.parametrize(
    "fields",
    [
        {"task_time_limit_s": 0},
        {"task_time_limit_s": -1.0},
        {"task_time_limit_s": float("inf")},
        {"task_time_limit_s": float("nan")},
        {"task_time_limit_s": "soon"},
        {"task_time_limit_grace_s": 0},
        {"task_time_limit_grace_s": float("inf")},
    ],
)
def test_config_refuses_bad_limits(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(fields))):
        TaskProcessorConfig(queue_name="q", **fields)


@pytest.mark.parametrize("value", [0, -0.5, float("inf"), float("nan"), True, "1", [1]])
def test_handler_refuses_bad_limits(value: Any) -> None:
    with pytest.raises(ConfigError, match="time_limit_s"):
        task_handler(time_limit_s=value)


def test_handler_limit_overrides_the_config() -> None:
    config = TaskProcessorConfig(queue_name="q", task_time_limit_s=10)

    @task_handler(time_limit_s=2)
    def short() -> None: ...

    @task_handler(time_limit_s=None)
    def unlimited() -> None: ...

    @task_handler(max_retries=1)
    def default() -> None: ...

    assert handler_policy(short).time_limit(config) == 2.0
    assert handler_policy(unlimited).time_limit(config) is None
    assert handler_policy(default).time_limit(config) == 10.0
    assert HandlerPolicy().time_limit_s is NOT_GIVEN
    assert HandlerPolicy(time_limit_s=1).time_limit_s == 1.0


# -- real runs on sqlite ------------------------------------------------------------
@pytest.fixture
def sqlite_config(tmp_path: Path) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name="time-limits",
        adapter_config={"path": str(tmp_path / "tasks.db"), "poll_interval_s": 0.01},
        max_retries=0,
        retry_backoff_s=0.01,
        retry_jitter=False,
        lease_s=0.6,
        failed_task_queue_name="failed",
        task_time_limit_s=0.3,
        task_time_limit_grace_s=0.5,
    )


@pytest.fixture
def adapters() -> Iterator[list[TaskProcessorAdapter]]:
    made: list[TaskProcessorAdapter] = []
    yield made
    for adapter in made:
        adapter.shutdown()


def _producer(config: TaskProcessorConfig, made: list[TaskProcessorAdapter]) -> Any:
    adapter = instantiate_adapter_from_config(config)
    made.append(adapter)
    return adapter


def _consume(
    config: TaskProcessorConfig, made: list[TaskProcessorAdapter], *handlers: Callable[..., Any]
) -> Any:
    adapter = _producer(config, made)
    for handler in handlers:
        adapter.register_task_handle(handler)
    adapter.start_consumer()
    return adapter


def _wait_until(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def _wait_for(producer: Any, task_id: str, state: TaskState) -> Any:
    def reached() -> Any:
        result = producer.get_task_status_sync(task_id)
        return result if result.status is state else None

    return _wait_until(reached, f"task {task_id} to be {state.value}")


def test_sync_handler_is_interrupted_then_retried_then_failed(
    sqlite_config: TaskProcessorConfig, adapters: list[TaskProcessorAdapter]
) -> None:
    runs: list[tuple[int, float, str]] = []

    @task_handler(max_retries=1)
    def crunch() -> None:
        started = time.monotonic()
        try:
            while time.monotonic() - started < 30:
                time.sleep(0.01)
        except BaseException as e:
            runs.append((current_task().attempt, time.monotonic() - started, type(e).__name__))
            raise

    config = sqlite_config
    consumer = _consume(config, adapters, crunch)
    task = consumer.enqueue_task_sync("crunch")
    failed = _wait_for(consumer, task.id, TaskState.FAILURE)
    assert failed.attempts == 2
    assert failed.error is not None and failed.error.type.endswith("TaskTimeLimitExceeded")
    assert "time limit" in failed.error.message
    assert [(attempt, name) for attempt, _, name in runs] == [
        (1, "TaskTimeLimitExceeded"),
        (2, "TaskTimeLimitExceeded"),
    ]
    assert all(ran < 5 for _, ran, _ in runs), runs
    (dead,) = consumer.list_dead_letters_sync()
    assert dead.task_id == task.id and dead.attempts == 2
    assert consumer.health_check_sync().consumer_running is True


def test_async_handler_is_cancelled_and_a_retry_may_succeed(
    sqlite_config: TaskProcessorConfig, adapters: list[TaskProcessorAdapter]
) -> None:
    cancelled: list[int] = []

    @task_handler(max_retries=2, time_limit_s=0.2)
    async def fetch() -> int:
        attempt = current_task().attempt
        try:
            await asyncio.sleep(30 if attempt == 1 else 0)
        except asyncio.CancelledError:
            cancelled.append(attempt)
            raise
        return attempt

    config = sqlite_config.model_copy(update={"task_time_limit_s": None})
    consumer = _consume(config, adapters, fetch)
    task = consumer.enqueue_task_sync("fetch")
    done = _wait_for(consumer, task.id, TaskState.SUCCESS)
    assert done.result == 2 and done.attempts == 2
    assert cancelled == [1]


def test_handler_limit_overrides_the_config_limit(
    sqlite_config: TaskProcessorConfig, adapters: list[TaskProcessorAdapter]
) -> None:
    @task_handler(time_limit_s=5)
    def patient(seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    def hasty(seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    consumer = _consume(sqlite_config, adapters, patient, hasty)
    slow = consumer.enqueue_task_sync("patient", [0.6])
    cut = consumer.enqueue_task_sync("hasty", [0.02])
    assert _wait_for(consumer, slow.id, TaskState.SUCCESS).result == "done"
    assert _wait_for(consumer, cut.id, TaskState.SUCCESS).result == "done"
    over = consumer.enqueue_task_sync("hasty", [0.6])
    failed = _wait_for(consumer, over.id, TaskState.FAILURE)
    assert failed.error is not None and failed.error.type.endswith("TaskTimeLimitExceeded")


def test_a_cancel_still_ends_cancelled(
    sqlite_config: TaskProcessorConfig, adapters: list[TaskProcessorAdapter]
) -> None:
    started = threading.Event()

    @task_handler(time_limit_s=10)
    async def wait() -> None:
        started.set()
        await asyncio.sleep(30)

    consumer = _consume(sqlite_config, adapters, wait)
    task = consumer.enqueue_task_sync("wait")
    assert started.wait(WAIT_S)
    consumer.cancel_task_sync(task.id)
    _wait_for(consumer, task.id, TaskState.CANCELLED)


def test_a_handler_outliving_its_limit_makes_the_consumer_unhealthy(
    sqlite_config: TaskProcessorConfig, adapters: list[TaskProcessorAdapter]
) -> None:
    release = threading.Event()
    runs: list[tuple[int, int]] = []

    @task_handler(max_retries=1)
    def stubborn() -> int:
        attempt = current_task().attempt
        runs.append((attempt, threading.get_ident()))
        if attempt == 1:
            release.wait(30)  # one C-level wait: the interruption cannot land in it
        return attempt

    first = _consume(sqlite_config, adapters, stubborn)
    task = first.enqueue_task_sync("stubborn")
    try:
        _wait_until(
            lambda: first.health_check_sync().consumer_running is False,
            "the first consumer to report itself not running",
        )
        report = first.health_check_sync()
        assert not report.healthy and "time limit" in report.detail
        assert first.consumer_overran
        second = _consume(sqlite_config, adapters, stubborn)
        done = _wait_for(second, task.id, TaskState.SUCCESS)
        assert done.result == 2 and done.attempts == 2
        assert second.health_check_sync().consumer_running is True
    finally:
        release.set()
    # The abandoned run ends late: it records nothing over the second one's result.
    _wait_until(lambda: first.get_metrics_sync().local_in_flight == 0, "the first run's end")
    assert [attempt for attempt, _ in runs] == [1, 2]
    first.stop_consumer(timeout=WAIT_S)
    assert first.get_task_status_sync(task.id).result == 2


def test_a_handler_swallowing_the_interruption_is_abandoned(
    sqlite_config: TaskProcessorConfig, adapters: list[TaskProcessorAdapter]
) -> None:
    stop = threading.Event()
    swallowed: list[str] = []

    @task_handler(max_retries=1)
    def deaf() -> str:
        if current_task().attempt > 1:
            return "second"
        while not stop.is_set():
            try:
                time.sleep(0.01)
            except TaskTimeLimitExceeded as e:
                swallowed.append(type(e).__name__)
        return "first"

    first = _consume(sqlite_config, adapters, deaf)
    task = first.enqueue_task_sync("deaf")
    try:
        _wait_until(lambda: not first.health_check_sync().healthy, "the consumer to be unhealthy")
        assert swallowed == ["TaskTimeLimitExceeded"]
        second = _consume(sqlite_config, adapters, deaf)
        assert _wait_for(second, task.id, TaskState.SUCCESS).result == "second"
    finally:
        stop.set()
    _wait_until(lambda: first.get_metrics_sync().local_in_flight == 0, "the first run's end")
    first.stop_consumer(timeout=WAIT_S)
    assert first.get_task_status_sync(task.id).result == "second"
