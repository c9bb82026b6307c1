"""Retrying a finished task (SPEC §5.5).

Promise checked: retrying a failed or succeeded task (as BentoML's
``retry``) enqueues its original payload again under a new id linked to the
old one (``retried_from``); the old task is left as it was; an unknown id
raises TaskNotFound.
"""

from __future__ import annotations

import uuid

import pytest

from taskserve import TaskNotFound, TaskProcessorAdapter, TaskState
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import run_async, wait_for_status

ARGS = ["retry-gate", {"payload": [1, 2.5, None]}, "ünïcode"]
KWARGS = {"options": {"deep": [True, {"k": "v"}]}}


class RetryTaskTests:
    """§5.5: retry_task enqueues the original payload under a new, linked id."""

    def test_retry_of_a_failed_task(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=0)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("fail_until_gate", ARGS, KWARGS)
        failed = wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.run())
        journal.open_gate("retry-gate")

        again = producer.retry_task_sync(task.id)
        assert again.id != task.id
        assert again.retried_from == task.id
        assert again.status is TaskState.PENDING
        done = wait_for_status(producer, again.id, TaskState.SUCCESS, deadlines.run())
        assert done.result == {"args": ARGS[1:], "kwargs": KWARGS}
        assert done.retried_from == task.id
        [run] = journal.runs(again.id)
        assert (run.name, run.args, run.kwargs) == ("fail_until_gate", ARGS, KWARGS)
        old = producer.get_task_status_sync(task.id)
        assert (old.status, old.attempts) == (TaskState.FAILURE, failed.attempts)

    def test_retry_of_a_succeeded_task(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        deadlines: Deadlines,
    ) -> None:
        consumers.start()
        task = producer.enqueue_task_sync("echo", ARGS, KWARGS)
        first = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run())
        again = run_async(producer.retry_task_async(task.id))
        assert again.id != task.id
        assert again.retried_from == task.id
        second = wait_for_status(producer, again.id, TaskState.SUCCESS, deadlines.run())
        assert second.result == first.result == {"args": ARGS, "kwargs": KWARGS}
        assert producer.get_task_status_sync(task.id).result == first.result

    def test_retry_of_unknown_task_raises_task_not_found(
        self, producer: TaskProcessorAdapter
    ) -> None:
        with pytest.raises(TaskNotFound):
            producer.retry_task_sync(str(uuid.uuid4()))
