"""A queue-depth autoscaling policy for task consumer deployments (Ray Serve 2.60+).

Serve's request-based autoscaler sees no HTTP traffic on a consumer, and a
policy that counts only queued messages scales away replicas that are busy
with tasks they already fetched. :class:`QueueDepthAutoscalingPolicy` counts
the whole workload, for every adapter, through the adapter contract:

    workload = queued tasks + tasks running (in flight) + HTTP requests
    desired  = max(ceil(workload / target_tasks_per_replica), busy replicas)

where a *busy* replica reported running tasks during the look-back window, or
sent no report in it (a replica not known to be idle), so the decision never
drops below the replicas that are working. Queued tasks are those that can
still run, as the task store counts them
(``get_metrics_sync().queue_depth``): a task cancelled while its message is
still on the broker is not work and is not counted. Until a replica
has reported (or the broker was polled) the policy keeps the current target.
Serve, not the policy, picks which replica to stop on a scale-down; a busy
one that is picked drains (running tasks finish within
``graceful_shutdown_timeout_s``, unstarted ones are handed back at once). The numbers come
from the consumer replicas (each reports ``taskserve_queue_depth`` and its
``taskserve_in_flight`` through ``record_autoscaling_stats``) and, when a
``task_processor_config`` is given, from polling the broker directly in a
background thread (needed to scale up from zero replicas).

Usage::

    @serve.deployment(autoscaling_config={
        "min_replicas": 1, "max_replicas": 8,
        "policy": queue_depth_autoscaling_policy(target_tasks_per_replica=4),
    })
    @task_consumer(task_processor_config=config)
    class Worker: ...

Serve applies ``upscale_delay_s``, ``downscale_delay_s``, the replica bounds
and the scaling factors around the policy, as for any custom policy.

The policy also takes the arguments of Ray Serve's
``AsyncInferenceAutoscalingPolicy`` (``broker_url``, ``queue_name``,
``poll_interval_s``; ``rabbitmq_management_url`` is not needed), so Ray's
``AutoscalingPolicy(policy_function=..., policy_kwargs={...})`` runs with only
the policy's import path changed: it then polls the broker's queue length as
Ray's does (the Celery adapter reads it), which is what scales up from zero,
and the replicas' reports add the tasks in flight. The broker's length counts
the messages of cancelled tasks too (those arguments do not say where the task
store is), so once a replica reports its queue depth, read from the store, that
depth is used instead; the broker's length counts only while no replica reports
one (at zero replicas, a queue of cancelled tasks alone can start one replica,
which skips them, reports an empty queue and is scaled away again).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

QUEUE_DEPTH_METRIC = "taskserve_queue_depth"
IN_FLIGHT_METRIC = "taskserve_in_flight"
BROKER_IN_FLIGHT_METRIC = "taskserve_broker_in_flight"
POLICY_PATH = "taskserve.serve.autoscaling:QueueDepthAutoscalingPolicy"


def _series_values(series: Any) -> list[float]:
    """Values of a Serve TimeSeries (a list of timestamped points) or a number."""
    if isinstance(series, (int, float)):
        return [float(series)]
    values = []
    for point in series or []:
        value = getattr(point, "value", point)
        if isinstance(value, (int, float)):
            values.append(float(value))
    return values


def _running_replicas(ctx: Any) -> set[Any]:
    """The replicas Serve reports running (empty when the context names none)."""
    return set(getattr(ctx, "running_replicas", None) or [])


def _per_replica(ctx: Any, name: str, latest: bool) -> dict[Any, float]:
    """One number per running replica for custom metric ``name``: its latest
    value (``latest``) or its peak over the look-back window."""
    running = _running_replicas(ctx)
    raw = getattr(ctx, "raw_metrics", None) or {}
    found: dict[Any, float] = {}
    for replica, series in (raw.get(name) or {}).items():
        values = _series_values(series)
        if values and (not running or replica in running):
            found[replica] = values[-1] if latest else max(values)
    if found:
        return found
    aggregated = getattr(ctx, "aggregated_metrics", None) or {}
    for replica, value in (aggregated.get(name) or {}).items():
        if isinstance(value, (int, float)) and (not running or replica in running):
            found[replica] = float(value)
    return found


def _load_config(source: Any) -> Any:
    """A TaskProcessorConfig from a mapping, an import path or a YAML path."""
    from taskserve.config import TaskProcessorConfig

    if (
        isinstance(source, str)
        and ":" in source
        and not source.endswith((".yaml", ".yml", ".json"))
        and not source.lstrip().startswith("{")
        and "\n" not in source
    ):
        import importlib

        module_name, _, attribute = source.partition(":")
        value = getattr(importlib.import_module(module_name), attribute)
        return _load_config(value)
    return TaskProcessorConfig.load(source)


class QueueDepthAutoscalingPolicy:
    """Scales a ``@task_consumer`` deployment on queued plus in-flight tasks.

    Args:
        target_tasks_per_replica: tasks (queued or running) one replica should
            carry; default the deployment's ``target_ongoing_requests``.
        task_processor_config: optional; the queue to poll directly (a mapping
            of TaskProcessorConfig fields, ``"package.module:CONFIG"``, or a
            YAML file). Needed to scale up from zero replicas.
        poll_interval_s: how often the broker is polled when configured.
        broker_url, queue_name: Ray Serve's policy arguments, instead of
            ``task_processor_config``: the Celery broker and queue whose length
            is polled (as Ray's policy does); it counts only until a replica
            reports the queue's depth from the task store.
        rabbitmq_management_url: accepted as Ray's policy takes it; not needed
            (the queue length is read over AMQP).
    """

    def __init__(
        self,
        target_tasks_per_replica: float | None = None,
        task_processor_config: Any = None,
        poll_interval_s: float = 5.0,
        *,
        broker_url: str | None = None,
        queue_name: str | None = None,
        rabbitmq_management_url: str | None = None,
    ) -> None:
        if target_tasks_per_replica is not None and target_tasks_per_replica <= 0:
            raise ValueError("target_tasks_per_replica must be positive")
        if (broker_url is None) != (queue_name is None):
            raise ValueError("give broker_url and queue_name together (Ray Serve's arguments)")
        if broker_url is not None and task_processor_config is not None:
            raise ValueError("give task_processor_config or broker_url and queue_name, not both")
        self.target_tasks_per_replica = target_tasks_per_replica
        self._broker = (broker_url, queue_name) if broker_url and queue_name else None
        self._config_source = task_processor_config
        self._poll_interval_s = poll_interval_s
        self._adapter: Any = None
        self._polled: tuple[int, int] | None = None
        self._poll_thread: threading.Thread | None = None
        self._last_poll = 0.0

    def _poll_once(self) -> None:
        if self._broker is not None:
            try:
                from taskserve.registry import resolve_adapter

                depth = resolve_adapter("celery").broker_queue_length(*self._broker)
                self._polled = (depth, 0)
            except Exception as e:
                logger.warning("taskserve autoscaling: polling the queue failed: %s", e)
            return
        try:
            if self._adapter is None:
                from taskserve.factory import instantiate_adapter_from_config

                self._adapter = instantiate_adapter_from_config(_load_config(self._config_source))
            metrics = self._adapter.get_metrics_sync()
            self._polled = (metrics.queue_depth, metrics.in_flight)
        except Exception as e:
            logger.warning("taskserve autoscaling: polling the queue failed: %s", e)

    def _maybe_poll(self) -> None:
        if self._config_source is None and self._broker is None:
            return
        thread = self._poll_thread
        now = time.monotonic()
        if (
            thread is None or not thread.is_alive()
        ) and now - self._last_poll >= self._poll_interval_s:
            self._last_poll = now
            self._poll_thread = threading.Thread(
                target=self._poll_once, name="taskserve-autoscaling-poll", daemon=True
            )
            self._poll_thread.start()

    def workload(self, ctx: Any) -> dict[str, float]:
        """The numbers a decision is made from."""
        self._maybe_poll()
        depth_by_replica = _per_replica(ctx, QUEUE_DEPTH_METRIC, latest=True)
        broker_by_replica = _per_replica(ctx, BROKER_IN_FLIGHT_METRIC, latest=True)
        local_latest = _per_replica(ctx, IN_FLIGHT_METRIC, latest=True)
        local_peak = _per_replica(ctx, IN_FLIGHT_METRIC, latest=False)
        queue_depth = max(depth_by_replica.values(), default=0.0)
        in_flight = max(sum(local_latest.values()), max(broker_by_replica.values(), default=0.0))
        if self._polled is not None:
            # A polled adapter reads the store; a polled broker (Ray's arguments)
            # also counts cancelled tasks' messages, so the replicas' depth wins.
            if self._broker is None or not depth_by_replica:
                queue_depth = max(queue_depth, float(self._polled[0]))
            in_flight = max(in_flight, float(self._polled[1]))
        # A running replica with no report in the look-back window (a loaded
        # machine delays reports) is not known to be idle: it counts as busy.
        silent = len(_running_replicas(ctx) - set(local_peak))
        busy = sum(1 for value in local_peak.values() if value > 0) + silent
        requests = float(getattr(ctx, "total_num_requests", 0.0) or 0.0)
        known = bool(depth_by_replica or local_latest) or self._polled is not None
        return {
            "known": float(known),
            "queue_depth": queue_depth,
            "in_flight": in_flight,
            "busy_replicas": float(busy),
            "requests": requests,
            "workload": queue_depth + in_flight + requests,
        }

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        numbers = self.workload(ctx)
        state = dict(getattr(ctx, "policy_state", None) or {})
        state["taskserve"] = numbers
        if not numbers["known"]:
            # Nothing reported yet (replicas starting, first poll running): hold.
            return int(getattr(ctx, "target_num_replicas", 0) or 0), state
        per_replica = self.target_tasks_per_replica
        if per_replica is None:
            config = getattr(ctx, "config", None)
            per_replica = float(config.get_target_ongoing_requests()) if config else 1.0
        desired = max(math.ceil(numbers["workload"] / per_replica), int(numbers["busy_replicas"]))
        return desired, state


def queue_depth_autoscaling_policy(
    target_tasks_per_replica: float | None = None,
    task_processor_config: Any = None,
    poll_interval_s: float = 5.0,
) -> Any:
    """A ``ray.serve.config.AutoscalingPolicy`` running :class:`QueueDepthAutoscalingPolicy`.

    Ray logs policy arguments, so a ``task_processor_config`` whose URLs hold a
    password is refused as an object or mapping: pass it as an import path
    (``"package.module:CONFIG"``) or a YAML file path instead.
    """
    from ray.serve.config import AutoscalingPolicy

    from taskserve.config import TaskProcessorConfig
    from taskserve.errors import ConfigError
    from taskserve.redaction import REVEAL_SECRETS, redact_url

    source: Any = task_processor_config
    if isinstance(source, TaskProcessorConfig):
        selector = source.adapter
        if isinstance(selector, type):
            selector = f"{selector.__module__}:{selector.__qualname__}"
        source = {
            **source.model_dump(
                mode="json", exclude={"adapter", "adapter_config"}, context=REVEAL_SECRETS
            ),
            "adapter": selector,
            "adapter_config": source.adapter_config.model_dump(mode="json", context=REVEAL_SECRETS),
        }
    if isinstance(source, Mapping):
        text = json.dumps(source, default=str)
        if redact_url(text) != text:
            raise ConfigError(
                "task_processor_config holds a password and Ray would log it with the "
                "policy's arguments; pass an import path ('package.module:CONFIG') or a "
                "YAML file path instead"
            )
        source = json.loads(text)
    kwargs: dict[str, Any] = {"poll_interval_s": poll_interval_s}
    if target_tasks_per_replica is not None:
        kwargs["target_tasks_per_replica"] = target_tasks_per_replica
    if source is not None:
        kwargs["task_processor_config"] = source
    return AutoscalingPolicy(policy_function=POLICY_PATH, policy_kwargs=kwargs)  # type: ignore[no-untyped-call]
