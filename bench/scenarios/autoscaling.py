"""Autoscaling: taskserve's queue-depth policy against Ray's AsyncInferenceAutoscalingPolicy.

The same consumer application (taskserve-celery on Redis, concurrency 1 per
replica, 1 to 3 replicas, one replica at the start) is deployed under each
policy with the same autoscaling settings; then ``tasks`` tasks of
``task_s`` seconds are enqueued at once, and the wall time until the last one
is SUCCESS is measured. The replicas Serve reports RUNNING and STOPPING are
sampled meanwhile: the peak of RUNNING, the replica-seconds of both (what the
run cost), and the replica-seconds spent STOPPING: an idle replica stops within
about a second, a busy one drains its task first, so draining time shows busy
replicas being scaled away. Both policies poll the broker every
``POLL_INTERVAL_S``.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.brokers import REDIS, REDIS_URL
from bench.engines.adapters import cleanup, processor_config
from bench.engines.base import TrialOptions
from bench.scenarios.local_serve import consumer_deployment

TASKSERVE_POLICY = "taskserve QueueDepthAutoscalingPolicy"
RAY_POLICY = "Ray AsyncInferenceAutoscalingPolicy"
POLICIES = (TASKSERVE_POLICY, RAY_POLICY)

POLL_INTERVAL_S = 1.0
SAMPLE_S = 0.5
AUTOSCALING_SETTINGS: dict[str, Any] = {
    "min_replicas": 1,
    "initial_replicas": 1,
    "max_replicas": 3,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 0,
    "downscale_delay_s": 5,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 2.0,
}
"""Serve's settings around either policy (the policy itself is added)."""


@dataclass(frozen=True)
class AutoscalingResult:
    """One policy's run; ``wall_s`` is None if the tasks did not all finish."""

    policy: str
    tasks: int
    task_s: float
    wall_s: float | None
    peak_replicas: int
    replica_seconds: float
    stopping_seconds: float
    redelivered: int
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    """(seconds, RUNNING, STOPPING) at each change."""


def _policy(name: str, config: Any) -> Any:
    if name == TASKSERVE_POLICY:
        from taskserve.serve import queue_depth_autoscaling_policy

        return queue_depth_autoscaling_policy(
            target_tasks_per_replica=1,
            task_processor_config=config,
            poll_interval_s=POLL_INTERVAL_S,
        )
    from ray.serve.async_inference_autoscaling_policy import AsyncInferenceAutoscalingPolicy
    from ray.serve.config import AutoscalingPolicy

    return AutoscalingPolicy(  # type: ignore[no-untyped-call]
        policy_function=AsyncInferenceAutoscalingPolicy,
        policy_kwargs={
            "broker_url": REDIS_URL,
            "queue_name": config.queue_name,
            "poll_interval_s": POLL_INTERVAL_S,
        },
    )


def _replicas(app: str) -> tuple[int, int]:
    """(RUNNING, STOPPING) replicas of the application's consumer."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or "consumer" not in status.deployments:
        return 0, 0
    states: dict[Any, int] = dict(status.deployments["consumer"].replica_states)
    return int(states.get("RUNNING", 0)), int(states.get("STOPPING", 0))


def run_policy(policy: str, tasks: int, task_s: float, workdir: Path) -> AutoscalingResult:
    """Deploy under ``policy``, enqueue the tasks, wait for all; clean up."""
    from ray import serve

    from taskserve import TaskState, instantiate_adapter_from_config

    run_id = uuid.uuid4().hex[:12]
    options = TrialOptions(run_id=run_id, concurrency=1, workdir=workdir, markers=workdir)
    config = processor_config("celery", REDIS, options)
    producer = instantiate_adapter_from_config(config)
    app = f"bench-{run_id}"
    settings = {**AUTOSCALING_SETTINGS, "policy": _policy(policy, config)}
    deployment = consumer_deployment(config, max_ongoing_requests=1, autoscaling_config=settings)
    samples: list[tuple[float, int, int]] = []
    wall: float | None = None
    try:
        serve.run(deployment.bind(), name=app, route_prefix=None)
        started = time.perf_counter()
        ids = [producer.enqueue_task_sync("hold", [task_s]).id for _ in range(tasks)]
        deadline = time.monotonic() + tasks * task_s * 2 + 120
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            samples.append((time.perf_counter() - started, *_replicas(app)))
            pending = {
                i
                for i in pending
                if producer.get_task_status_sync(i).status is not TaskState.SUCCESS
            }
            if pending:
                time.sleep(SAMPLE_S)
        if not pending:
            wall = time.perf_counter() - started
        redelivered = sum(producer.get_task_status_sync(i).attempts > 1 for i in ids)
    finally:
        serve.delete(app)
        producer.shutdown()
        cleanup("celery", config)
    spans = [(later[0] - sample[0], sample) for sample, later in itertools.pairwise(samples)]
    changes = [
        (round(moment, 1), running, stopping)
        for i, (moment, running, stopping) in enumerate(samples)
        if i == 0 or (running, stopping) != samples[i - 1][1:]
    ]
    return AutoscalingResult(
        policy=policy,
        tasks=tasks,
        task_s=task_s,
        wall_s=wall,
        peak_replicas=max((running for _, running, _ in samples), default=0),
        replica_seconds=sum(span * (running + stopping) for span, (_, running, stopping) in spans),
        stopping_seconds=sum(span * stopping for span, (_, _, stopping) in spans),
        redelivered=redelivered,
        timeline=changes,
    )
