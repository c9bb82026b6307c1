"""Cancel (SPEC §5.1 - §5.3).

Promises checked: cancelling a PENDING task is durable - it holds with no
consumer online, across consumer restarts, and for a task a consumer has
already fetched; the handler never runs and the status is CANCELLED.
Cancelling a STARTED task interrupts an ``async def`` handler (asyncio
cancellation) and raises the flag a sync handler polls
(``current_task().cancelled``); once it stops the status is CANCELLED and its
result is discarded (adapters declaring ``cancel_running``). Cancelling a
finished task changes nothing and says so; an unknown id raises TaskNotFound.
"""

from __future__ import annotations

import uuid

import pytest

from taskserve import Capability, TaskNotFound, TaskProcessorAdapter, TaskState
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.journal import Journal
from taskserve_conformance.waiting import (
    run_async,
    run_barrier,
    wait_for_exit,
    wait_for_status,
    wait_until,
)

LONG_S = 300.0
"""How long the handlers of running-task cancels would run if not stopped."""


@requires(Capability.CANCEL_PENDING)
class CancelTests:
    """§5.1-§5.3: durable cancel of queued tasks, running tasks, finished tasks."""

    def test_cancel_pending_holds_without_consumer_and_across_restarts(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        task = producer.enqueue_task_sync("echo", ["must not run"])
        outcome = producer.cancel_task_sync(task.id)
        assert outcome.cancelled
        assert outcome.status is TaskState.CANCELLED
        assert producer.get_task_status_sync(task.id).status is TaskState.CANCELLED

        for _ in range(2):  # a consumer, then its successor after a restart
            consumer = consumers.start(concurrency=1)
            run_barrier(producer, deadlines.run())
            consumer.terminate()
            wait_for_exit(consumer, deadlines.stop(0), "an idle consumer did not stop")
        assert journal.runs(task.id) == []
        cancelled = producer.get_task_status_sync(task.id)
        assert cancelled.status is TaskState.CANCELLED
        assert cancelled.result is None

    def test_cancel_of_task_waiting_behind_a_busy_consumer(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        consumers.start(concurrency=1)
        blocker = producer.enqueue_task_sync("wait_for_gate", ["blocker"])
        wait_until(lambda: journal.runs(blocker.id), deadlines.pickup, "the blocker did not start")
        waiting = [producer.enqueue_task_sync("echo", [i]) for i in range(3)]
        for task in waiting:
            assert producer.cancel_task_sync(task.id).cancelled
        journal.open_gate("blocker")
        wait_for_status(producer, blocker.id, TaskState.SUCCESS, deadlines.run())
        run_barrier(producer, deadlines.run(tasks=4))
        for task in waiting:
            assert journal.runs(task.id) == [], "a cancelled task ran"
            wait_for_status(producer, task.id, TaskState.CANCELLED, deadlines.cancel)

    @requires(Capability.CANCEL_RUNNING)
    def test_cancel_interrupts_running_async_handler(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        consumers.start()
        task = producer.enqueue_task_sync("async_sleep", [LONG_S])
        wait_for_status(producer, task.id, TaskState.STARTED, deadlines.pickup)
        wait_until(lambda: journal.runs(task.id), deadlines.pickup, "the handler did not start")
        outcome = producer.cancel_task_sync(task.id)
        assert outcome.cancelled
        cancelled = wait_for_status(producer, task.id, TaskState.CANCELLED, deadlines.cancel)
        assert cancelled.result is None
        assert journal.events(task.id, "interrupted"), "the coroutine was not cancelled"
        assert journal.events(task.id, "end") == []

    @requires(Capability.CANCEL_RUNNING)
    def test_cancel_flags_running_sync_handler(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        consumers.start()
        task = producer.enqueue_task_sync("cooperative_sleep", [LONG_S])
        wait_until(lambda: journal.runs(task.id), deadlines.pickup, "the handler did not start")
        assert producer.cancel_task_sync(task.id).cancelled
        cancelled = wait_for_status(producer, task.id, TaskState.CANCELLED, deadlines.cancel)
        assert journal.events(task.id, "saw_cancel"), "the handler never saw the flag"
        assert cancelled.result is None, "the result of a cancelled run was kept"

    def test_cancel_of_finished_task_changes_nothing(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        deadlines: Deadlines,
    ) -> None:
        consumers.start()
        succeeded = producer.enqueue_task_sync("add", [20, 22])
        failed = producer.enqueue_task_sync("non_retryable")
        for task, final in ((succeeded, TaskState.SUCCESS), (failed, TaskState.FAILURE)):
            before = wait_for_status(producer, task.id, final, deadlines.run(tasks=2))
            outcome = producer.cancel_task_sync(task.id)
            assert not outcome.cancelled
            assert outcome.status is final
            assert final.value.lower() in outcome.message.lower()
            after = producer.get_task_status_sync(task.id)
            assert after == before  # a failure's exception compares by type and message
        assert producer.get_task_status_sync(succeeded.id).result == 42

    def test_cancel_twice_stays_cancelled(self, producer: TaskProcessorAdapter) -> None:
        task = producer.enqueue_task_sync("noop")
        assert producer.cancel_task_sync(task.id).cancelled
        again = producer.cancel_task_sync(task.id)
        assert again.status is TaskState.CANCELLED
        assert producer.get_task_status_sync(task.id).status is TaskState.CANCELLED

    def test_cancel_unknown_task_raises_task_not_found(
        self, producer: TaskProcessorAdapter
    ) -> None:
        with pytest.raises(TaskNotFound):
            producer.cancel_task_sync(str(uuid.uuid4()))
        with pytest.raises(TaskNotFound):
            run_async(producer.cancel_task_async(str(uuid.uuid4())))
