"""Delayed tasks (SPEC §11.1): ``delay_s`` and ``eta`` of an enqueue.

Promises checked: a task enqueued with a delay reads PENDING with its due
time (``due_at``) until it is due and never starts before it; once due it
starts within a pickup bound on an idle consumer, with or without a consumer
online while it waited, and across a consumer restart; a cancel while it
waits is final (it never runs); a retry waiting for its backoff shows its due
time the same way; a bad delay is refused naming the argument, and nothing is
enqueued.
"""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskserve import (
    Capability,
    InvalidArgument,
    TaskNotFound,
    TaskProcessorAdapter,
    TaskState,
)
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import wait_for_status, wait_until

_CLOCK_SLACK_S = 0.02
"""Tolerance for comparing timestamps written by different processes."""

_DELAY_S = 1.5
"""Long enough to read the waiting task a few times, short for the suite."""


def _first_start(journal: Journal, task_id: str) -> float:
    runs = journal.runs(task_id)
    assert runs, f"task {task_id} has no recorded run"
    return runs[0].time


def _assert_not_early(started: float, due: float) -> None:
    assert started >= due - _CLOCK_SLACK_S, (
        f"the delayed task started {due - started:.3f}s before it was due"
    )


@requires(Capability.DELAYED_TASKS)
class DelayedTaskTests:
    """``delay_s``/``eta``: PENDING with ``due_at``, never early, durable, cancelable."""

    def test_a_delayed_task_waits_pending_with_its_due_time_then_runs(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config()
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        before = time.time()
        task = producer.enqueue_task_sync("echo", ["later"], delay_s=_DELAY_S)
        after = time.time()
        assert task.status is TaskState.PENDING
        assert task.due_at is not None and before + _DELAY_S <= task.due_at <= after + _DELAY_S
        waiting = producer.get_task_status_sync(task.id)
        assert waiting.status is TaskState.PENDING
        assert waiting.due_at == pytest.approx(task.due_at, abs=0.05)
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, _DELAY_S + deadlines.pickup)
        assert done.result == {"args": ["later"], "kwargs": {}}
        assert done.due_at is None
        _assert_not_early(_first_start(journal, task.id), task.due_at)

    def test_an_eta_is_an_aware_datetime_and_is_never_run_early(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config()
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        eta = datetime.now(UTC) + timedelta(seconds=1.0)
        task = producer.enqueue_task_sync("echo", ["at eta"], eta=eta)
        assert task.due_at == pytest.approx(eta.timestamp(), abs=0.01)
        wait_for_status(producer, task.id, TaskState.SUCCESS, 1.0 + deadlines.pickup)
        _assert_not_early(_first_start(journal, task.id), eta.timestamp())

    def test_a_waiting_task_can_be_cancelled_and_never_runs(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config()
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config, concurrency=1)
        cancelled = producer.enqueue_task_sync("echo", ["never"], delay_s=0.5)
        outcome = producer.cancel_task_sync(cancelled.id)
        assert outcome.cancelled and outcome.status is TaskState.CANCELLED
        # Due after the cancelled one: once it ran, the cancelled one's time has come.
        barrier = producer.enqueue_task_sync("echo", ["barrier"], delay_s=1.0)
        wait_for_status(producer, barrier.id, TaskState.SUCCESS, 1.0 + deadlines.pickup)
        assert journal.runs(cancelled.id) == []
        assert producer.get_task_status_sync(cancelled.id).status is TaskState.CANCELLED

    def test_a_delayed_task_waits_with_no_consumer_online_and_runs_once_one_starts(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config()
        producer, deadlines = make_producer(config), Deadlines(config)
        task = producer.enqueue_task_sync("echo", ["offline"], delay_s=0.3)
        assert task.due_at is not None
        due = task.due_at
        wait_until(lambda: time.time() > due + 0.2, 5.0, "the due time did not pass")
        assert producer.get_task_status_sync(task.id).status is TaskState.PENDING
        consumers.start(config)
        wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.pickup)
        assert len(journal.runs(task.id)) == 1

    def test_a_delayed_task_survives_a_consumer_restart(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config()
        producer, deadlines = make_producer(config), Deadlines(config)
        first = consumers.start(config)
        task = producer.enqueue_task_sync("echo", ["restart"], delay_s=_DELAY_S)
        assert task.due_at is not None
        first.terminate()
        first.wait_exit(deadlines.stop(5.0))
        assert producer.get_task_status_sync(task.id).status is TaskState.PENDING
        consumers.start(config)
        wait_for_status(producer, task.id, TaskState.SUCCESS, _DELAY_S + deadlines.pickup)
        _assert_not_early(_first_start(journal, task.id), task.due_at)
        assert len(journal.runs(task.id)) == 1

    @requires(Capability.RETRY_BACKOFF)
    def test_a_retry_waiting_for_its_backoff_shows_its_due_time(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
    ) -> None:
        config = make_config(
            max_retries=1, retry_backoff_s=2.0, retry_backoff_max_s=2.0, retry_jitter=False
        )
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("always_fail")
        assert task.due_at is None
        waiting = wait_for_status(producer, task.id, TaskState.RETRY, deadlines.pickup)
        assert waiting.due_at is not None and waiting.updated_at is not None
        assert waiting.due_at == pytest.approx(waiting.updated_at + 2.0, abs=0.5)
        wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.retries())

    @pytest.mark.parametrize(
        ("options", "named"),
        [
            ({"delay_s": -1}, "delay_s"),
            ({"delay_s": math.nan}, "delay_s"),
            ({"delay_s": math.inf}, "delay_s"),
            ({"delay_s": True}, "delay_s"),
            ({"delay_s": "5"}, "delay_s"),
            ({"eta": datetime.now()}, "aware"),  # a naive datetime
            ({"eta": "2030-01-01T00:00:00Z"}, "eta"),
            ({"delay_s": 1, "eta": datetime.now(UTC)}, "not both"),
        ],
        ids=["negative", "nan", "inf", "bool", "text", "naive-eta", "text-eta", "both"],
    )
    def test_a_bad_delay_is_refused_naming_it_and_nothing_is_enqueued(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        options: dict[str, Any],
        named: str,
    ) -> None:
        producer: TaskProcessorAdapter = make_producer(make_config())
        task_id = f"refused-{uuid.uuid4().hex}"
        with pytest.raises(InvalidArgument, match=named):
            producer.enqueue_task_sync("echo", task_id=task_id, **options)
        with pytest.raises(TaskNotFound):
            producer.get_task_status_sync(task_id)
