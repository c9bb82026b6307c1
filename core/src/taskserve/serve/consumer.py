"""The lifecycle of one replica's consumer: start, health, stats, drain.

:class:`ConsumerRuntime` is what ``@task_consumer`` attaches to each instance.
Inside a Serve replica it reads the deployment's settings from the replica
context: ``max_ongoing_requests`` (the default consumer concurrency) and
``graceful_shutdown_timeout_s`` (the drain budget on shutdown).
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from taskserve.adapter import (
    DEFAULT_CONSUMER_CONCURRENCY,
    DEFAULT_GRACEFUL_TIMEOUT_S,
    TaskProcessorAdapter,
)
from taskserve.batch import batch_options
from taskserve.capabilities import Capability
from taskserve.config import TaskProcessorConfig
from taskserve.directory import publish_consumer
from taskserve.models import AdapterMetrics, HealthReport
from taskserve.registry import resolve_adapter
from taskserve.serve.health import ConsumerUnhealthy, unhealthy_reason
from taskserve.serve.metrics import RayMetricsPlugin, register_ray_metrics_in_ray

logger = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0
"""How often a replica refreshes its queue statistics (autoscaling, gauges)."""

DEFAULT_WAIT_LOOP_S = 2.0
"""Serve's default ``graceful_shutdown_wait_loop_s``."""
HAND_BACK_MARGIN_S = 2.0
"""The most of the graceful timeout kept for handing running tasks back."""


@dataclass(frozen=True)
class ReplicaSettings:
    """The deployment options a consumer needs, read from the replica context."""

    in_replica: bool
    max_ongoing_requests: int = DEFAULT_CONSUMER_CONCURRENCY
    graceful_shutdown_timeout_s: float = DEFAULT_GRACEFUL_TIMEOUT_S
    graceful_shutdown_wait_loop_s: float = DEFAULT_WAIT_LOOP_S
    app_name: str | None = None
    deployment: str | None = None
    replica_id: str | None = None

    def drain_timeout_s(self) -> float:
        """How long running tasks may take to finish on shutdown.

        Serve spends one wait loop before calling the destructor and kills the
        replica once the graceful timeout has passed, counted by its controller
        from the moment it asked the replica to stop (so the call's own latency
        counts too, which grows on a busy machine). A margin of a quarter of the
        budget, at most :data:`HAND_BACK_MARGIN_S`, is kept so that unfinished
        tasks are handed back before the kill.
        """
        budget = self.graceful_shutdown_timeout_s
        if not self.in_replica:
            return budget
        margin = min(HAND_BACK_MARGIN_S, budget * 0.25)
        return max(budget - self.graceful_shutdown_wait_loop_s - margin, 0.0)


def replica_settings() -> ReplicaSettings:
    """Settings of the Serve replica this code runs in (defaults outside Serve)."""
    try:
        from ray import serve
    except ImportError:
        return ReplicaSettings(in_replica=False)
    try:
        context = serve.get_replica_context()
    except Exception:  # not inside a replica
        return ReplicaSettings(in_replica=False)
    deployment_config = getattr(context, "_deployment_config", None)
    return ReplicaSettings(
        in_replica=True,
        max_ongoing_requests=int(
            getattr(deployment_config, "max_ongoing_requests", DEFAULT_CONSUMER_CONCURRENCY)
        ),
        graceful_shutdown_timeout_s=float(
            getattr(deployment_config, "graceful_shutdown_timeout_s", DEFAULT_GRACEFUL_TIMEOUT_S)
        ),
        graceful_shutdown_wait_loop_s=float(
            getattr(deployment_config, "graceful_shutdown_wait_loop_s", DEFAULT_WAIT_LOOP_S)
        ),
        app_name=context.app_name,
        deployment=context.deployment,
        replica_id=context.replica_tag,
    )


class _InFlight:
    """Counts the handler calls running in this replica."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def wrap(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """``handler`` with the same signature, counted while it runs: one per
        call, or for a batched handler one per task of the batch."""
        batched = batch_options(handler) is not None

        def tasks(args: tuple[Any, ...]) -> int:
            return len(args[0]) if batched and args and isinstance(args[0], list) else 1

        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def counted_async(*args: Any, **kwargs: Any) -> Any:
                count = tasks(args)
                self._add(count)
                try:
                    return await handler(*args, **kwargs)
                finally:
                    self._add(-count)

            return counted_async

        @functools.wraps(handler)
        def counted(*args: Any, **kwargs: Any) -> Any:
            count = tasks(args)
            self._add(count)
            try:
                return handler(*args, **kwargs)
            finally:
                self._add(-count)

        return counted

    def _add(self, delta: int) -> None:
        with self._lock:
            self.count += delta


class ConsumerRuntime:
    """One replica's consumer of one queue."""

    def __init__(
        self,
        config: TaskProcessorConfig,
        handlers: Mapping[str, Callable[..., Any]],
        owner: str = "",
    ) -> None:
        self.config = config
        self.owner = owner
        self._handlers = dict(handlers)
        self._in_flight = _InFlight()
        self._adapter: TaskProcessorAdapter | None = None
        self._settings = ReplicaSettings(in_replica=False)
        self._started = False
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._stats_stop = threading.Event()
        self._stats_thread: threading.Thread | None = None
        self._metrics: AdapterMetrics | None = None
        self._metrics_plugin: RayMetricsPlugin | None = None

    @property
    def adapter(self) -> TaskProcessorAdapter:
        """The started adapter (raises before :meth:`start`)."""
        if self._adapter is None:
            raise RuntimeError("the consumer has not been started")
        return self._adapter

    @property
    def settings(self) -> ReplicaSettings:
        """The replica settings read at start."""
        return self._settings

    @property
    def concurrency(self) -> int:
        """Tasks this replica runs at once."""
        return self.adapter.consumer_concurrency

    @property
    def local_in_flight(self) -> int:
        """Tasks whose handlers run in this replica right now (each task of a
        running batch counted)."""
        return self._in_flight.count

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        """Create the adapter, register the handlers and start consuming. In a
        process connected to Ray the Ray metrics plugin is registered too (once
        per process) and the queue gauges are set about once a second."""
        if self._started:
            return
        self._settings = replica_settings()
        concurrency = self.config.consumer_concurrency or self._settings.max_ongoing_requests
        assert self.config.adapter is not None  # set by validation
        adapter = resolve_adapter(self.config.adapter)(self.config)
        adapter.initialize(consumer_concurrency=concurrency)
        for task_name, handler in self._handlers.items():
            adapter.register_task_handle(self._in_flight.wrap(handler), task_name)
        if not self._handlers:
            logger.warning(
                "taskserve: %s consumes queue '%s' but has no @task_handler methods; every "
                "task it receives is unprocessable",
                self.owner or "a task consumer",
                self.config.queue_name,
            )
        self._metrics_plugin = register_ray_metrics_in_ray()
        self._adapter = adapter
        adapter.start_consumer()
        self._started = True
        publish_consumer(self.config, list(self._handlers))
        self._stats_thread = threading.Thread(
            target=self._refresh_stats, name="taskserve-serve-stats", daemon=True
        )
        self._stats_thread.start()
        logger.info(
            "taskserve: consuming queue '%s' with %s, concurrency %d",
            self.config.queue_name,
            adapter.alias or type(adapter).__name__,
            concurrency,
        )

    def stop(self, timeout: float | None = None) -> None:
        """Stop fetching, hand back unstarted tasks, let running ones finish for up
        to ``timeout`` seconds (default: the deployment's drain budget); idempotent."""
        with self._stop_lock:
            if self._stopped or not self._started:
                self._stopped = True
                return
            self._stopped = True
        self._stats_stop.set()
        drain = self._settings.drain_timeout_s() if timeout is None else timeout
        adapter = self.adapter
        started = time.monotonic()
        try:
            adapter.stop_consumer(timeout=drain)
        finally:
            adapter.shutdown()
        logger.info(
            "taskserve: consumer of queue '%s' stopped in %.2fs (drain budget %.1fs)",
            self.config.queue_name,
            time.monotonic() - started,
            drain,
        )

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopped

    # -- health ------------------------------------------------------------
    def health(self) -> HealthReport:
        """The adapter's health report."""
        return self.adapter.health_check_sync()

    def raise_if_unhealthy(self) -> None:
        """Raise :class:`ConsumerUnhealthy` if the broker is unreachable or the
        consumer died (nothing is checked once stopped on purpose)."""
        if self._stopped or not self._started:
            return
        try:
            report = self.health()
        except Exception as e:
            raise ConsumerUnhealthy(
                self.config.queue_name, f"health check raised {type(e).__name__}: {e}"
            ) from e
        expected_running = not self._stopped
        reason = unhealthy_reason(report, expected_running)
        if reason is not None and not self._stopped:
            raise ConsumerUnhealthy(self.config.queue_name, reason)

    # -- statistics --------------------------------------------------------
    @property
    def last_metrics(self) -> AdapterMetrics | None:
        """The queue statistics last read from the broker, if the adapter has them."""
        return self._metrics

    def autoscaling_stats(self) -> dict[str, float]:
        """What a replica reports to the autoscaling policy."""
        stats: dict[str, float] = {"taskserve_in_flight": float(self.local_in_flight)}
        metrics = self._metrics
        if metrics is not None:
            stats["taskserve_queue_depth"] = float(metrics.queue_depth)
            stats["taskserve_broker_in_flight"] = float(metrics.in_flight)
        return stats

    def _refresh_stats(self) -> None:
        adapter = self.adapter
        if not adapter.supports(Capability.QUEUE_METRICS):
            return
        while not self._stats_stop.is_set():
            try:
                self._metrics = adapter.get_metrics_sync()
                if self._metrics_plugin is not None:
                    self._metrics_plugin.observe_queue(
                        self._metrics, adapter.alias or type(adapter).__name__
                    )
            except Exception as e:
                logger.debug("taskserve: reading queue metrics failed: %s", e)
            self._stats_stop.wait(STATS_INTERVAL_S)
