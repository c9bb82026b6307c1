"""Ray Serve's queue-autoscaling scenarios on taskserve-celery, in a real Serve application.

Each test mirrors the test of the same name in Ray 2.60's
``python/ray/serve/tests/test_task_consumer_autoscaling.py``, on Redis as
there: the same deployment, autoscaling config and policy arguments
(``broker_url``, ``queue_name``, ``poll_interval_s``), with Ray's imports
replaced by taskserve's - the policy's import path included
(``taskserve.serve.autoscaling:QueueDepthAutoscalingPolicy``, which also
counts the tasks replicas are running, SPEC §6.5 and §9). Differences of the
set-up, not of the scenario: replicas ask for no CPU (the Ray these tests share
has 4 logical CPUs, and the scenario scales to 5 replicas), running replicas
are counted from ``serve.status()`` (Ray's tests read its controller's
internals), and queue names take a unique suffix so that runs do not meet.
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

REDIS_ADDRESS = "127.0.0.1:6379"
POLICY = "taskserve.serve.autoscaling:QueueDepthAutoscalingPolicy"


@ray.remote
def enqueue_task(
    processor_config: TaskProcessorConfig, data: Any, task_name: str = "process"
) -> str:
    adapter = instantiate_adapter_from_config(task_processor_config=processor_config)
    result = adapter.enqueue_task_sync(task_name, args=[data])
    assert result.id is not None
    return result.id


def get_num_running_replicas(deployment_name: str, app_name: str) -> int:
    """Running replicas of a deployment, from ``serve.status()``."""
    application = serve.status().applications.get(app_name)
    if application is None or deployment_name not in application.deployments:
        return 0
    states = application.deployments[deployment_name].replica_states
    return int(states.get("RUNNING", 0))


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = f"autoscaling_test_queue_{uuid.uuid4().hex[:10]}"
    yield name
    CeleryHarness().cleanup(
        TaskProcessorConfig(
            queue_name=name,
            adapter_config=CeleryAdapterConfig(
                broker_url=f"redis://{REDIS_ADDRESS}/0", backend_url=f"redis://{REDIS_ADDRESS}/1"
            ),
        )
    )


class TestTaskConsumerQueueAutoscaling:
    """Mirrors Ray's ``TestTaskConsumerQueueAutoscaling``."""

    def test_task_consumer_queue_autoscaling(self, serve_instance: str, queue_name: str) -> None:
        redis_address = REDIS_ADDRESS
        app_name = "autoscaling_app"
        deployment_name = "AutoscalingConsumer"

        processor_config = TaskProcessorConfig(
            queue_name=queue_name,
            adapter_config=CeleryAdapterConfig(
                broker_url=f"redis://{redis_address}/0",
                backend_url=f"redis://{redis_address}/1",
            ),
        )

        signal = SignalActor.remote()

        @serve.deployment(
            name=deployment_name,
            max_ongoing_requests=1,
            ray_actor_options={"num_cpus": 0},
            autoscaling_config=AutoscalingConfig(
                min_replicas=1,
                max_replicas=5,
                target_ongoing_requests=1,
                upscale_delay_s=0,
                downscale_delay_s=0,
                metrics_interval_s=0.1,
                look_back_period_s=0.5,
                policy=AutoscalingPolicy(
                    policy_function=POLICY,
                    policy_kwargs={
                        "broker_url": f"redis://{redis_address}/0",
                        "queue_name": queue_name,
                    },
                ),
            ),
        )
        @task_consumer(task_processor_config=processor_config)
        class AutoscalingConsumer:
            def __init__(self, signal_actor: Any) -> None:
                self._signal = signal_actor

            @task_handler(name="process")
            def process(self, data: Any) -> None:
                ray.get(self._signal.wait.remote())

        serve.run(AutoscalingConsumer.bind(signal), name=app_name, route_prefix="/autoscaling")
        try:
            wait_for_condition(
                lambda: get_num_running_replicas(deployment_name, app_name) == 1, timeout=30
            )

            num_tasks = 10
            for i in range(num_tasks):
                enqueue_task.remote(processor_config, f"data_{i}")

            wait_for_condition(
                lambda: get_num_running_replicas(deployment_name, app_name) == 5, timeout=60
            )

            ray.get(signal.send.remote())

            wait_for_condition(
                lambda: get_num_running_replicas(deployment_name, app_name) == 1, timeout=60
            )
        finally:
            serve.delete(app_name)

    def test_task_consumer_scale_from_and_to_zero(
        self, serve_instance: str, queue_name: str
    ) -> None:
        redis_address = REDIS_ADDRESS
        app_name = "scale_to_zero_app"
        deployment_name = "ScaleToZeroConsumer"

        processor_config = TaskProcessorConfig(
            queue_name=queue_name,
            adapter_config=CeleryAdapterConfig(
                broker_url=f"redis://{redis_address}/0",
                backend_url=f"redis://{redis_address}/1",
            ),
        )

        signal = SignalActor.remote()

        @serve.deployment(
            name=deployment_name,
            max_ongoing_requests=1,
            ray_actor_options={"num_cpus": 0},
            autoscaling_config=AutoscalingConfig(
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
                        "broker_url": f"redis://{redis_address}/0",
                        "queue_name": queue_name,
                        "poll_interval_s": 1,
                    },
                ),
            ),
        )
        @task_consumer(task_processor_config=processor_config)
        class ScaleToZeroConsumer:
            def __init__(self, signal_actor: Any) -> None:
                self._signal = signal_actor

            @task_handler(name="process")
            def process(self, data: Any) -> None:
                ray.get(self._signal.wait.remote())

        serve.run(ScaleToZeroConsumer.bind(signal), name=app_name, route_prefix="/scale_to_zero")
        try:
            wait_for_condition(
                lambda: get_num_running_replicas(deployment_name, app_name) == 0, timeout=60
            )

            enqueue_task.remote(processor_config, "data_0")

            wait_for_condition(
                lambda: get_num_running_replicas(deployment_name, app_name) == 1, timeout=60
            )

            ray.get(signal.send.remote())

            wait_for_condition(
                lambda: get_num_running_replicas(deployment_name, app_name) == 0, timeout=60
            )
        finally:
            serve.delete(app_name)
