"""Enqueue and status (SPEC §3.1, §3.3).

Promises checked: enqueue returns a PENDING :class:`TaskResult` with an id at
once; the status is one normalized :class:`TaskState` at every step
(PENDING, STARTED while the handler runs, RETRY, then SUCCESS/FAILURE) with
``created_at``, ``result`` (the return value, or once failed the exception
rebuilt from the recorded type and message), ``error`` (type, message,
traceback) and ``attempts``; an id that was never enqueued raises :class:`TaskNotFound` and
is never reported as PENDING; sync and ``async def`` handlers both run; the
``..._async`` methods match the sync ones; with ``idempotency_keys``, a
repeated key returns the first task.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from taskserve import (
    Capability,
    IdempotencyKeyReused,
    TaskID,
    TaskNotFound,
    TaskProcessorAdapter,
    TaskResult,
    TaskState,
)
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import run_async, wait_for_status, wait_until

NESTED_ARGS = [1, "two", [3.5, {"four": None, "five": [True, False]}], {"": []}]
NESTED_KWARGS = {"nested": {"list": [1, {"x": "héllo ✓"}]}, "empty": {}, "n": -7}


class EnqueueAndStatusTests:
    """§3.1 and §3.3: enqueue, status reads and the TaskResult shape."""

    def test_enqueue_returns_pending_result_at_once(self, producer: TaskProcessorAdapter) -> None:
        before = time.time()
        result = producer.enqueue_task_sync("echo", [1], {"k": "v"})
        assert isinstance(result, TaskResult)
        assert isinstance(result.id, str) and result.id
        assert result.status is TaskState.PENDING
        assert result.created_at is not None and result.created_at >= before - 5
        assert result.attempts == 0

        status = producer.get_task_status_sync(result.id)
        assert status.id == result.id
        assert status.status is TaskState.PENDING
        assert status.result is None and status.error is None

    def test_enqueued_ids_are_unique(self, producer: TaskProcessorAdapter) -> None:
        ids = {producer.enqueue_task_sync("noop").id for _ in range(20)}
        assert len(ids) == 20

    @pytest.mark.parametrize(
        "task_id", [str(uuid.uuid4()), "never-enqueued-task"], ids=["uuid", "plain"]
    )
    def test_unknown_id_raises_task_not_found(
        self, producer: TaskProcessorAdapter, task_id: str
    ) -> None:
        producer.enqueue_task_sync("noop")  # the queue is not empty
        with pytest.raises(TaskNotFound) as raised:
            producer.get_task_status_sync(task_id)
        assert task_id in str(raised.value)

    def test_status_accepts_task_id_and_task_result(self, producer: TaskProcessorAdapter) -> None:
        result = producer.enqueue_task_sync("noop")
        assert producer.get_task_status_sync(result).id == result.id
        assert producer.get_task_status_sync(TaskID(id=result.id)).id == result.id

    def test_started_is_visible_while_running(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        consumers.start(concurrency=1)
        task = producer.enqueue_task_sync("wait_for_gate", ["started"], {"result": "done"})
        running = wait_for_status(producer, task.id, TaskState.STARTED, deadlines.pickup)
        wait_until(lambda: journal.runs(task.id), deadlines.pickup, "the handler did not start")
        assert producer.get_task_status_sync(task.id).status is TaskState.STARTED
        assert running.attempts >= 1
        journal.open_gate("started")
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run())
        assert done.result == "done"
        assert done.attempts == 1

    def test_success_keeps_result_and_attempts(
        self, producer: TaskProcessorAdapter, consumers: ConsumerPool, deadlines: Deadlines
    ) -> None:
        consumers.start()
        task = producer.enqueue_task_sync("echo", NESTED_ARGS, NESTED_KWARGS)
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run())
        assert done.result == {"args": NESTED_ARGS, "kwargs": NESTED_KWARGS}
        assert done.attempts == 1
        assert done.error is None
        assert done.created_at == pytest.approx(task.created_at, abs=0.05)

    def test_async_handler_runs(
        self, producer: TaskProcessorAdapter, consumers: ConsumerPool, deadlines: Deadlines
    ) -> None:
        consumers.start()
        task = producer.enqueue_task_sync("async_echo", ["a"], {"b": 2})
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run())
        assert done.result == {"args": ["a"], "kwargs": {"b": 2}}

    def test_failure_keeps_error_type_message_and_traceback(
        self, producer: TaskProcessorAdapter, consumers: ConsumerPool, deadlines: Deadlines
    ) -> None:
        consumers.start()
        task = producer.enqueue_task_sync("non_retryable")
        failed = wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.run())
        assert failed.error is not None
        assert failed.error.type.endswith("NonRetryableError")
        assert "refuses to be retried" in failed.error.message
        assert "non_retryable" in failed.error.traceback
        assert isinstance(failed.result, Exception)
        assert str(failed.result) == failed.error.message
        assert failed.model_dump(mode="json")["result"] is None
        assert failed.attempts == 1

    def test_status_is_a_task_state_at_every_step(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
    ) -> None:
        config = make_config(max_retries=1, retry_backoff_s=0.5)
        producer = make_producer(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("fail_n_times", [1], {"result": "ok"})
        seen: list[TaskState] = []

        def finished() -> bool:
            status = producer.get_task_status_sync(task.id).status
            assert isinstance(status, TaskState), f"status {status!r} is not a TaskState"
            if not seen or seen[-1] is not status:
                seen.append(status)
            return status is TaskState.SUCCESS

        wait_until(
            finished, Deadlines(config).retries(1), "the task did not succeed", interval=0.01
        )
        allowed = {TaskState.PENDING, TaskState.STARTED, TaskState.RETRY, TaskState.SUCCESS}
        assert set(seen) <= allowed, seen
        assert seen[-1] is TaskState.SUCCESS

    def test_async_methods_match_sync_ones(
        self, producer: TaskProcessorAdapter, consumers: ConsumerPool, deadlines: Deadlines
    ) -> None:
        async def scenario() -> TaskResult:
            task = await producer.enqueue_task_async("add", [2, 3])
            assert task.status is TaskState.PENDING
            with pytest.raises(TaskNotFound):
                await producer.get_task_status_async(str(uuid.uuid4()))
            return task

        consumers.start()
        task = asyncio.run(scenario())
        wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run())
        done = run_async(producer.get_task_status_async(task.id))
        assert done.result == 5

    @requires(Capability.IDEMPOTENCY_KEYS)
    def test_idempotency_key_returns_the_first_task(self, producer: TaskProcessorAdapter) -> None:
        first = producer.enqueue_task_sync("echo", [1], idempotency_key="key-1")
        again = producer.enqueue_task_sync("echo", [1], idempotency_key="key-1")
        other = producer.enqueue_task_sync("echo", [3], idempotency_key="key-2")
        assert again.id == first.id
        assert other.id != first.id

    @requires(Capability.IDEMPOTENCY_KEYS)
    def test_idempotency_key_with_another_payload_is_refused(
        self, producer: TaskProcessorAdapter
    ) -> None:
        first = producer.enqueue_task_sync("echo", [1], idempotency_key="key-3")
        with pytest.raises(IdempotencyKeyReused, match=first.id):
            producer.enqueue_task_sync("echo", [2], idempotency_key="key-3")
