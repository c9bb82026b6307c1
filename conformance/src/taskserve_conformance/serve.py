"""The Serve group: the Ray Serve integration of SPEC §6, in a real Serve application.

What an adapter promises here, every test on its own application and queue:

- tasks submitted through the HTTP ingress complete, sync and async handlers
  alike (§6.1, §7.1);
- a consumer replica whose actor is killed mid-task loses nothing: the task
  completes on another replica (§4.2 inside Serve);
- ``check_health`` fails when the consumer died and when the broker is
  unreachable (§6.3), and Serve replaces a replica whose consumer died;
- ``serve.delete`` while tasks run strands nothing: running tasks finish or
  are handed back, queued ones stay queued (§6.4, §4.5);
- a running ``async def`` task is interrupted by a cancel (§5.2);
- the queue-depth autoscaler does not scale away replicas busy with fetched
  tasks (§6.5).

Wiring, next to an :class:`~taskserve_conformance.AdapterConformance` class
(the same fixtures: ``adapter_config``, ``harness``, ``config_overrides``)::

    from taskserve_conformance.serve import ServeConformance

    pytest_plugins = ["taskserve_conformance.plugin"]

    class TestMyAdapterServe(ServeConformance):
        adapter = "myqueue"
        ...

One Ray instance (``ray.init`` with a few logical CPUs, no dashboard, a temp
folder of its own, and its metrics on a Prometheus endpoint,
:func:`ray_metrics_url`, reported every second) and one Serve instance are
shared by the whole test session (the ``serve_instance`` fixture); replicas'
logs are hidden unless ``TASKSERVE_CONFORMANCE_RAY_LOGS`` is set. A broker outage is
simulated inside the replica unless the test class overrides
:meth:`ServeConformance.broker_outage` with a real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from taskserve import (
    HealthReport,
    TaskProcessorAdapter,
    TaskProcessorConfig,
    TaskState,
    current_task,
)
from taskserve.capabilities import Capability
from taskserve.serve import get_consumer, task_consumer, task_handler
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.ports import free_port
from taskserve_conformance.reporting import DELIVERY_PROPERTY, DeliveryReport
from taskserve_conformance.waiting import wait_for_status, wait_until

RAY_LOGICAL_CPUS = 4
"""Logical CPUs of the shared Ray instance; test replicas ask for none."""
RAY_LOGS_ENV = "TASKSERVE_CONFORMANCE_RAY_LOGS"
"""Set to show the replicas' logs (they are hidden by default)."""
METRICS_REPORT_INTERVAL_MS = 1000
"""How often the shared Ray's processes report their metrics (Ray's shortest
interval; its default of 10 s would make a metrics test wait that long)."""

_TERMINAL = (TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED)
_SERVE_TIMEOUT_S = 60.0
"""Bound for Serve itself: deploying, replacing or deleting an application."""

logger = logging.getLogger(__name__)


# -- the consumer deployed by every test ------------------------------------------
class ServeProbe:
    """Handlers and introspection used by the Serve group (deployed per test)."""

    def __init__(self, marker_dir: str) -> None:
        from ray import serve

        self.marker_dir = Path(marker_dir)
        self.replica_tag = serve.get_replica_context().replica_tag
        self._outage = False

    def _mark(self, kind: str) -> None:
        task = current_task()
        marker = self.marker_dir / f"{task.id}.{kind}.{task.attempt}"
        partial = marker.with_name(f".{marker.name}.{os.getpid()}.partial")
        partial.write_text(f"{self.replica_tag} {os.getpid()}")
        partial.replace(marker)  # atomic: readers never see a half-written marker

    @task_handler
    def echo(self, value: Any) -> Any:
        return value

    @task_handler(name="async_echo")
    async def async_echo(self, value: Any) -> Any:
        await asyncio.sleep(0.01)
        return value

    @task_handler
    def flaky(self, value: Any) -> Any:
        """Fail the first attempt; return ``value`` from the next one."""
        if current_task().attempt == 1:
            raise RuntimeError("the first attempt of a flaky task fails")
        return value

    @task_handler
    def fail(self, message: str) -> None:
        """Fail every attempt with ``message``."""
        raise ValueError(message)

    @task_handler
    def work(self, seconds: float, first_attempt_seconds: float | None = None) -> dict[str, Any]:
        """Sleep ``seconds`` (``first_attempt_seconds`` on attempt 1), waking on cancel."""
        self._mark("started")
        task = current_task()
        duration = seconds
        if first_attempt_seconds is not None and task.attempt == 1:
            duration = first_attempt_seconds
        task.wait_cancelled(duration)
        return {"replica": self.replica_tag, "attempt": task.attempt}

    @task_handler
    def hold(self, gate: str, limit_s: float) -> dict[str, Any]:
        """Run until a file named ``gate`` appears in the marker folder (at most
        ``limit_s`` seconds), waking on cancel."""
        self._mark("started")
        task = current_task()
        released = self.marker_dir / gate
        deadline = time.monotonic() + limit_s
        while not released.exists() and time.monotonic() < deadline:
            if task.wait_cancelled(0.05):
                break
        return {"replica": self.replica_tag, "attempt": task.attempt}

    @task_handler(name="async_wait")
    async def async_wait(self, seconds: float) -> str:
        self._mark("started")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self._mark("interrupted")
            raise
        return "finished"

    # -- called through the deployment handle ---------------------------------
    def replica_info(self) -> dict[str, Any]:
        consumer = get_consumer(self)
        return {
            "replica": self.replica_tag,
            "pid": os.getpid(),
            "concurrency": consumer.concurrency,
            "in_flight": consumer.local_in_flight,
        }

    def kill_consumer(self) -> None:
        """Stop the adapter's consumer threads behind its back, as if they died."""
        consumer = get_consumer(self).adapter.running_consumer
        assert consumer is not None, "the consumer was not started"
        consumer.stop(0.0)

    def simulate_outage(self, on: bool) -> None:
        """Make the adapter's broker ping fail (or work again) in this replica."""
        adapter = get_consumer(self).adapter
        if on:

            def unreachable() -> HealthReport:
                return HealthReport(
                    healthy=False,
                    broker_reachable=False,
                    consumer_running=True,
                    detail="broker unreachable (simulated by the conformance suite)",
                )

            adapter.health_check_sync = unreachable  # type: ignore[method-assign]
        else:
            adapter.__dict__.pop("health_check_sync", None)


# -- helpers ------------------------------------------------------------------------
TEST_WAIT_LOOP_S = 0.2
"""``graceful_shutdown_wait_loop_s`` of the test deployments: a deleted replica
checks this often whether its requests are done (Serve's default 2 s would add
those seconds to the deletion of every test's application)."""


class ServeApps:
    """Deploys a test's applications and deletes them at the end."""

    def __init__(self, marker_dir: Path) -> None:
        self.marker_dir = marker_dir
        self.names: list[str] = []

    def consumer(self, config: TaskProcessorConfig, **deployment_options: Any) -> Any:
        """The probe consumer of ``config`` as a Serve deployment (not bound)."""
        from ray import serve

        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": 0},
            "graceful_shutdown_wait_loop_s": TEST_WAIT_LOOP_S,
        }
        options.update(deployment_options)
        consumer_cls = task_consumer(task_processor_config=config)(ServeProbe)
        return serve.deployment(name="consumer", **options)(consumer_cls)

    def ingress(self, config: TaskProcessorConfig) -> Any:
        """The HTTP ingress of ``config``'s queue (``create_task_app``) as a Serve
        deployment (not bound) taking the consumer's handle."""
        from ray import serve

        from taskserve.http import create_task_app

        class Ingress:
            def __init__(self, consumer: Any) -> None:
                self.consumer = consumer

        deployment: Any = serve.deployment(
            ray_actor_options={"num_cpus": 0}, graceful_shutdown_wait_loop_s=TEST_WAIT_LOOP_S
        )(serve.ingress(create_task_app(config))(Ingress))
        return deployment

    def run(self, target: Any, route_prefix: str | None = None) -> tuple[str, Any]:
        """``serve.run`` under a fresh application name; (name, handle)."""
        from ray import serve

        name = f"tsc-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        handle = serve.run(target, name=name, route_prefix=route_prefix)
        return name, handle

    def delete_all(self) -> None:
        from ray import serve

        for name in self.names:
            with contextlib.suppress(Exception):
                serve.delete(name)


@contextlib.contextmanager
def serve_apps_in(folder: Path) -> Iterator[ServeApps]:
    """A :class:`ServeApps` whose probes write their markers under ``folder``;
    its applications are deleted on exit."""
    markers = folder / "markers"
    markers.mkdir()
    apps = ServeApps(markers)
    try:
        yield apps
    finally:
        apps.delete_all()


def ray_metrics_url() -> str:
    """The Prometheus endpoint of the local Ray node's metrics agent."""
    import ray

    for node in ray.nodes():  # type: ignore[no-untyped-call]
        port = node.get("MetricsExportPort")
        if node.get("Alive") and port:
            return f"http://127.0.0.1:{port}/metrics"
    raise LookupError("no live Ray node exports metrics")


def _markers(folder: Path, task_id: str, kind: str) -> list[tuple[int, str, int]]:
    """(attempt, replica tag, pid) of each marker ``kind`` written for ``task_id``."""
    found = []
    for path in folder.glob(f"{task_id}.{kind}.*"):
        replica, pid = path.read_text().split()
        found.append((int(path.name.rsplit(".", 1)[1]), replica, int(pid)))
    return sorted(found)


def _replica_actor(app: str, replica_tag: str) -> Any:
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        name = actor["name"] if isinstance(actor, dict) else actor
        if name.startswith("SERVE_REPLICA::") and name.endswith(f"#{replica_tag}") and app in name:
            return ray.get_actor(name, namespace=actor.get("namespace", "serve"))
    raise LookupError(f"no replica actor '{replica_tag}' in application '{app}'")


def _replica_states(app: str, deployment: str = "consumer") -> dict[str, int]:
    """How many replicas of the deployment are in each state (RUNNING, STOPPING ...)."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return {}
    return {str(k): int(v) for k, v in status.deployments[deployment].replica_states.items()}


def _running_replicas(app: str, deployment: str = "consumer") -> int:
    return _replica_states(app, deployment).get("RUNNING", 0)


RAY_START_ATTEMPTS = 3
"""How many times a local Ray is started before the Serve group gives up."""


def _start_local_ray() -> str:
    """Start a local Ray for the Serve group; return its temp folder.

    Ray waits a fixed 30 s for its raylet to register and then fails ("timed
    out during startup"); on a machine busy with the rest of the suite that
    can happen, so the start is tried again, after the processes of the
    failed start are stopped, up to :data:`RAY_START_ATTEMPTS` times.
    """
    import ray

    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        temp_dir = tempfile.mkdtemp(prefix="tsc-ray-")
        try:
            ray.init(
                num_cpus=RAY_LOGICAL_CPUS,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=bool(os.environ.get(RAY_LOGS_ENV)),
                _temp_dir=temp_dir,
                _metrics_export_port=free_port(),
                _system_config={"metrics_report_interval_ms": METRICS_REPORT_INTERVAL_MS},
            )
        except Exception as e:
            if "timed out during startup" not in str(e) or attempt == RAY_START_ATTEMPTS:
                raise
            ray.shutdown()
            _kill_processes_under(temp_dir)
            shutil.rmtree(temp_dir, ignore_errors=True)
            continue
        return temp_dir
    raise AssertionError("unreachable")


def _kill_processes_under(folder: str) -> None:
    """SIGKILL every process whose command line names ``folder`` (Linux's
    /proc; elsewhere nothing is done): the GCS and raylet of a failed start."""
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if folder.encode() in command:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


def start_serve_session() -> Iterator[str]:
    """Start one local Ray and Serve, yield the HTTP base URL, then shut down.

    Backs the session fixture ``serve_instance`` of
    :mod:`taskserve_conformance.plugin`, so every Serve test class of a run
    shares one Serve instance (and one HTTP port).
    """
    ray = pytest.importorskip("ray", reason="the Serve group needs ray[serve]")
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started_here = not ray.is_initialized()
    temp_dir: str | None = None
    if started_here:
        temp_dir = _start_local_ray()
    port = free_port()
    serve.start(
        http_options={"host": "127.0.0.1", "port": port},
        logging_config={"log_level": "WARNING"},
    )
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()  # type: ignore[no-untyped-call]
    if started_here:
        ray.shutdown()
    if temp_dir is not None:
        shutil.rmtree(temp_dir, ignore_errors=True)


# -- the group ----------------------------------------------------------------------
class ServeConformance:
    """The Serve group of the conformance suite, as a mixin test class.

    The subclass sets ``adapter`` and provides the suite's fixtures
    (``adapter_config``, ``harness`` ...), exactly as for ``AdapterConformance``.
    Under pytest-xdist (``--dist loadgroup``) the tests of one class run in one
    worker, which starts one Ray for all the Serve classes it gets.
    """

    adapter: Any = None
    serve_group: ClassVar[str | None] = None
    """The pytest-xdist group of this class's tests (default: the class's own).
    Classes in one group run in one worker, one after the other, on its one
    Ray: fewer groups, fewer Ray instances competing for the machine."""
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        marks = list(getattr(cls, "pytestmark", []))
        group = cls.serve_group or f"serve-{cls.__qualname__}"
        cls.pytestmark = [*marks, pytest.mark.xdist_group(group)]

    @contextlib.contextmanager
    def broker_outage(self, config: TaskProcessorConfig) -> Iterator[None]:
        """Make ``config``'s broker unreachable for the consumers inside the block.

        Override with a real outage (stop the broker, block its port, move the
        database away). The default raises NotImplementedError and the test
        simulates the outage inside the replica instead.
        """
        raise NotImplementedError
        yield  # pragma: no cover

    @pytest.fixture
    def serve_apps(
        self, serve_instance: str, tmp_path: Path, make_config: ConfigFactory
    ) -> Iterator[ServeApps]:
        # Depends on make_config so that the apps are deleted before the
        # harness cleans up the queues they consume.
        with serve_apps_in(tmp_path) as apps:
            yield apps

    # -- §6.1 / §7.1 ---------------------------------------------------------------
    def test_ingress_tasks_complete(
        self,
        serve_apps: ServeApps,
        serve_instance: str,
        config: TaskProcessorConfig,
        producer: TaskProcessorAdapter,
        deadlines: Deadlines,
        record_property: Callable[[str, object], None],
    ) -> None:
        """Tasks submitted over HTTP through the ingress complete (sync and async)."""
        from taskserve.client import TaskClient

        ingress = serve_apps.ingress(config)
        consumer = serve_apps.consumer(config, max_ongoing_requests=4)
        prefix = f"/{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        serve_apps.run(ingress.bind(consumer.bind(str(serve_apps.marker_dir))), route_prefix=prefix)
        deployed = time.monotonic()
        with TaskClient(f"{serve_instance}{prefix}") as client:
            first = client.submit("echo", ["first"])
            assert first.result(timeout=deadlines.run()) == "first"
            first_success = time.monotonic()
            handles = [client.submit("echo", [i]) for i in range(3)]
            handles += [client.submit("async_echo", kwargs={"value": {"n": i}}) for i in range(3)]
            values = [h.result(timeout=deadlines.run(tasks=6)) for h in handles]
        assert values == [0, 1, 2, {"n": 0}, {"n": 1}, {"n": 2}]
        assert producer.get_task_status_sync(first.id).status is TaskState.SUCCESS
        record_property("serve_run_s", round(deployed - started, 3))
        record_property("serve_run_to_first_success_s", round(first_success - started, 3))
        record_property("deployed_to_first_success_s", round(first_success - deployed, 3))

    # -- §4.2 in Serve -------------------------------------------------------------
    @requires(Capability.CRASH_REDELIVERY)
    def test_killed_replica_loses_nothing(
        self,
        serve_apps: ServeApps,
        config: TaskProcessorConfig,
        producer: TaskProcessorAdapter,
        deadlines: Deadlines,
        record_property: Callable[[str, object], None],
    ) -> None:
        """A consumer replica killed mid-task: the task completes on another replica."""
        import ray

        consumer = serve_apps.consumer(config, num_replicas=2, max_ongoing_requests=1)
        app, _ = serve_apps.run(consumer.bind(str(serve_apps.marker_dir)))
        task = producer.enqueue_task_sync(
            "work", kwargs={"seconds": 0.05, "first_attempt_seconds": 300}
        )
        markers = serve_apps.marker_dir
        first = wait_until(
            lambda: _markers(markers, task.id, "started"),
            deadlines.pickup,
            "the task never started on a replica",
        )[0]
        killed_at = time.monotonic()
        ray.kill(_replica_actor(app, first[1]), no_restart=True)
        wait_until(
            lambda: len(_markers(markers, task.id, "started")) >= 2,
            deadlines.redelivery,
            "the task of the killed replica was not delivered again",
        )
        redelivered_at = time.monotonic()
        done = wait_for_status(producer, task.id, _TERMINAL, deadlines.redelivery)
        completed_at = time.monotonic()
        assert done.status is TaskState.SUCCESS, done
        assert done.result["replica"] != first[1]
        assert done.attempts == 2, f"expected 2 attempts, got {done.attempts}"
        record_property("kill_to_redelivery_s", round(redelivered_at - killed_at, 3))
        record_property("kill_to_success_s", round(completed_at - killed_at, 3))
        runs = len(_markers(markers, task.id, "started"))
        report = DeliveryReport(
            tasks=1,
            succeeded=1,
            runs=runs,
            redelivered=1,
            duplicate_completions=0,
            recovery_s=round(completed_at - killed_at, 2),
            lease_s=config.lease_s,
        )
        record_property(DELIVERY_PROPERTY, report.as_property())

    # -- §6.3 ------------------------------------------------------------------------
    def test_health_fails_when_consumer_dies(
        self,
        serve_apps: ServeApps,
        config: TaskProcessorConfig,
        producer: TaskProcessorAdapter,
        deadlines: Deadlines,
    ) -> None:
        """check_health fails once the consumer died, and Serve replaces the replica."""
        consumer = serve_apps.consumer(
            config, health_check_period_s=1, health_check_timeout_s=10, max_ongoing_requests=2
        )
        _, handle = serve_apps.run(consumer.bind(str(serve_apps.marker_dir)))
        before = handle.replica_info.remote().result()["replica"]
        assert handle.check_health.remote().result() is None
        handle.kill_consumer.remote().result()
        with pytest.raises(Exception, match="consumer is not running"):
            handle.check_health.remote().result()

        def replaced() -> str | None:
            try:
                replica = str(handle.replica_info.remote().result(timeout_s=5)["replica"])
            except Exception:
                return None
            return replica if replica != before else None

        wait_until(replaced, _SERVE_TIMEOUT_S, "Serve did not replace the unhealthy replica")
        task = producer.enqueue_task_sync("echo", ["after replacement"])
        done = wait_for_status(producer, task.id, _TERMINAL, deadlines.run())
        assert done.status is TaskState.SUCCESS and done.result == "after replacement"

    def test_health_fails_when_broker_unreachable(
        self,
        serve_apps: ServeApps,
        config: TaskProcessorConfig,
        deadlines: Deadlines,
    ) -> None:
        """check_health fails while the broker cannot be reached, and recovers after."""
        consumer = serve_apps.consumer(config, max_ongoing_requests=2)
        _, handle = serve_apps.run(consumer.bind(str(serve_apps.marker_dir)))
        assert handle.check_health.remote().result() is None
        outage: contextlib.AbstractContextManager[None]
        try:
            outage = self.broker_outage(config)
            outage.__enter__()
        except NotImplementedError:
            handle.simulate_outage.remote(True).result()
            outage = contextlib.nullcontext()
            simulated = True
        else:
            simulated = False
        try:
            with pytest.raises(Exception, match="unreachable"):
                handle.check_health.remote().result()
        finally:
            if simulated:
                handle.simulate_outage.remote(False).result()
            else:
                outage.__exit__(None, None, None)
        wait_until(
            lambda: _healthy(handle),
            deadlines.pickup,
            "check_health did not pass again once the broker was back",
        )

    # -- §6.4 / §4.5 ---------------------------------------------------------------
    def test_delete_during_work_strands_nothing(
        self,
        serve_apps: ServeApps,
        make_config: ConfigFactory,
        make_producer: Callable[[TaskProcessorConfig], TaskProcessorAdapter],
        deadlines: Deadlines,
    ) -> None:
        """serve.delete while tasks run: short ones finish, a long one is handed
        back at the graceful timeout (not left to its lease), queued ones stay."""
        from ray import serve

        config = make_config(lease_s=120.0)
        producer = make_producer(config)
        consumer = serve_apps.consumer(
            config,
            max_ongoing_requests=2,
            graceful_shutdown_timeout_s=4.0,
            graceful_shutdown_wait_loop_s=0.5,
        )
        app, _ = serve_apps.run(consumer.bind(str(serve_apps.marker_dir)))
        short = producer.enqueue_task_sync("work", kwargs={"seconds": 1.0})
        long = producer.enqueue_task_sync(
            "work", kwargs={"seconds": 0.05, "first_attempt_seconds": 300}
        )
        markers = serve_apps.marker_dir
        wait_until(
            lambda: (
                _markers(markers, short.id, "started") and _markers(markers, long.id, "started")
            ),
            deadlines.pickup,
            "the two tasks did not both start",
        )
        queued = [producer.enqueue_task_sync("echo", [i]) for i in range(3)]
        serve.delete(app, _blocking=True)
        assert producer.get_task_status_sync(short.id).status is TaskState.SUCCESS
        for task in queued:
            status = producer.get_task_status_sync(task.id).status
            assert status in (TaskState.PENDING, TaskState.SUCCESS), (task.id, status)
        # A new consumer finishes everything; the long task well before its lease
        # ends (counted from the new consumer's deployment, however long that took).
        again = serve_apps.consumer(config, max_ongoing_requests=2)
        serve_apps.run(again.bind(str(serve_apps.marker_dir)))
        deployed = time.monotonic()
        for task in [long, *queued]:
            done = wait_for_status(producer, task.id, _TERMINAL, deadlines.run(tasks=4))
            assert done.status is TaskState.SUCCESS, done
        assert time.monotonic() - deployed < config.lease_s / 2, (
            "the long task waited for its lease: it was stranded, not handed back"
        )

    # -- §5.2 ------------------------------------------------------------------------
    @requires(Capability.CANCEL_RUNNING)
    def test_running_async_task_is_cancelled(
        self,
        serve_apps: ServeApps,
        config: TaskProcessorConfig,
        producer: TaskProcessorAdapter,
        deadlines: Deadlines,
    ) -> None:
        """A cancel interrupts a running async handler in its replica."""
        consumer = serve_apps.consumer(config, max_ongoing_requests=2)
        _, handle = serve_apps.run(consumer.bind(str(serve_apps.marker_dir)))
        task = producer.enqueue_task_sync("async_wait", [300])
        wait_for_status(producer, task.id, TaskState.STARTED, deadlines.pickup)
        # STARTED is recorded before the coroutine's first step: a cancel that
        # came earlier would stop it before its body ran, with nothing to mark.
        wait_until(
            lambda: _markers(serve_apps.marker_dir, task.id, "started"),
            deadlines.pickup,
            "the async handler did not start",
        )
        producer.cancel_task_sync(task.id)
        done = wait_for_status(producer, task.id, _TERMINAL, deadlines.cancel)
        assert done.status is TaskState.CANCELLED, done
        wait_until(
            lambda: _markers(serve_apps.marker_dir, task.id, "interrupted"),
            deadlines.cancel,
            "the async handler was not interrupted",
        )
        wait_until(
            lambda: handle.replica_info.remote().result()["in_flight"] == 0,
            deadlines.cancel,
            "the cancelled handler is still running in the replica",
        )

    # -- §6.5 ------------------------------------------------------------------------
    @requires(Capability.QUEUE_METRICS)
    def test_autoscaler_keeps_busy_replicas(
        self,
        serve_apps: ServeApps,
        make_config: ConfigFactory,
        make_producer: Callable[[TaskProcessorConfig], TaskProcessorAdapter],
        deadlines: Deadlines,
    ) -> None:
        """The queue-depth policy scales up for queued tasks and never scales
        below the replicas running fetched tasks (a policy counting only queued
        messages scales them away at once), then scales down when idle.

        Serve, not the policy, picks which replica to stop; one picked while
        busy drains (its task finishes within the graceful timeout), so every
        task still succeeds on its first attempt."""
        from taskserve.serve import queue_depth_autoscaling_policy

        # A lease far longer than the test: a second attempt can only come from a
        # replica stopped while busy, not from a renewal late on a loaded machine.
        config = make_config(lease_s=30.0)
        producer = make_producer(config)

        look_back_s = 1.0
        consumer = serve_apps.consumer(
            config,
            max_ongoing_requests=1,
            autoscaling_config={
                "min_replicas": 1,
                "initial_replicas": 1,
                "max_replicas": 2,
                "upscale_delay_s": 0,
                "downscale_delay_s": 0,
                "metrics_interval_s": 0.25,
                "look_back_period_s": look_back_s,
                "policy": queue_depth_autoscaling_policy(target_tasks_per_replica=1),
            },
        )
        app, _ = serve_apps.run(consumer.bind(str(serve_apps.marker_dir)))
        # The tasks run until released, so neither can finish before the
        # second replica exists, however slowly Serve scales up.
        gate = f"release-{uuid.uuid4().hex}"
        limit_s = deadlines.pickup + 2 * _SERVE_TIMEOUT_S
        tasks = [producer.enqueue_task_sync("hold", [gate, limit_s]) for _ in range(2)]
        markers = serve_apps.marker_dir
        wait_until(
            lambda: all(_markers(markers, t.id, "started") for t in tasks),
            deadlines.pickup + _SERVE_TIMEOUT_S,
            "the deployment did not scale up to run both queued tasks",
        )
        replicas = {_markers(markers, t.id, "started")[0][1] for t in tasks}
        assert len(replicas) == 2, f"both tasks ran on one replica: {replicas}"

        def replicas_kept(statuses: list[TaskState]) -> None:
            states = _replica_states(app)
            unfinished = sum(s is not TaskState.SUCCESS for s in statuses)
            kept = states.get("STARTING", 0) + states.get("RUNNING", 0)
            if kept < unfinished:
                pytest.fail(
                    f"the deployment was scaled below its busy replicas: replicas {states}, "
                    f"tasks {[s.value for s in statuses]}",
                    pytrace=False,
                )

        # Both tasks fetched, none queued: a policy counting only queued
        # messages scales down within one look-back period; watch four.
        watch_until = time.monotonic() + 4 * look_back_s
        while time.monotonic() < watch_until:
            replicas_kept([TaskState.STARTED, TaskState.STARTED])
            time.sleep(0.1)
        (markers / gate).write_text("")

        def all_done_with_replicas_kept() -> bool:
            statuses = [producer.get_task_status_sync(t.id).status for t in tasks]
            if all(s is TaskState.SUCCESS for s in statuses):
                return True
            replicas_kept(statuses)
            return False

        wait_until(all_done_with_replicas_kept, deadlines.run(1.0), "the tasks did not finish")
        for task in tasks:
            done = producer.get_task_status_sync(task.id)
            assert done.status is TaskState.SUCCESS and done.attempts == 1, done
        wait_until(
            lambda: _running_replicas(app) == 1,
            _SERVE_TIMEOUT_S,
            "the idle deployment was not scaled down (is the policy active?)",
        )


def _healthy(handle: Any) -> bool:
    try:
        handle.check_health.remote().result(timeout_s=10)
    except Exception:
        return False
    return True
