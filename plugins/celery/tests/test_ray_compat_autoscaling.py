"""Ray Serve's queue-autoscaling scenarios on taskserve-celery, in a real Serve application.

Each test is named after the test of Ray 2.60's
``python/ray/serve/tests/test_task_consumer_autoscaling.py`` whose scenario
it plays, on Redis as there: a consumer deployment of
``max_ongoing_requests=1`` whose handlers block on a signal, the same
autoscaling config, and Ray's policy arguments (``broker_url``,
``queue_name``, ``poll_interval_s``) given to taskserve's policy
(``taskserve.serve.autoscaling:QueueDepthAutoscalingPolicy``, which also
counts the tasks replicas are running, SPEC §6.5 and §9). Differences of the
set-up, not of the scenario: replicas ask for no CPU (the Ray these tests
share has 4 logical CPUs, and the scenario scales to 5 replicas), running
replicas are counted from ``serve.status()`` (Ray's tests read its
controller's internals), and queue names take a unique suffix so that runs
do not meet.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="these scenarios need ray[serve]")

from ray import serve  # noqa: E402
from ray._common.test_utils import SignalActor, wait_for_condition  # noqa: E402
from ray.serve.config import AutoscalingConfig, AutoscalingPolicy  # noqa: E402

from taskserve import (  # noqa: E402
    TaskProcessorConfig,
    instantiate_adapter_from_config,
    task_consumer,
    task_handler,
)
from taskserve_celery import CeleryAdapterConfig  # noqa: E402
from taskserve_celery.testing import CeleryHarness  # noqa: E402

pytest_plugins = ["taskserve_conformance.plugin"]

BROKER = "redis://127.0.0.1:6379/0"
BACKEND = "redis://127.0.0.1:6379/1"
POLICY = "taskserve.serve.autoscaling:QueueDepthAutoscalingPolicy"


@ray.remote
def enqueue_from_ray(config: TaskProcessorConfig, value: Any) -> str:
    """Enqueue one ``process`` task from a Ray worker process; its id."""
    return instantiate_adapter_from_config(config).enqueue_task_sync("process", args=[value]).id


def running_replicas(app: str, deployment: str) -> int:
    """Replicas of ``deployment`` in state RUNNING, from ``serve.status()``."""
    application = serve.status().applications.get(app)
    if application is None or deployment not in application.deployments:
        return 0
    return int(application.deployments[deployment].replica_states.get("RUNNING", 0))


# One worker and its Ray for these tests and other Serve classes (scripts/test.sh).
pytestmark = pytest.mark.xdist_group("serve-ray-2")


@pytest.fixture
def config(serve_instance: str) -> Iterator[TaskProcessorConfig]:
    config = TaskProcessorConfig(
        queue_name=f"autoscaling_test_queue_{uuid.uuid4().hex[:10]}",
        adapter_config=CeleryAdapterConfig(broker_url=BROKER, backend_url=BACKEND),
    )
    yield config
    for name in list(serve.status().applications):
        serve.delete(name)
    CeleryHarness().cleanup(config)


def blocking_consumer(
    config: TaskProcessorConfig, name: str, autoscaling: AutoscalingConfig
) -> Any:
    """A consumer deployment whose ``process`` handler waits for a signal."""

    @serve.deployment(
        name=name,
        max_ongoing_requests=1,
        ray_actor_options={"num_cpus": 0},
        autoscaling_config=autoscaling,
    )
    @task_consumer(task_processor_config=config)
    class Consumer:
        def __init__(self, gate: Any) -> None:
            self.gate = gate

        @task_handler(name="process")
        def process(self, data: Any) -> None:
            ray.get(self.gate.wait.remote())

    return Consumer


class TestTaskConsumerQueueAutoscaling:
    def test_task_consumer_queue_autoscaling(self, config: TaskProcessorConfig) -> None:
        app, deployment = "autoscaling_app", "AutoscalingConsumer"
        autoscaling = AutoscalingConfig(
            min_replicas=1,
            max_replicas=5,
            target_ongoing_requests=1,
            upscale_delay_s=0,
            downscale_delay_s=0,
            metrics_interval_s=0.1,
            look_back_period_s=0.5,
            policy=AutoscalingPolicy(
                policy_function=POLICY,
                policy_kwargs={"broker_url": BROKER, "queue_name": config.queue_name},
            ),
        )
        gate = SignalActor.remote()
        consumer = blocking_consumer(config, deployment, autoscaling)
        serve.run(consumer.bind(gate), name=app, route_prefix="/autoscaling")
        wait_for_condition(lambda: running_replicas(app, deployment) == 1, timeout=30)

        for i in range(10):  # the handlers block: the queue piles up
            enqueue_from_ray.remote(config, f"data_{i}")
        # Four replicas start at once: on a loaded two-core machine that takes minutes.
        wait_for_condition(lambda: running_replicas(app, deployment) == 5, timeout=150)

        ray.get(gate.send.remote())  # the queue drains
        wait_for_condition(lambda: running_replicas(app, deployment) == 1, timeout=60)

    def test_task_consumer_scale_from_and_to_zero(self, config: TaskProcessorConfig) -> None:
        app, deployment = "scale_to_zero_app", "ScaleToZeroConsumer"
        autoscaling = AutoscalingConfig(
            min_replicas=0,
            max_replicas=5,
            target_ongoing_requests=1,
            upscale_delay_s=0,
            downscale_delay_s=0,
            downscale_to_zero_delay_s=5,
            metrics_interval_s=0.1,
            look_back_period_s=0.5,
            policy=AutoscalingPolicy(
                policy_function=POLICY,
                policy_kwargs={
                    "broker_url": BROKER,
                    "queue_name": config.queue_name,
                    "poll_interval_s": 1,
                },
            ),
        )
        gate = SignalActor.remote()
        consumer = blocking_consumer(config, deployment, autoscaling)
        serve.run(consumer.bind(gate), name=app, route_prefix="/scale_to_zero")
        wait_for_condition(lambda: running_replicas(app, deployment) == 0, timeout=60)

        enqueue_from_ray.remote(config, "data_0")  # from zero replicas: the broker is polled
        wait_for_condition(lambda: running_replicas(app, deployment) == 1, timeout=60)

        ray.get(gate.send.remote())
        wait_for_condition(lambda: running_replicas(app, deployment) == 0, timeout=60)
