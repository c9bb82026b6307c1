"""Retries (SPEC §4.6).

Promises checked: with ``max_retries = N`` a handler that always raises runs
exactly N + 1 times, each retry waiting at least its backoff, and the status
reads RETRY between attempts; a handler that recovers succeeds on the attempt
it recovers; argument-binding errors and ``NonRetryableError`` are not
retried.
"""

from __future__ import annotations

import itertools

import pytest

from taskserve import Capability, TaskState
from taskserve.retry import retry_delay_s
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import hold_for, wait_for_status

_CLOCK_SLACK_S = 0.02
"""Tolerance for comparing timestamps written by different processes."""


class RetryTests:
    """§4.6: the retry budget, backoff, RETRY status and non-retryable errors."""

    @pytest.mark.parametrize("max_retries", [0, 2])
    def test_always_failing_handler_runs_max_retries_plus_one_times(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
        max_retries: int,
    ) -> None:
        config = make_config(max_retries=max_retries)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("always_fail")
        failed = wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.retries())
        assert failed.attempts == max_retries + 1
        assert failed.error is not None and failed.error.type.endswith("HandlerFailure")
        hold_for(
            lambda: len(journal.runs(task.id)) == max_retries + 1,
            deadlines.lease_windows(1),
            f"the handler did not run exactly {max_retries + 1} times",
        )
        assert [r.attempt for r in journal.runs(task.id)] == list(range(1, max_retries + 2))

    @requires(Capability.RETRY_BACKOFF)
    def test_retries_wait_for_the_backoff(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(
            max_retries=2, retry_backoff_s=0.3, retry_backoff_max_s=1.0, retry_jitter=False
        )
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("always_fail")
        wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.retries())
        runs = journal.runs(task.id)
        assert len(runs) == 3
        for failed_attempt, (before, after) in enumerate(itertools.pairwise(runs), 1):
            backoff = retry_delay_s(config, failed_attempt)
            assert after.time - before.time >= backoff - _CLOCK_SLACK_S, (
                f"retry {failed_attempt} came {after.time - before.time:.3f}s after the failed "
                f"attempt, before its backoff of {backoff:.3f}s"
            )

    def test_status_reads_retry_between_attempts(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
    ) -> None:
        config = make_config(max_retries=1, retry_backoff_s=3.0, retry_backoff_max_s=3.0)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("fail_n_times", [1], {"result": "recovered"})
        waiting = wait_for_status(producer, task.id, TaskState.RETRY, deadlines.run())
        assert waiting.attempts == 1
        assert waiting.error is not None and waiting.error.type.endswith("HandlerFailure")
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.retries())
        assert done.result == "recovered"
        assert done.attempts == 2

    def test_handler_recovering_succeeds_on_that_attempt(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=2)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("fail_n_times", [2], {"result": [1, 2]})
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.retries())
        assert done.result == [1, 2]
        assert done.attempts == 3
        assert len(journal.runs(task.id)) == 3

    def test_argument_binding_error_is_not_retried(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=3)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        misfits = {"too many": ([1, 2, 3], {}), "missing": ([1], {}), "unknown": ([1], {"c": 2})}
        tasks = {
            case: producer.enqueue_task_sync("add", args, kwargs)
            for case, (args, kwargs) in misfits.items()
        }
        for case, task in tasks.items():
            failed = wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.run())
            assert failed.attempts == 1, case
            assert failed.error is not None, case
            assert failed.error.type.endswith("ArgumentBindingError"), case
            assert "add" in failed.error.message, case
            assert journal.runs(task.id) == [], f"{case}: the handler was called anyway"

    def test_non_retryable_error_is_not_retried(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=3)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("non_retryable")
        failed = wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.run())
        assert failed.attempts == 1
        hold_for(
            lambda: len(journal.runs(task.id)) == 1,
            deadlines.lease_windows(1),
            "a NonRetryableError was retried",
        )
