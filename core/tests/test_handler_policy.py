"""Per-handler retry policies: ``@task_handler`` options, checked when applied,
resolved against the TaskProcessorConfig, and honoured by the runner and by a
real sqlite store (crashed deliveries included). The conformance group
``HandlerPolicyTests`` checks the same promises on every adapter."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskserve import (
    NOT_GIVEN,
    ConfigError,
    DeadLetter,
    DeliveryRecorder,
    HandlerPolicy,
    NonRetryableError,
    Outcome,
    RetryPolicy,
    TaskError,
    TaskMessage,
    TaskProcessorConfig,
    TaskRunner,
    TaskState,
    current_task,
    hookimpl,
    instantiate_adapter_from_config,
)
from taskserve.config import UNLIMITED_ATTEMPTS
from taskserve.hooks import TaskEvent
from taskserve.plugins import get_plugin_manager
from taskserve.policy import handler_policy
from taskserve.retry import retry_delay_s
from taskserve.serialization import build_message
from taskserve.serve import get_consumer, task_consumer, task_handler


def _config(**fields: Any) -> TaskProcessorConfig:
    base: dict[str, Any] = {
        "queue_name": "q",
        "max_retries": 2,
        "retry_backoff_s": 0.5,
        "retry_backoff_max_s": 10.0,
        "retry_jitter": False,
        "failed_task_queue_name": "failed",
    }
    return TaskProcessorConfig(**(base | fields))


def _message(name: str, *args: Any) -> TaskMessage:
    return build_message(
        task_name=name, args=args, kwargs={}, queue_name="q", max_payload_bytes=10_000
    )


class Recorder(DeliveryRecorder):
    """Keeps every step of one delivery in a list."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Any]] = []

    def mark_started(self, message: TaskMessage, attempt: int) -> bool:
        self.steps.append(("started", attempt))
        return True

    def record_success(self, message: TaskMessage, result: Any, attempt: int) -> None:
        self.steps.append(("success", result))

    def record_retry(
        self, message: TaskMessage, error: TaskError, attempt: int, delay_s: float
    ) -> None:
        self.steps.append(("retry", delay_s))

    def record_failure(
        self, message: TaskMessage, error: TaskError, attempt: int, dead_letter: DeadLetter | None
    ) -> None:
        self.steps.append(("failure", error))

    def record_cancelled(self, message: TaskMessage, attempt: int) -> None:
        self.steps.append(("cancelled", attempt))

    def record_unprocessable(
        self, message: TaskMessage | None, error: TaskError, dead_letter: DeadLetter | None
    ) -> None:
        self.steps.append(("unprocessable", error))


class Events:
    """A hook plugin collecting the ``retried`` and ``failed`` events."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, TaskEvent]] = []

    @hookimpl
    def taskserve_task_retried(self, event: TaskEvent) -> None:
        self.seen.append(("retried", event))

    @hookimpl
    def taskserve_task_failed(self, event: TaskEvent) -> None:
        self.seen.append(("failed", event))


@pytest.fixture
def events() -> Iterator[Events]:
    collector = Events()
    manager = get_plugin_manager()
    manager.register(collector)
    yield collector
    manager.unregister(collector)


# -- the decorator -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"max_retries": "3"}, "max_retries"),
        ({"retry_backoff_s": -0.1}, "retry_backoff_s"),
        ({"retry_backoff_s": float("inf")}, "retry_backoff_s"),
        ({"retry_backoff_s": "1"}, "retry_backoff_s"),
        ({"retry_backoff_max_s": float("nan")}, "retry_backoff_max_s"),
        ({"retry_backoff_s": 2.0, "retry_backoff_max_s": 1.0}, "retry_backoff_max_s"),
        ({"non_retryable": (ValueError, int)}, "non_retryable"),
        ({"non_retryable": ValueError("an instance")}, "non_retryable"),
        ({"non_retryable": "ValueError"}, "non_retryable"),
        ({"non_retryable": (ValueError, "KeyError")}, "non_retryable"),
    ],
)
def test_bad_options_are_refused_when_the_decorator_is_applied(
    options: dict[str, Any], argument: str
) -> None:
    with pytest.raises(ConfigError, match=argument):
        task_handler(name="t", **options)


def test_policy_is_stored_on_plain_functions_methods_and_wrappers() -> None:
    @task_handler(name="transcribe", max_retries=5, retry_backoff_s=2.0, non_retryable=KeyError)
    def transcribe(url: str) -> str:
        return url

    class Consumer:
        @task_handler(max_retries=None)
        def method(self) -> None: ...

    @functools.wraps(transcribe)
    def wrapper(*args: Any) -> Any:
        return transcribe(*args)

    assert handler_policy(transcribe) == HandlerPolicy(
        max_retries=5, retry_backoff_s=2.0, non_retryable=(KeyError,)
    )
    assert handler_policy(wrapper) == handler_policy(transcribe)
    bound = Consumer().method
    assert handler_policy(bound).max_retries is None
    assert handler_policy(bound) is handler_policy(Consumer.method)


def test_handlers_without_options_have_an_empty_policy() -> None:
    @task_handler
    def bare() -> None: ...

    def undecorated() -> None: ...

    empty = HandlerPolicy()
    assert handler_policy(bare) == empty == handler_policy(undecorated)
    assert empty.max_retries is NOT_GIVEN and empty.non_retryable == ()


# -- resolution ----------------------------------------------------------------------
def test_options_not_given_fall_back_to_the_config() -> None:
    config = _config(max_retries=4, retry_backoff_s=0.25, retry_backoff_max_s=3.0)
    assert HandlerPolicy().resolve(config) == RetryPolicy.from_config(config)
    assert RetryPolicy.from_config(config) == RetryPolicy(
        max_retries=4, retry_backoff_s=0.25, retry_backoff_max_s=3.0, retry_jitter=False
    )
    resolved = HandlerPolicy(max_retries=0, non_retryable=(KeyError,)).resolve(config)
    assert (resolved.max_retries, resolved.max_attempts) == (0, 1)
    assert (resolved.retry_backoff_s, resolved.retry_backoff_max_s) == (0.25, 3.0)
    assert resolved.non_retryable == (KeyError,)


def test_max_retries_none_retries_without_limit() -> None:
    assert HandlerPolicy(max_retries=None).resolve(_config()).max_attempts == UNLIMITED_ATTEMPTS
    assert HandlerPolicy().resolve(_config(max_retries=None)).max_attempts == UNLIMITED_ATTEMPTS
    assert HandlerPolicy(max_retries=3).resolve(_config(max_retries=None)).max_attempts == 4


def test_the_delay_formula_takes_the_policy_values() -> None:
    config = _config(retry_backoff_s=0.5, retry_backoff_max_s=10.0)
    policy = HandlerPolicy(retry_backoff_s=2.0, retry_backoff_max_s=5.0).resolve(config)
    assert [retry_delay_s(policy, attempt) for attempt in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, 5.0]
    jittered = HandlerPolicy(retry_backoff_s=2.0).resolve(
        config.model_copy(update={"retry_jitter": True})
    )
    assert all(1.0 <= retry_delay_s(jittered, 1) <= 2.0 for _ in range(50))


def test_a_backoff_above_the_configs_cap_raises_that_cap() -> None:
    policy = HandlerPolicy(retry_backoff_s=30.0).resolve(_config(retry_backoff_max_s=10.0))
    assert (policy.retry_backoff_s, policy.retry_backoff_max_s) == (30.0, 30.0)
    assert retry_delay_s(policy, 1) == 30.0


def test_non_retryable_types_match_subclasses_and_keep_the_builtin_ones() -> None:
    policy = HandlerPolicy(non_retryable=(ValueError, KeyError)).resolve(_config())
    assert not policy.may_retry(ValueError())
    assert not policy.may_retry(UnicodeDecodeError("utf-8", b"", 0, 1, "bad"))
    assert not policy.may_retry(KeyError("k"))
    assert not policy.may_retry(NonRetryableError("never"))
    assert policy.may_retry(RuntimeError("again"))
    assert RetryPolicy.from_config(_config()).may_retry(ValueError())


# -- the runner ----------------------------------------------------------------------
class Flaky(RuntimeError):
    pass


def _runner(config: TaskProcessorConfig, *handlers: Callable[..., Any]) -> TaskRunner:
    return TaskRunner(config, "test", {h.__name__: h for h in handlers})


@task_handler(max_retries=3, retry_backoff_s=1.5, retry_backoff_max_s=4.0)
def patient() -> None:
    raise Flaky("patient fails")


@task_handler(max_retries=0)
def hasty() -> None:
    raise Flaky("hasty fails")


@task_handler(non_retryable=(ValueError, KeyError))
def picky(kind: str) -> None:
    raise {"value": ValueError, "key": KeyError}.get(kind, Flaky)(kind)


def plain() -> None:
    raise Flaky("plain fails")


def test_runner_retries_each_name_by_its_policy(events: Events) -> None:
    runner = _runner(_config(max_retries=0), patient, hasty, plain)
    try:
        steps = [runner.process(_message("patient"), n, Recorder()) for n in (1, 2, 3)]
        assert steps == [Outcome.RETRYING] * 3
        assert runner.process(_message("patient"), 4, Recorder()) is Outcome.FAILED
        assert runner.process(_message("plain"), 1, Recorder()) is Outcome.FAILED
    finally:
        runner.close()
    retried = [event for kind, event in events.seen if kind == "retried"]
    assert [event.retry_delay_s for event in retried] == [1.5, 3.0, 4.0]
    assert [(kind, event.task_name, event.attempt) for kind, event in events.seen][-2:] == [
        ("failed", "patient", 4),
        ("failed", "plain", 1),
    ]


def test_runner_records_the_policy_delay(events: Events) -> None:
    runner = _runner(_config(), patient)
    try:
        recorder = Recorder()
        assert runner.process(_message("patient"), 2, recorder) is Outcome.RETRYING
        assert recorder.steps[-1] == ("retry", 3.0)
    finally:
        runner.close()


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [("value", Outcome.FAILED), ("key", Outcome.FAILED), ("other", Outcome.RETRYING)],
)
def test_non_retryable_types_fail_at_once(events: Events, kind: str, outcome: Outcome) -> None:
    runner = _runner(_config(max_retries=2), picky)
    try:
        recorder = Recorder()
        assert runner.process(_message("picky", kind), 1, recorder) is outcome
    finally:
        runner.close()
    assert [name for name, _ in events.seen] == [
        "failed" if outcome is Outcome.FAILED else "retried"
    ]
    if outcome is Outcome.FAILED:
        assert recorder.steps[-1][1].type.endswith("Error")


def test_crashed_deliveries_spend_the_budget_of_the_name() -> None:
    runner = _runner(_config(max_retries=2), hasty, patient, plain)
    try:
        assert runner.attempt_ceiling == 4
        recorder = Recorder()
        assert runner.process(_message("hasty"), 2, recorder) is Outcome.FAILED
        assert recorder.steps[0][0] == "failure"
        assert recorder.steps[0][1].type == "taskserve.errors.ConsumerLost"
        assert "budget of 1 attempts" in recorder.steps[0][1].message
        assert runner.process(_message("patient"), 4, Recorder()) is Outcome.FAILED
        assert runner.process(_message("plain"), 4, Recorder()) is Outcome.FAILED
        recorder = Recorder()
        assert runner.process(_message("patient"), 5, recorder) is Outcome.FAILED
        assert recorder.steps[0][1].type == "taskserve.errors.ConsumerLost"
    finally:
        runner.close()
    assert _runner(_config(max_retries=2)).attempt_ceiling == 3
    assert _runner(_config(max_retries=5), hasty).attempt_ceiling == 1


# -- a real store ----------------------------------------------------------------------
@pytest.fixture
def sqlite_config(tmp_path: Path) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name="policy-tests",
        adapter_config={"path": str(tmp_path / "tasks.db"), "poll_interval_s": 0.01},
        max_retries=0,
        retry_backoff_s=0.01,
        retry_jitter=False,
        lease_s=0.2,
    )


def _wait_for(producer: Any, task_id: str, state: TaskState, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = producer.get_task_status_sync(task_id)
        if result.status is state:
            return result
        assert time.monotonic() < deadline, result
        time.sleep(0.02)


def test_consumer_class_methods_carry_their_policy(sqlite_config: TaskProcessorConfig) -> None:
    runs: list[str] = []

    @task_consumer(task_processor_config=sqlite_config)
    class Consumer:
        @task_handler(name="transcribe", max_retries=2, non_retryable=(ValueError,))
        def transcribe(self, fail_with: str) -> str:
            runs.append(f"{fail_with}:{current_task().attempt}")
            if current_task().attempt <= 2:
                raise ValueError(fail_with) if fail_with == "value" else Flaky(fail_with)
            return "done"

    instance = Consumer()
    runtime = get_consumer(instance)
    producer = instantiate_adapter_from_config(sqlite_config)
    try:
        done = producer.enqueue_task_sync("transcribe", ["flaky"])
        refused = producer.enqueue_task_sync("transcribe", ["value"])
        assert _wait_for(producer, done.id, TaskState.SUCCESS).attempts == 3
        failed = _wait_for(producer, refused.id, TaskState.FAILURE)
        assert failed.attempts == 1 and failed.error is not None
        assert failed.error.type == "ValueError"
        assert sorted(runs) == ["flaky:1", "flaky:2", "flaky:3", "value:1"]
    finally:
        runtime.stop()
        producer.shutdown()


def _abandon(producer: Any, task_id: str, times: int) -> None:
    """Claim the task ``times`` times as a consumer that dies at once (its lease runs out)."""
    store = producer.store
    for _ in range(times):
        deadline = time.monotonic() + 10
        while (claimed := store.claim("dead-consumer", 0.05, UNLIMITED_ATTEMPTS)) is None:
            assert time.monotonic() < deadline, "the abandoned task never came back"
            time.sleep(0.01)
        assert claimed.task_id == task_id and claimed.begun.started


def _consume(config: TaskProcessorConfig, handler: Callable[..., Any]) -> Any:
    adapter = instantiate_adapter_from_config(config)
    adapter.register_task_handle(handler)
    adapter.start_consumer()
    return adapter


def test_a_lower_budget_holds_for_crashed_deliveries(sqlite_config: TaskProcessorConfig) -> None:
    runs: list[int] = []

    @task_handler(max_retries=0)
    def fragile() -> None:
        runs.append(current_task().attempt)

    config = sqlite_config.model_copy(update={"max_retries": 2})
    producer = instantiate_adapter_from_config(config)
    task = producer.enqueue_task_sync("fragile")
    _abandon(producer, task.id, 1)
    consumer = _consume(config, fragile)
    try:
        failed = _wait_for(producer, task.id, TaskState.FAILURE)
        assert failed.error is not None and failed.error.type.endswith("ConsumerLost")
        assert failed.attempts == 1 and runs == []
    finally:
        consumer.shutdown()
        producer.shutdown()


def test_a_higher_budget_is_not_cut_short_by_the_store(sqlite_config: TaskProcessorConfig) -> None:
    @task_handler(max_retries=2)
    def sturdy() -> int:
        return current_task().attempt

    producer = instantiate_adapter_from_config(sqlite_config)
    task = producer.enqueue_task_sync("sturdy")
    _abandon(producer, task.id, 2)
    consumer = _consume(sqlite_config, sturdy)
    try:
        done = _wait_for(producer, task.id, TaskState.SUCCESS)
        assert done.result == 3 and done.attempts == 3
    finally:
        consumer.shutdown()
        producer.shutdown()
