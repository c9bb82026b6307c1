"""Health and metrics (SPEC §3.1).

Promises checked: the health check reports a reachable broker as healthy and
an unreachable one as unhealthy; a consumer started in process runs tasks,
shows in the health report, and stops on ``stop_consumer``; with
``queue_metrics``, queue depth counts queued tasks (not those cancelled
while their message is still on the broker, nor delayed ones once cancelled),
in-flight counts tasks being run, and dead-letter counts follow the
dead-letter queues. The ``..._async`` twins return the same reports.
"""

from __future__ import annotations

import pytest

from taskserve import (
    Capability,
    TaskProcessorAdapter,
    TaskProcessorConfig,
    TaskState,
)
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.handlers import HANDLERS
from taskserve_conformance.harness import BrokerHarness, unreachable_adapter_config
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import run_async, wait_for_status, wait_until


def _depth_and_in_flight(producer: TaskProcessorAdapter) -> tuple[int, int]:
    metrics = producer.get_metrics_sync()
    return metrics.queue_depth, metrics.in_flight


class HealthAndMetricsTests:
    """§3.1: health checks, in-process consumers, and queue metrics."""

    def test_health_of_a_reachable_broker(self, producer: TaskProcessorAdapter) -> None:
        report = producer.health_check_sync()
        assert report.healthy and report.broker_reachable, report.detail
        assert report.consumer_running is None
        assert run_async(producer.health_check_async()).healthy

    def test_health_of_an_unreachable_broker(
        self,
        adapter_class: type[TaskProcessorAdapter],
        config: TaskProcessorConfig,
        harness: BrokerHarness,
    ) -> None:
        unreachable = config.model_copy(
            update={
                "adapter_config": adapter_class.config_model.model_validate(
                    dict(unreachable_adapter_config(harness, config))
                )
            }
        )
        report = adapter_class(unreachable).health_check_sync()
        assert not report.healthy
        assert not report.broker_reachable
        assert report.detail

    def test_in_process_consumer_runs_tasks_and_stops(
        self,
        make_producer: ProducerFactory,
        config: TaskProcessorConfig,
        journal: Journal,
        deadlines: Deadlines,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        for name, value in journal.env.items():
            monkeypatch.setenv(name, value)
        consumer, producer = make_producer(config), make_producer(config)
        consumer.initialize(consumer_concurrency=2)
        for name, handler in HANDLERS.items():
            consumer.register_task_handle(handler, name)
        assert "echo" in consumer.registered_task_names
        consumer.start_consumer()
        try:
            assert consumer.consumer_started
            report = consumer.health_check_sync()
            assert report.healthy and report.consumer_running, report.detail
            task = producer.enqueue_task_sync("async_echo", ["in process"])
            done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run())
            assert done.result == {"args": ["in process"], "kwargs": {}}
        finally:
            consumer.stop_consumer(timeout=deadlines.pickup)
        assert not consumer.consumer_started
        assert consumer.health_check_sync().consumer_running is None

    @requires(Capability.QUEUE_METRICS)
    def test_queue_depth_counts_queued_tasks(self, producer: TaskProcessorAdapter) -> None:
        for _ in range(3):
            producer.enqueue_task_sync("noop")
        metrics = wait_until(
            lambda: m if (m := producer.get_metrics_sync()).queue_depth == 3 else None,
            Deadlines(producer.config).pickup,
            "queue depth did not count the 3 queued tasks",
            describe=lambda: producer.get_metrics_sync(),
        )
        assert metrics.queue_name == producer.config.queue_name
        assert metrics.in_flight == 0
        assert run_async(producer.get_metrics_async()).queue_depth == 3

    @requires(Capability.QUEUE_METRICS, Capability.CANCEL_PENDING)
    def test_queue_depth_leaves_out_cancelled_tasks(self, producer: TaskProcessorAdapter) -> None:
        """Five tasks enqueued with no consumer running, two cancelled: the depth
        reads three, however many messages the broker still holds. With delayed
        tasks, one more enqueued and cancelled before it is due changes nothing."""
        tasks = [producer.enqueue_task_sync("noop") for _ in range(5)]
        if producer.supports(Capability.DELAYED_TASKS):
            tasks.append(producer.enqueue_task_sync("noop", delay_s=300))
        for task in tasks[3:]:
            outcome = producer.cancel_task_sync(task.id)
            assert outcome.cancelled and outcome.status is TaskState.CANCELLED, outcome
        metrics = wait_until(
            lambda: m if (m := producer.get_metrics_sync()).queue_depth == 3 else None,
            Deadlines(producer.config).pickup,
            f"queue depth did not read 3 after cancelling {len(tasks) - 3} of {len(tasks)} tasks",
            describe=lambda: producer.get_metrics_sync(),
        )
        assert metrics.in_flight == 0
        assert run_async(producer.get_metrics_async()).queue_depth == 3

    @requires(Capability.QUEUE_METRICS)
    def test_in_flight_counts_running_tasks(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        consumers.start(concurrency=2)
        running = [producer.enqueue_task_sync("wait_for_gate", ["metrics"]) for _ in range(2)]
        wait_until(
            lambda: all(journal.runs(t.id) for t in running),
            deadlines.pickup,
            "the consumer did not start both tasks",
        )
        producer.enqueue_task_sync("noop")
        wait_until(
            lambda: _depth_and_in_flight(producer) == (1, 2),
            deadlines.pickup,
            "expected queue depth 1 and 2 in flight",
            describe=lambda: producer.get_metrics_sync(),
        )
        journal.open_gate("metrics")
        wait_until(
            lambda: _depth_and_in_flight(producer) == (0, 0),
            deadlines.run(tasks=3),
            "expected an empty queue and nothing in flight",
            describe=lambda: producer.get_metrics_sync(),
        )

    @requires(Capability.QUEUE_METRICS, Capability.DEAD_LETTERS)
    def test_metrics_count_dead_letters(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
    ) -> None:
        config = make_config(max_retries=0)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        producer.enqueue_task_sync("always_fail")
        producer.enqueue_task_sync("no_such_task")
        wait_until(
            lambda: (
                (m := producer.get_metrics_sync()).dead_letters_failed == 1
                and m.dead_letters_unprocessable == 1
            ),
            deadlines.run(tasks=2),
            "expected one failed and one unprocessable dead letter",
            describe=lambda: producer.get_metrics_sync(),
        )
