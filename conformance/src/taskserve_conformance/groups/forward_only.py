"""Forward-only status (SPEC §3.4).

Promise checked: once a task is CANCELLED, SUCCESS or FAILURE, nothing later
overwrites it - not a handler that finishes (or fails) after its task was
cancelled, and not a stale consumer that finishes a run after the task was
delivered again and completed elsewhere.
"""

from __future__ import annotations

from taskserve import Capability, DeadLetterKind, TaskProcessorAdapter, TaskState
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import hold_for, wait_for_status, wait_until


def _status(producer: TaskProcessorAdapter, task_id: str) -> TaskState:
    return producer.get_task_status_sync(task_id).status


class ForwardOnlyStatusTests:
    """§3.4: terminal states are final."""

    @requires(Capability.CANCEL_RUNNING)
    def test_run_finishing_after_cancel_does_not_overwrite_cancelled(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        consumers.start(concurrency=1)
        task = producer.enqueue_task_sync("wait_for_gate", ["late"], {"result": "too late"})
        wait_until(lambda: journal.runs(task.id), deadlines.pickup, "the handler did not start")
        assert producer.cancel_task_sync(task.id).cancelled
        journal.open_gate("late")  # the handler ignores the flag and returns a result
        wait_until(
            lambda: journal.events(task.id, "end"), deadlines.cancel, "the handler did not end"
        )
        cancelled = wait_for_status(producer, task.id, TaskState.CANCELLED, deadlines.cancel)
        assert cancelled.result is None
        hold_for(
            lambda: _status(producer, task.id) is TaskState.CANCELLED,
            deadlines.lease_windows(1),
            "a cancelled task's status changed after its handler returned",
        )

    @requires(Capability.CANCEL_RUNNING, Capability.DEAD_LETTERS)
    def test_run_failing_after_cancel_does_not_overwrite_cancelled(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=0)  # the failure would be final and dead-lettered
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config, concurrency=1)
        task = producer.enqueue_task_sync("fail_after_gate", ["late-failure"])
        wait_until(lambda: journal.runs(task.id), deadlines.pickup, "the handler did not start")
        assert producer.cancel_task_sync(task.id).cancelled
        journal.open_gate("late-failure")
        wait_until(
            lambda: journal.events(task.id, "raise"), deadlines.cancel, "the handler did not fail"
        )
        wait_for_status(producer, task.id, TaskState.CANCELLED, deadlines.cancel)
        hold_for(
            lambda: (
                _status(producer, task.id) is TaskState.CANCELLED
                and len(journal.runs(task.id)) == 1
            ),
            deadlines.lease_windows(1),
            "a cancelled task was retried or its status changed after its handler failed",
        )
        assert producer.list_dead_letters_sync(DeadLetterKind.FAILED) == []

    @requires(Capability.CRASH_REDELIVERY)
    def test_stale_consumer_does_not_overwrite_a_finished_redelivery(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        stale = consumers.start(concurrency=1)
        task = producer.enqueue_task_sync("report_pid", ["stale"])
        wait_until(lambda: journal.runs(task.id), deadlines.pickup, "the handler did not start")
        stale.suspend()  # alive but frozen: it cannot extend its lease
        journal.open_gate("stale")
        fresh = consumers.start(concurrency=1)
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.redelivery)
        assert done.result == fresh.pid
        stale.resume()
        wait_until(
            lambda: [e for e in journal.events(task.id, "end") if e.pid == stale.pid],
            deadlines.pickup,
            "the stale consumer did not finish its run",
        )
        hold_for(
            lambda: producer.get_task_status_sync(task.id).result == fresh.pid,
            deadlines.lease_windows(1),
            "the stale consumer's late result overwrote the finished task",
        )
        assert _status(producer, task.id) is TaskState.SUCCESS
