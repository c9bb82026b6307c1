"""Time limits (SPEC §11.3).

Promises checked: a handler running past ``task_time_limit_s`` is interrupted
at the limit - a sync one by ``TaskTimeLimitExceeded`` raised in its thread, an
``async def`` one by cancellation - and the attempt fails with
``TaskTimeLimitExceeded``, retried until the budget is spent and then FAILURE;
a handler's own ``time_limit_s`` overrides the config's, shorter or longer; a
handler that outlives its limit by ``task_time_limit_grace_s`` (blocked in one
C call) makes its consumer process exit with a non-zero code, and its task
runs again on another consumer.
"""

from __future__ import annotations

from taskserve import Capability, TaskState
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.journal import Journal, JournalEntry
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import wait_for_exit, wait_for_status, wait_until

_LIMIT_S = 0.5
"""The config's time limit in most tests (the handlers' own limits are 0.5 and 10 s)."""

_EARLY_S = 5.0
"""A run ended "early" when it ended within this long of its start (it asked for 30 s)."""


def _ran_s(journal: Journal, start: JournalEntry) -> float:
    """How long the run that began with ``start`` took, by its last journal event."""
    ends = [
        e
        for e in journal.events(start.task_id)
        if e.event != "start" and e.attempt == start.attempt and e.time >= start.time
    ]
    assert ends, f"attempt {start.attempt} of task {start.task_id} has not ended"
    return ends[0].time - start.time


@requires(Capability.TIME_LIMITS)
class TimeLimitTests:
    """§11.3: attempts are cut at their time limit; a handler outliving it is abandoned."""

    def test_sync_handler_is_interrupted_at_the_limit(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=1, retry_backoff_s=0.1, task_time_limit_s=_LIMIT_S)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("busy_loop", [30])
        failed = wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.retries())
        assert failed.attempts == 2
        assert failed.error is not None and failed.error.type.endswith("TaskTimeLimitExceeded")
        runs = journal.runs(task.id)
        assert [r.attempt for r in runs] == [1, 2]
        raised = journal.events(task.id, "raise")
        assert [e.detail for e in raised] == ["TaskTimeLimitExceeded"] * 2
        for run in runs:
            ran = _ran_s(journal, run)
            assert _LIMIT_S * 0.9 <= ran < _EARLY_S, f"attempt {run.attempt} ran {ran:.2f}s"

    def test_async_handler_is_cancelled_at_the_limit(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=1, retry_backoff_s=0.1, task_time_limit_s=_LIMIT_S)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("async_busy_loop", [30])
        failed = wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.retries())
        assert failed.attempts == 2
        assert failed.error is not None and failed.error.type.endswith("TaskTimeLimitExceeded")
        runs = journal.runs(task.id)
        assert [r.attempt for r in runs] == [1, 2]
        assert len(journal.events(task.id, "interrupted")) == 2
        for run in runs:
            ran = _ran_s(journal, run)
            assert _LIMIT_S * 0.9 <= ran < _EARLY_S, f"attempt {run.attempt} ran {ran:.2f}s"

    def test_a_handler_limit_overrides_the_config_limit(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=0, task_time_limit_s=2.0)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        cut = producer.enqueue_task_sync("short_limit_loop", [30])
        spared = producer.enqueue_task_sync("long_limit_loop", [2.5])
        failed = wait_for_status(producer, cut.id, TaskState.FAILURE, deadlines.run(2.5))
        assert failed.error is not None and failed.error.type.endswith("TaskTimeLimitExceeded")
        (run,) = journal.runs(cut.id)
        ran = _ran_s(journal, run)
        assert ran < 2.0, f"the handler's 0.5s limit did not apply: it ran {ran:.2f}s"
        done = wait_for_status(producer, spared.id, TaskState.SUCCESS, deadlines.run(2.5))
        assert done.result == 2.5 and done.attempts == 1

    def test_a_handler_outliving_the_limit_ends_its_consumer_and_runs_again(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(task_time_limit_grace_s=0.5)
        producer, deadlines = make_producer(config), Deadlines(config)
        first = consumers.start(config, graceful_timeout_s=5.0)
        task = producer.enqueue_task_sync("outlive_time_limit", [60])
        wait_until(lambda: journal.runs(task.id), deadlines.pickup, "the task did not start")
        code = wait_for_exit(
            first,
            deadlines.stop(5.0) + 1.0,
            "the consumer whose handler outlived its time limit did not exit",
        )
        assert code != 0, "a consumer ended by a handler outliving its limit exited with 0"
        second = consumers.start(config)
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.redelivery)
        assert done.attempts == 2
        assert done.result == second.pid != first.pid
        assert [r.attempt for r in journal.runs(task.id)] == [1, 2]
