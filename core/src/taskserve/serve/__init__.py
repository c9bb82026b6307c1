"""Ray Serve integration: task consumer deployments and their operation.

- :func:`task_consumer` / :func:`task_handler` (module ``decorators``): a Serve
  deployment class that consumes a queue, as in Ray Serve's guide.
- ``consumer``: the replica's consumer lifecycle (start in ``__init__``,
  graceful drain on shutdown); ``health``: when ``check_health`` fails.
- ``autoscaling``: :class:`QueueDepthAutoscalingPolicy`, scaling on queued plus
  in-flight tasks.
- ``metrics``: Ray metrics recorded from taskserve's lifecycle hooks.
- ``compat``: :func:`route`, :func:`deployment` and :class:`TaskAdapter`, the
  names Ray Serve's PDF template uses.

This module also stands in for ``ray.serve``: any other attribute
(``serve.run``, ``serve.ingress``, ``serve.shutdown`` ...) is Ray Serve's own,
so ``from taskserve import serve`` replaces ``from ray import serve``. Ray is
imported only when such an attribute or a Serve feature is used.
"""

from __future__ import annotations

from typing import Any

from taskserve.serve.autoscaling import (
    QueueDepthAutoscalingPolicy,
    queue_depth_autoscaling_policy,
)
from taskserve.serve.compat import TaskAdapter, deployment, route
from taskserve.serve.consumer import ConsumerRuntime, ReplicaSettings
from taskserve.serve.decorators import get_consumer, task_consumer, task_handler
from taskserve.serve.health import ConsumerUnhealthy

__all__ = [
    "ConsumerRuntime",
    "ConsumerUnhealthy",
    "QueueDepthAutoscalingPolicy",
    "RayMetricsPlugin",
    "ReplicaSettings",
    "TaskAdapter",
    "deployment",
    "get_consumer",
    "queue_depth_autoscaling_policy",
    "register_ray_metrics",
    "route",
    "task_consumer",
    "task_handler",
]

_METRICS_NAMES = {"RayMetricsPlugin", "register_ray_metrics"}


def __getattr__(name: str) -> Any:
    if name in _METRICS_NAMES:
        from taskserve.serve import metrics

        return getattr(metrics, name)
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        from ray import serve as ray_serve
    except ImportError as e:
        raise AttributeError(
            f"taskserve.serve has no attribute '{name}' and Ray Serve is not installed "
            "(pip install 'taskserve[serve]')"
        ) from e
    try:
        return getattr(ray_serve, name)
    except AttributeError as e:
        raise AttributeError(
            f"neither taskserve.serve nor ray.serve has an attribute '{name}'"
        ) from e
