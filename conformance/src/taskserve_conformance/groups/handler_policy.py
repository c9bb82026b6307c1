"""Retry policies of single handlers (SPEC §4.6).

Promises checked: the options of ``@task_handler`` override the
TaskProcessorConfig for that task name only. A handler with ``max_retries = N``
runs exactly N + 1 times whatever the config says, more or fewer, and crashed
deliveries spend that budget; tasks of other names keep the config's; an
exception of a type listed in ``non_retryable`` fails the task at once while
others are retried; the handler's ``retry_backoff_s`` and
``retry_backoff_max_s`` separate its runs.
"""

from __future__ import annotations

import itertools

import pytest

from taskserve import Capability, RetryPolicy, TaskProcessorConfig, TaskState
from taskserve.policy import handler_policy
from taskserve.retry import retry_delay_s
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.handlers import HANDLERS
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import hold_for, wait_for_exit, wait_for_status

_CLOCK_SLACK_S = 0.02
"""Tolerance for comparing timestamps written by different processes."""


def _policy(config: TaskProcessorConfig, task_name: str) -> RetryPolicy:
    """The retry settings the suite's handler ``task_name`` runs under ``config``."""
    return handler_policy(HANDLERS[task_name]).resolve(config)


def _deadlines(config: TaskProcessorConfig, task_name: str) -> Deadlines:
    """Bounds for handler ``task_name``: those of a config with its retry settings."""
    policy = _policy(config, task_name)
    return Deadlines(
        config.model_copy(
            update={
                "max_retries": policy.max_retries,
                "retry_backoff_s": policy.retry_backoff_s,
                "retry_backoff_max_s": policy.retry_backoff_max_s,
            }
        )
    )


class HandlerPolicyTests:
    """§4.6 per handler: ``@task_handler`` retry options over the config's."""

    def test_handler_max_retries_above_the_configs_runs_that_often(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=0)
        producer, deadlines = make_producer(config), _deadlines(config, "policy_fail")
        consumers.start(config)
        task = producer.enqueue_task_sync("policy_fail")
        other = producer.enqueue_task_sync("always_fail")
        failed = wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.retries())
        assert failed.attempts == 4, "policy_fail has max_retries=3: four attempts"
        assert failed.error is not None and failed.error.type.endswith("HandlerFailure")
        hold_for(
            lambda: len(journal.runs(task.id)) == 4,
            deadlines.lease_windows(1),
            "policy_fail did not run exactly 4 times",
        )
        assert [r.attempt for r in journal.runs(task.id)] == [1, 2, 3, 4]
        plain = wait_for_status(producer, other.id, TaskState.FAILURE, deadlines.run())
        assert plain.attempts == 1, "a handler without options keeps the config's max_retries=0"
        assert len(journal.runs(other.id)) == 1

    def test_handler_max_retries_below_the_configs_stops_sooner(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=2)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("policy_no_retry")
        failed = wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.retries())
        assert failed.attempts == 1
        assert failed.error is not None and failed.error.type.endswith("HandlerFailure")
        hold_for(
            lambda: len(journal.runs(task.id)) == 1,
            deadlines.lease_windows(1),
            "policy_no_retry (max_retries=0) was retried",
        )

    @pytest.mark.parametrize(
        ("kind", "runs"), [("ValueError", 1), ("KeyError", 1), ("HandlerFailure", 3)]
    )
    def test_non_retryable_types_fail_at_once(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
        kind: str,
        runs: int,
    ) -> None:
        config = make_config(max_retries=2)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("policy_non_retryable", [kind])
        failed = wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.retries())
        assert failed.attempts == runs
        assert failed.error is not None and failed.error.type.endswith(kind)
        hold_for(
            lambda: len(journal.runs(task.id)) == runs,
            deadlines.lease_windows(1),
            f"policy_non_retryable raising {kind} did not run exactly {runs} time(s)",
        )

    @requires(Capability.RETRY_BACKOFF)
    def test_handler_backoff_separates_its_runs(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(
            max_retries=0, retry_backoff_s=0.05, retry_backoff_max_s=0.5, retry_jitter=False
        )
        policy = _policy(config, "policy_backoff")
        producer, deadlines = make_producer(config), _deadlines(config, "policy_backoff")
        consumers.start(config)
        task = producer.enqueue_task_sync("policy_backoff")
        wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.retries())
        runs = journal.runs(task.id)
        assert len(runs) == policy.max_attempts == 3
        gaps = [after.time - before.time for before, after in itertools.pairwise(runs)]
        for failed_attempt, gap in enumerate(gaps, 1):
            backoff = retry_delay_s(policy, failed_attempt)
            assert backoff > retry_delay_s(config, failed_attempt)
            assert gap >= backoff - _CLOCK_SLACK_S, (
                f"retry {failed_attempt} came {gap:.3f}s after the failed attempt, before "
                f"the handler's backoff of {backoff:.3f}s"
            )

    @requires(Capability.CRASH_REDELIVERY)
    def test_crashed_delivery_spends_the_handlers_budget(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=2)  # policy_crash allows one delivery only
        producer, deadlines = make_producer(config), Deadlines(config)
        first = consumers.start(config, concurrency=1)
        task = producer.enqueue_task_sync("policy_crash")
        wait_for_exit(first, deadlines.pickup, "the delivery did not kill its consumer")
        consumers.start(config, concurrency=1)
        failed = wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.redelivery)
        assert failed.error is not None and failed.error.type.endswith("ConsumerLost")
        assert failed.attempts == 1
        assert [run.attempt for run in journal.runs(task.id)] == [1]

    @requires(Capability.CRASH_REDELIVERY)
    def test_crashed_delivery_within_a_larger_handler_budget_runs_again(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=0)  # policy_crash_once allows a second delivery
        producer, deadlines = make_producer(config), Deadlines(config)
        first = consumers.start(config, concurrency=1)
        task = producer.enqueue_task_sync("policy_crash_once", kwargs={"result": "again"})
        wait_for_exit(first, deadlines.pickup, "the first delivery did not kill its consumer")
        consumers.start(config, concurrency=1)
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.redelivery)
        assert done.result == "again"
        assert done.attempts == 2
        assert [run.attempt for run in journal.runs(task.id)] == [1, 2]
