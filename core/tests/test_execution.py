"""TaskRunner decisions, checked with an in-memory recorder (core logic only;
the conformance suite checks the same promises end to end on real brokers)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from taskserve import (
    DeadLetter,
    DeliveryRecorder,
    NonRetryableError,
    Outcome,
    TaskError,
    TaskMessage,
    TaskProcessorConfig,
    TaskRunner,
    current_task,
    hookimpl,
)
from taskserve.hooks import TaskEvent
from taskserve.plugins import get_plugin_manager
from taskserve.serialization import build_message


class Recorder(DeliveryRecorder):
    def __init__(self, startable: bool = True) -> None:
        self.startable = startable
        self.steps: list[tuple[str, Any]] = []

    def mark_started(self, message: TaskMessage, attempt: int) -> bool:
        self.steps.append(("started", attempt))
        return self.startable

    def record_success(self, message: TaskMessage, result: Any, attempt: int) -> None:
        self.steps.append(("success", result))

    def record_retry(
        self, message: TaskMessage, error: TaskError, attempt: int, delay_s: float
    ) -> None:
        self.steps.append(("retry", delay_s))

    def record_failure(
        self, message: TaskMessage, error: TaskError, attempt: int, dead_letter: DeadLetter | None
    ) -> None:
        self.steps.append(("failure", (error, dead_letter)))

    def record_cancelled(self, message: TaskMessage, attempt: int) -> None:
        self.steps.append(("cancelled", attempt))

    def record_unprocessable(
        self, message: TaskMessage | None, error: TaskError, dead_letter: DeadLetter | None
    ) -> None:
        self.steps.append(("unprocessable", (error, dead_letter)))


def _config(**fields: Any) -> TaskProcessorConfig:
    base: dict[str, Any] = {
        "queue_name": "q",
        "max_retries": 2,
        "retry_backoff_s": 0.5,
        "retry_jitter": False,
        "failed_task_queue_name": "failed",
        "unprocessable_task_queue_name": "bad",
    }
    return TaskProcessorConfig(**(base | fields))


def _message(name: str, *args: Any, **kwargs: Any) -> TaskMessage:
    return build_message(
        task_name=name, args=args, kwargs=kwargs, queue_name="q", max_payload_bytes=10_000
    )


def add(a: int, b: int) -> int:
    return a + b


def boom() -> None:
    raise ValueError("boom")


def give_up() -> None:
    raise NonRetryableError("no point")


def returns_object() -> object:
    return object()


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


HANDLERS = {f.__name__: f for f in (add, boom, give_up, returns_object, async_add)}


@pytest.fixture
def runner() -> Any:
    runner = TaskRunner(_config(), "test", HANDLERS)
    yield runner
    runner.close()


def test_success_sync_and_async(runner: TaskRunner) -> None:
    for name in ("add", "async_add"):
        recorder = Recorder()
        assert runner.process(_message(name, 2, 3), 1, recorder) is Outcome.SUCCEEDED
        assert recorder.steps == [("started", 1), ("success", 5)]


def test_retry_then_failure_with_exact_dead_letter(runner: TaskRunner) -> None:
    message = _message("boom")
    delays = []
    for attempt in (1, 2):
        recorder = Recorder()
        assert runner.process(message, attempt, recorder) is Outcome.RETRYING
        delays.append(recorder.steps[-1][1])
    assert delays == [0.5, 1.0]
    recorder = Recorder()
    assert runner.process(message, 3, recorder) is Outcome.FAILED
    error, dead_letter = recorder.steps[-1][1]
    assert error.type == "ValueError" and error.message == "boom" and "Traceback" in error.traceback
    assert dead_letter.task_id == message.id and dead_letter.attempts == 3
    assert (
        dead_letter.queue_name == "failed" and dead_letter.args == [] and dead_letter.kwargs == {}
    )


@pytest.mark.parametrize(
    ("message", "error_type"),
    [
        (_message("add", 1), "taskserve.errors.ArgumentBindingError"),
        (_message("add", 1, 2, 3), "taskserve.errors.ArgumentBindingError"),
        (_message("give_up"), "taskserve.errors.NonRetryableError"),
        (_message("returns_object"), "taskserve.errors.PayloadError"),
    ],
)
def test_not_retried(runner: TaskRunner, message: TaskMessage, error_type: str) -> None:
    recorder = Recorder()
    assert runner.process(message, 1, recorder) is Outcome.FAILED
    assert recorder.steps[-1][1][0].type == error_type


def test_unknown_name_and_undecodable_bytes_are_unprocessable(runner: TaskRunner) -> None:
    recorder = Recorder()
    assert runner.process(_message("nope", 1), 1, recorder) is Outcome.UNPROCESSABLE
    error, dead_letter = recorder.steps[-1][1]
    assert "no handler for task 'nope'" in error.message and dead_letter.args == [1]
    recorder = Recorder()
    assert runner.process(b"\x00garbage", 1, recorder) is Outcome.UNPROCESSABLE
    error, dead_letter = recorder.steps[-1][1]
    assert dead_letter.raw == b"\x00garbage" and dead_letter.task_name is None


def test_attempt_over_budget_fails_without_running(runner: TaskRunner) -> None:
    recorder = Recorder()
    assert runner.process(_message("add", 1, 2), 4, recorder) is Outcome.FAILED
    assert recorder.steps[0][0] == "failure"
    assert recorder.steps[0][1][0].type == "taskserve.errors.ConsumerLost"


def test_not_startable_is_skipped(runner: TaskRunner) -> None:
    recorder = Recorder(startable=False)
    assert runner.process(_message("add", 1, 2), 1, recorder) is Outcome.SKIPPED
    assert recorder.steps == [("started", 1)]


def test_no_dead_letter_without_configured_queue() -> None:
    runner = TaskRunner(_config(failed_task_queue_name=None, max_retries=0), "test", HANDLERS)
    recorder = Recorder()
    assert runner.process(_message("boom"), 1, recorder) is Outcome.FAILED
    assert recorder.steps[-1][1][1] is None


def test_cancel_running_sync_and_async() -> None:
    started = threading.Event()

    def cooperative() -> str:
        started.set()
        while not current_task().cancelled:
            time.sleep(0.01)
        return "stopped"

    async def sleeper() -> None:
        started.set()
        await asyncio.sleep(60)

    runner = TaskRunner(_config(), "test", {"cooperative": cooperative, "sleeper": sleeper})
    try:
        for name in ("cooperative", "sleeper"):
            started.clear()
            message = _message(name)
            recorder = Recorder()
            outcome: list[Outcome] = []
            thread = threading.Thread(
                target=lambda m=message, r=recorder, o=outcome: o.append(runner.process(m, 1, r))
            )
            thread.start()
            assert started.wait(10)
            assert runner.running_task_ids() == [message.id]
            assert runner.cancel_running(message.id)
            thread.join(10)
            assert outcome == [Outcome.CANCELLED]
            assert recorder.steps[-1] == ("cancelled", 1)
        assert not runner.cancel_running("unknown")
    finally:
        runner.close()


def test_recorder_errors_propagate(runner: TaskRunner) -> None:
    class Broken(Recorder):
        def record_failure(self, *args: Any) -> None:
            raise OSError("dead-letter store down")

    with pytest.raises(OSError, match="dead-letter store down"):
        runner.process(_message("give_up"), 1, Broken())


def test_hooks_receive_lifecycle_events(runner: TaskRunner) -> None:
    events: list[tuple[str, TaskEvent]] = []

    class Collector:
        @hookimpl
        def taskserve_task_started(self, event: TaskEvent) -> None:
            events.append(("started", event))

        @hookimpl
        def taskserve_task_succeeded(self, event: TaskEvent) -> None:
            events.append(("succeeded", event))

        @hookimpl
        def taskserve_task_dead_lettered(self, event: TaskEvent) -> None:
            raise RuntimeError("a broken hook must not fail the task")

    manager = get_plugin_manager()
    collector = Collector()
    manager.register(collector)
    try:
        assert runner.process(_message("add", 1, 1), 1, Recorder()) is Outcome.SUCCEEDED
        assert runner.process(_message("give_up"), 1, Recorder()) is Outcome.FAILED
    finally:
        manager.unregister(collector)
    assert [kind for kind, _ in events] == ["started", "succeeded", "started"]
    assert events[0][1].queue_wait_s is not None and events[1][1].run_time_s is not None
