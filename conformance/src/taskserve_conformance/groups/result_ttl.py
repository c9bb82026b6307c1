"""Result TTL (SPEC §5.4, §3.3).

Promises checked: a finished task (succeeded, failed or cancelled) is kept
until its result TTL has passed and is then removed - its status raises
TaskNotFound, never PENDING, and it can no longer be retried. The TTL counts
from the end of the task: a task queued longer than the TTL still runs.
"""

from __future__ import annotations

import functools

import pytest

from taskserve import Capability, TaskNotFound, TaskProcessorAdapter, TaskState
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import hold_for, wait_for_status, wait_until

TTL_S = 2.0


def _finished_or_expired(producer: TaskProcessorAdapter, task_id: str, final: TaskState) -> bool:
    try:
        return producer.get_task_status_sync(task_id).status is final
    except TaskNotFound:
        return True


def _expired(producer: TaskProcessorAdapter, task_id: str) -> bool:
    try:
        producer.get_task_status_sync(task_id)
    except TaskNotFound:
        return True
    return False


@requires(Capability.RESULT_TTL)
class ResultTTLTests:
    """§5.4: results are removed once the result TTL has passed."""

    def test_finished_tasks_expire_after_the_ttl(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
    ) -> None:
        config = make_config(result_ttl_s=TTL_S, max_retries=0)
        producer, deadlines = make_producer(config), Deadlines(config)
        succeeded = producer.enqueue_task_sync("echo", ["kept a while"])
        failed = producer.enqueue_task_sync("non_retryable")
        tasks = {succeeded.id: TaskState.SUCCESS, failed.id: TaskState.FAILURE}
        expiring = list(tasks)
        if producer.supports(Capability.CANCEL_PENDING):
            cancelled = producer.enqueue_task_sync("noop")
            producer.cancel_task_sync(cancelled.id)
            # Its TTL runs from the cancel: read it before a consumer starts, which
            # on a busy machine can take longer than the TTL.
            assert producer.get_task_status_sync(cancelled.id).status is TaskState.CANCELLED
            expiring.append(cancelled.id)
        consumers.start(config)
        for task_id, final in tasks.items():
            # Gone already counts: on a slow machine the TTL may pass between polls.
            wait_until(
                functools.partial(_finished_or_expired, producer, task_id, final),
                deadlines.run(tasks=2),
                f"task {task_id} did not reach {final.value}",
            )
        for task_id in expiring:
            wait_until(
                functools.partial(_expired, producer, task_id),
                deadlines.expiry,
                f"task {task_id} was still readable after its result TTL of {TTL_S}s",
            )
        with pytest.raises(TaskNotFound):
            producer.retry_task_sync(succeeded.id)

    def test_ttl_counts_from_the_end_of_the_task(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
    ) -> None:
        config = make_config(result_ttl_s=TTL_S)
        producer, deadlines = make_producer(config), Deadlines(config)
        task = producer.enqueue_task_sync("echo", ["queued longer than the TTL"])
        hold_for(
            lambda: producer.get_task_status_sync(task.id).status is TaskState.PENDING,
            1.5 * TTL_S,
            "a queued task did not stay PENDING",
        )
        consumers.start(config)
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run())
        assert done.result == {"args": ["queued longer than the TTL"], "kwargs": {}}
