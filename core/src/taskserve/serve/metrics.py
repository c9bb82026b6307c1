"""Ray metrics of task processing, built on taskserve's lifecycle hooks.

:class:`RayMetricsPlugin` implements the ``taskserve_task_*`` hooks and records
them with ``ray.util.metrics``. Every process connected to Ray registers it,
once (:func:`register_ray_metrics_in_ray`), when it starts a consumer (a
``@task_consumer`` replica) or builds a producer
(:func:`~taskserve.instantiate_adapter_from_config`, which the HTTP ingress
uses, or :func:`~taskserve.serve.TaskAdapter`), so each event is counted once,
in the process where it happened: enqueues and cancels of queued tasks where
they are requested, attempts in the consumer. A process not connected to Ray
(a plain script) registers nothing and never imports Ray. Exported (with Ray's
``ray_`` prefix) on the Ray metrics endpoint and dashboards:

- counters ``taskserve_tasks_{enqueued,started,succeeded,failed,retried,
  dead_lettered,cancelled}_total``
- histograms ``taskserve_task_run_time_seconds`` and
  ``taskserve_task_queue_wait_seconds``
- gauges ``taskserve_queue_depth`` and ``taskserve_queue_in_flight``, set by
  each consumer replica about once a second from ``get_metrics_sync()``: the
  depth counts the tasks that can still run (PENDING or RETRY in the task
  store), never a cancelled task whose message is still on the broker

Tags: ``queue``, ``adapter`` and, where known, ``task``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from taskserve.hooks import TaskEvent, hookimpl
from taskserve.models import AdapterMetrics

PLUGIN_NAME = "taskserve-ray-metrics"

RUN_TIME_BOUNDARIES_S = [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]
QUEUE_WAIT_BOUNDARIES_S = [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600]

_COUNTERS = {
    "enqueued": "Tasks accepted by the broker.",
    "started": "Task attempts started by a consumer.",
    "succeeded": "Tasks that succeeded.",
    "failed": "Tasks that failed for good.",
    "retried": "Failed attempts followed by a retry.",
    "dead_lettered": "Records written to a dead-letter queue.",
    "cancelled": "Tasks that became CANCELLED.",
}

TASK_TAGS = ("queue", "adapter", "task")
QUEUE_TAGS = ("queue", "adapter")

MetricFactory = Callable[..., Any]


def _ray_factories() -> dict[str, MetricFactory]:
    from ray.util import metrics

    return {"counter": metrics.Counter, "histogram": metrics.Histogram, "gauge": metrics.Gauge}


class RayMetricsPlugin:
    """Hook implementations recording task metrics.

    ``factories`` maps ``counter``/``histogram``/``gauge`` to metric classes with
    the ``ray.util.metrics`` signatures (default: Ray's own).
    """

    def __init__(self, factories: dict[str, MetricFactory] | None = None) -> None:
        made = factories or _ray_factories()
        self.counters = {
            event: made["counter"](
                f"taskserve_tasks_{event}_total", description=text, tag_keys=TASK_TAGS
            )
            for event, text in _COUNTERS.items()
        }
        self.run_time = made["histogram"](
            "taskserve_task_run_time_seconds",
            description="Run time of task attempts that finished.",
            boundaries=RUN_TIME_BOUNDARIES_S,
            tag_keys=TASK_TAGS,
        )
        self.queue_wait = made["histogram"](
            "taskserve_task_queue_wait_seconds",
            description="Time from enqueue to the start of an attempt.",
            boundaries=QUEUE_WAIT_BOUNDARIES_S,
            tag_keys=TASK_TAGS,
        )
        self.queue_depth = made["gauge"](
            "taskserve_queue_depth",
            description="Tasks waiting to run (PENDING or RETRY; cancelled ones not counted).",
            tag_keys=QUEUE_TAGS,
        )
        self.queue_in_flight = made["gauge"](
            "taskserve_queue_in_flight",
            description="Tasks fetched by consumers and running.",
            tag_keys=QUEUE_TAGS,
        )

    @staticmethod
    def _tags(event: TaskEvent) -> dict[str, str]:
        return {
            "queue": event.queue_name,
            "adapter": event.adapter,
            "task": event.task_name or "",
        }

    def _count(self, name: str, event: TaskEvent) -> None:
        self.counters[name].inc(1, tags=self._tags(event))

    def _observe_run_time(self, event: TaskEvent) -> None:
        if event.run_time_s is not None:
            self.run_time.observe(event.run_time_s, tags=self._tags(event))

    @hookimpl
    def taskserve_task_enqueued(self, event: TaskEvent) -> None:
        """Count an enqueued task."""
        self._count("enqueued", event)

    @hookimpl
    def taskserve_task_started(self, event: TaskEvent) -> None:
        """Count a started attempt and record how long it waited."""
        self._count("started", event)
        if event.queue_wait_s is not None:
            self.queue_wait.observe(event.queue_wait_s, tags=self._tags(event))

    @hookimpl
    def taskserve_task_retried(self, event: TaskEvent) -> None:
        """Count a retry and record the failed attempt's run time."""
        self._count("retried", event)
        self._observe_run_time(event)

    @hookimpl
    def taskserve_task_succeeded(self, event: TaskEvent) -> None:
        """Count a success and record its run time."""
        self._count("succeeded", event)
        self._observe_run_time(event)

    @hookimpl
    def taskserve_task_failed(self, event: TaskEvent) -> None:
        """Count a final failure and record its run time."""
        self._count("failed", event)
        self._observe_run_time(event)

    @hookimpl
    def taskserve_task_dead_lettered(self, event: TaskEvent) -> None:
        """Count a dead-letter record."""
        self._count("dead_lettered", event)

    @hookimpl
    def taskserve_task_cancelled(self, event: TaskEvent) -> None:
        """Count a cancellation."""
        self._count("cancelled", event)
        self._observe_run_time(event)

    def observe_queue(self, metrics: AdapterMetrics, adapter: str) -> None:
        """Set the queue-depth and in-flight gauges."""
        tags = {"queue": metrics.queue_name, "adapter": adapter}
        self.queue_depth.set(metrics.queue_depth, tags=tags)
        self.queue_in_flight.set(metrics.in_flight, tags=tags)


_lock = threading.Lock()


def register_ray_metrics(plugin: RayMetricsPlugin | None = None) -> RayMetricsPlugin:
    """Register the metrics plugin with taskserve's plugin manager, once per
    process; return the registered instance."""
    from taskserve.plugins import get_plugin_manager

    manager = get_plugin_manager()
    with _lock:
        existing = manager.get_plugin(PLUGIN_NAME)
        if isinstance(existing, RayMetricsPlugin):
            return existing
        registered = plugin or RayMetricsPlugin()
        manager.register(registered, name=PLUGIN_NAME)
        return registered


def ray_is_initialized() -> bool:
    """Whether this process is connected to Ray (a driver after ``ray.init``, a
    Serve replica, a task or actor worker). Never imports Ray: a process that has
    not imported it is not connected."""
    ray = sys.modules.get("ray")
    is_initialized = getattr(ray, "is_initialized", None)
    if not callable(is_initialized):
        return False
    try:
        return bool(is_initialized())
    except Exception:
        return False


def register_ray_metrics_in_ray() -> RayMetricsPlugin | None:
    """Register the metrics plugin (:func:`register_ray_metrics`, once per process)
    if this process is connected to Ray, and return it; otherwise register
    nothing, import nothing and return None."""
    if not ray_is_initialized():
        return None
    return register_ray_metrics()
