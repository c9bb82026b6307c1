"""The Redis state store against a real Redis: forward-only status, durable
cancel, idempotency, atomic dead letters, delivery counting, leases."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from taskserve import DeadLetter, DeadLetterKind, TaskError, TaskMessage, TaskNotFound, TaskState
from taskserve.serialization import build_message
from taskserve.stores.redis_store import RedisTaskStore

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def store() -> Iterator[RedisTaskStore]:
    prefix = f"taskserve-test-{uuid.uuid4().hex[:12]}"
    store = RedisTaskStore(REDIS_URL, "q", result_ttl_s=60, prefix=prefix)
    yield store
    for key in store.client.scan_iter(f"{prefix}:*"):
        store.client.delete(key)
    store.close()


def _message(*args: object) -> TaskMessage:
    return build_message(
        task_name="t",
        args=list(args),
        kwargs={"k": [1, {"x": None}]},
        queue_name="q",
        max_payload_bytes=10_000,
    )


def test_unknown_ids_raise_task_not_found(store: RedisTaskStore) -> None:
    with pytest.raises(TaskNotFound):
        store.status("never-enqueued")
    with pytest.raises(TaskNotFound):
        store.cancel("never-enqueued")
    with pytest.raises(TaskNotFound):
        store.message("never-enqueued")


def test_create_is_pending_and_keeps_the_message(store: RedisTaskStore) -> None:
    message = _message(1, "two")
    result, created = store.create(message, None)
    assert created and result.status is TaskState.PENDING
    assert store.status(message.id).status is TaskState.PENDING
    assert store.message(message.id) == message


def test_idempotency_key_returns_the_first_task(store: RedisTaskStore) -> None:
    first, created = store.create(_message(1), "key")
    again, created_again = store.create(_message(2), "key")
    assert created and not created_again and again.id == first.id


def test_terminal_status_is_never_overwritten(store: RedisTaskStore) -> None:
    message = _message()
    store.create(message, None)
    assert store.begin_delivery(message) == 1
    assert store.start(message.id, 1, 5)
    assert store.finish(message.id, TaskState.SUCCESS, result={"r": 1}, has_result=True)
    assert not store.finish(
        message.id, TaskState.FAILURE, error=TaskError(type="X", message="late")
    )
    assert not store.start(message.id, 2, 5)
    store.schedule_retry(message.id, TaskError(type="X", message="late"))
    status = store.status(message.id)
    assert status.status is TaskState.SUCCESS and status.result == {"r": 1} and status.error is None
    assert store.cancel(message.id) == (False, TaskState.SUCCESS)


def test_cancel_pending_is_durable_and_blocks_start(store: RedisTaskStore) -> None:
    message = _message()
    store.create(message, None)
    assert store.cancel(message.id) == (True, TaskState.CANCELLED)
    assert store.begin_delivery(message) == 1
    assert not store.start(message.id, 1, 5)
    assert store.status(message.id).status is TaskState.CANCELLED


def test_cancel_running_is_a_request(store: RedisTaskStore) -> None:
    message = _message()
    store.create(message, None)
    store.begin_delivery(message)
    store.start(message.id, 1, 5)
    assert store.cancel(message.id) == (True, TaskState.STARTED)
    assert store.cancel_requested([message.id, "other"]) == [message.id]


def test_cancel_requested_while_running_wins_over_the_outcome(store: RedisTaskStore) -> None:
    finished, retried = _message(), _message()
    for message in (finished, retried):
        store.create(message, None)
        store.begin_delivery(message)
        store.start(message.id, 1, 5)
        store.cancel(message.id)
    store.finish(finished.id, TaskState.SUCCESS, result="late", has_result=True)
    store.schedule_retry(retried.id, TaskError(type="ValueError", message="bad"))
    for message in (finished, retried):
        status = store.status(message.id)
        assert status.status is TaskState.CANCELLED and status.result is None


def test_refused_dead_letter_write_leaves_the_status(store: RedisTaskStore) -> None:
    message = _message()
    store.create(message, None)
    store.begin_delivery(message)
    store.start(message.id, 1, 5)
    error = TaskError(type="ValueError", message="bad")
    record = DeadLetter(
        id="dl-1",
        kind=DeadLetterKind.FAILED,
        queue_name="failed",
        source_queue="q",
        task_id=message.id,
        task_name=message.name,
        args=message.args,
        kwargs=message.kwargs,
        error=error,
        attempts=1,
        enqueued_at=message.enqueued_at,
    )
    store.client.set(f"{store.prefix}:dlq:failed:records", "not a hash")
    with pytest.raises(Exception, match="WRONGTYPE"):
        store.finish(message.id, TaskState.FAILURE, error=error, dead_letter=record)
    assert store.status(message.id).status is TaskState.STARTED


def test_failure_and_dead_letter_are_written_together(store: RedisTaskStore) -> None:
    message = _message({"nested": [1.5, True]})
    store.create(message, None)
    store.begin_delivery(message)
    store.start(message.id, 1, 5)
    error = TaskError(type="ValueError", message="bad", traceback="Traceback ...")
    record = DeadLetter(
        id="dl-1",
        kind=DeadLetterKind.FAILED,
        queue_name="failed",
        source_queue="q",
        task_id=message.id,
        task_name=message.name,
        args=message.args,
        kwargs=message.kwargs,
        error=error,
        attempts=1,
        enqueued_at=message.enqueued_at,
    )
    store.finish(message.id, TaskState.FAILURE, error=error, dead_letter=record)
    assert store.status(message.id).error == error
    assert store.dead_letters("failed", None, None) == [record]
    assert store.count_dead_letters("failed") == 1
    assert store.delete_dead_letters("failed", ["dl-1"]) == 1
    assert store.dead_letters("failed", None, None) == []


def test_deliveries_are_counted_and_released(store: RedisTaskStore) -> None:
    message = _message()
    assert store.begin_delivery(message) == 1  # creates a record for a foreign message
    assert store.status(message.id).status is TaskState.PENDING
    store.start(message.id, 1, 5)
    store.release(message.id)
    assert store.begin_delivery(message) == 1


def test_leases_expire_unless_extended(store: RedisTaskStore) -> None:
    message = _message()
    store.create(message, None)
    store.begin_delivery(message)
    store.start(message.id, 1, 0.2)
    assert store.in_flight() == 1
    store.extend_leases([message.id], 30)
    deadline = time.time() + 0.5
    while time.time() < deadline:
        assert store.expired_leases() == []
        time.sleep(0.05)
    store.start(message.id, 1, 0.01)
    deadline = time.time() + 5
    while not store.expired_leases() and time.time() < deadline:
        time.sleep(0.02)
    assert store.expired_leases() == [message.id]
    assert store.in_flight() == 0


def test_finished_records_expire_after_the_ttl(store: RedisTaskStore) -> None:
    short = RedisTaskStore(REDIS_URL, "q", result_ttl_s=1, prefix=store.prefix)
    message = _message()
    short.create(message, None)
    short.finish(message.id, TaskState.SUCCESS, result=1, has_result=True)
    assert 0 < short.client.ttl(short.task_key(message.id)) <= 1
    short.close()


def test_begin_and_start_counts_and_starts_in_one_step(store: RedisTaskStore) -> None:
    message = _message()
    store.create(message, None)
    assert store.begin_and_start(message, 5, max_attempts=2) == (1, True)
    status = store.status(message.id)
    assert status.status is TaskState.STARTED and status.attempts == 1
    assert store.in_flight() == 1
    assert store.begin_and_start(message, 5, max_attempts=2) == (2, True)
    assert store.begin_and_start(message, 5, max_attempts=2) == (3, False)
    assert store.status(message.id).attempts == 2


def test_begin_and_start_leaves_finished_and_cancelled_tasks(store: RedisTaskStore) -> None:
    done, cancelled, unknown = _message(), _message(), _message()
    store.create(done, None)
    store.begin_and_start(done, 5, max_attempts=3)
    store.finish(done.id, TaskState.SUCCESS, result=1, has_result=True)
    assert store.begin_and_start(done, 5, max_attempts=3) == (2, False)
    assert store.status(done.id).status is TaskState.SUCCESS
    store.create(cancelled, None)
    store.cancel(cancelled.id)
    assert store.begin_and_start(cancelled, 5, max_attempts=3) == (1, False)
    assert store.status(cancelled.id).status is TaskState.CANCELLED
    assert store.begin_and_start(unknown, 5, max_attempts=3) == (1, True)  # no record: created
    assert store.message(unknown.id) == unknown


def test_recorder_begin_starts_only_what_the_runner_runs(store: RedisTaskStore) -> None:
    from taskserve import TaskProcessorConfig
    from taskserve.execution import Outcome, TaskRunner
    from taskserve.stores.redis_store import StoreRecorder

    config = TaskProcessorConfig(queue_name="q", max_retries=0)
    runner = TaskRunner(config, "test", {"t": lambda *args, **kwargs: "ok"})
    recorder = StoreRecorder(store, 5, lambda message, delay: None)
    known = _message()
    unknown = build_message(
        task_name="other", args=None, kwargs=None, queue_name="q", max_payload_bytes=10_000
    )
    for message in (known, unknown):
        store.create(message, None)
    attempt, begun = recorder.begin(known, runner)
    assert attempt == 1 and store.status(known.id).status is TaskState.STARTED
    assert runner.process(known, attempt, begun) is Outcome.SUCCEEDED
    assert store.status(known.id).status is TaskState.SUCCESS
    attempt, begun = recorder.begin(unknown, runner)
    assert attempt == 1 and begun is recorder
    assert store.status(unknown.id).status is TaskState.PENDING
