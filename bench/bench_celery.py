"""Benchmark of the Celery adapter (not part of the tests).

    python bench/bench_celery.py [--tasks 2000] [--concurrency 8] [--lease 5]
                                 [--brokers redis,rabbitmq]

1. No-op task throughput, per broker and in one run, of:
   * taskserve-celery (its embedded worker, threads pool),
   * raw Celery: ``celery worker --pool threads`` with the same concurrency,
     late acks, prefetch multiplier 1, JSON, and a Redis result backend,
   * Ray Serve's built-in Celery adapter
     (``ray.serve.task_processor.CeleryTaskProcessorAdapter``) used directly,
     outside Serve, with its own worker thread (only the replica tag it reads
     from the Serve replica context is supplied).
   Every consumer runs in its own process, started on a queue already holding
   all the tasks; consume throughput is measured between the first and the
   last completion time recorded by each system, so start-up does not count.
   Enqueue throughput (one producer thread, synchronous calls) is shown apart.
   Ratios are printed against raw Celery and against Ray's adapter.
2. Crash-to-redelivery time: a consumer process is killed with SIGKILL while
   it runs a task, a second, idle consumer already running; the time from the
   kill until the task starts again is reported with the lease, for
   taskserve-celery and for Ray's adapter (waited for up to ``--crash-wait``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
READY = "bench-consumer-ready"
SYSTEMS = ("taskserve", "raw", "ray")
LABELS = {"taskserve": "taskserve-celery", "raw": "raw Celery", "ray": "Ray built-in"}
MARKERS_ENV = "BENCH_CELERY_MARKERS"


# -- tasks ---------------------------------------------------------------------
def noop() -> None:
    """The benchmark's task: nothing."""


def sleep_marked(seconds: float) -> float:
    """A task long enough to be killed in: records each start (time, pid) first."""
    markers = Path(os.environ[MARKERS_ENV])
    name = f"{os.getpid()}-{uuid.uuid4().hex}"
    (markers / f"tmp-{name}").write_text(json.dumps({"time": time.time(), "pid": os.getpid()}))
    (markers / f"tmp-{name}").rename(markers / f"start-{name}")
    time.sleep(seconds)
    return seconds


HANDLERS: dict[str, Callable[..., Any]] = {"noop": noop, "sleep_marked": sleep_marked}


def _starts(markers: Path) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in markers.glob("start-*")]
    return sorted(found, key=lambda m: m["time"])


# -- the three systems ----------------------------------------------------------
def _broker_url(broker: str) -> str:
    return REDIS_URL if broker == "redis" else AMQP_URL


def taskserve_config(broker: str, queue: str, lease_s: float) -> Any:
    from taskserve import TaskProcessorConfig
    from taskserve_celery import CeleryAdapterConfig

    return TaskProcessorConfig(
        queue_name=queue,
        adapter_config=CeleryAdapterConfig(
            broker_url=_broker_url(broker),
            backend_url=REDIS_URL,
            key_prefix=f"bench-celery-{queue}",
        ),
        lease_s=lease_s,
        max_retries=3,
    )


def raw_app(broker: str, queue: str, concurrency: int) -> Any:
    from celery import Celery

    app = Celery(f"bench-raw-{queue}", broker=_broker_url(broker), backend=REDIS_URL)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        worker_concurrency=concurrency,
        task_default_queue=queue,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
    )
    for name, func in HANDLERS.items():
        app.task(name=name, acks_late=True)(func)
    return app


def ray_adapter(broker: str, queue: str) -> Any:
    import ray.serve.task_processor as ray_task_processor
    from ray.serve.schema import CeleryAdapterConfig, TaskProcessorConfig

    # Outside Serve the adapter only lacks the replica tag it names its worker after.
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    ray_task_processor.get_replica_context = lambda: types.SimpleNamespace(replica_tag=tag)
    config = TaskProcessorConfig(
        queue_name=queue,
        adapter_config=CeleryAdapterConfig(broker_url=_broker_url(broker), backend_url=REDIS_URL),
        max_retries=3,
    )
    return ray_task_processor.CeleryTaskProcessorAdapter(config)


class Producer:
    """Enqueue and read completion times, the same way for every system."""

    def __init__(self, system: str, broker: str, queue: str, lease_s: float, concurrency: int):
        self.system = system
        if system == "taskserve":
            from taskserve import instantiate_adapter_from_config

            self.adapter = instantiate_adapter_from_config(taskserve_config(broker, queue, lease_s))
        elif system == "raw":
            self.app = raw_app(broker, queue, concurrency)
        else:
            self.ray = ray_adapter(broker, queue)
            self.ray.initialize(consumer_concurrency=concurrency)
            for name, func in HANDLERS.items():
                self.ray.register_task_handle(func, name)

    def enqueue(self, name: str, args: list[Any] | None = None) -> str:
        if self.system == "taskserve":
            return str(self.adapter.enqueue_task_sync(name, args).id)
        if self.system == "raw":
            return str(self.app.send_task(name, args=args or []).id)
        return str(self.ray.enqueue_task_sync(name, args=args or []).id)

    def done_at(self, task_id: str) -> float | None:
        """When the task finished successfully (epoch seconds), or None."""
        if self.system == "taskserve":
            result = self.adapter.get_task_status_sync(task_id)
            return result.updated_at if result.status.value == "SUCCESS" else None
        app = self.app if self.system == "raw" else self.ray._app
        meta = app.backend.get_task_meta(task_id)
        if meta.get("status") != "SUCCESS":
            return None
        done = meta.get("date_done")
        if isinstance(done, str):
            done = datetime.fromisoformat(done)
        return float(done.timestamp()) if done is not None else time.time()

    def cleanup(self, task_ids: list[str], broker: str, queue: str) -> None:
        if self.system == "taskserve":
            from taskserve_celery.harness import CeleryHarness

            self.adapter.shutdown()
            CeleryHarness().cleanup(self.adapter.config)
            return
        app = self.app if self.system == "raw" else self.ray._app
        for task_id in task_ids:
            app.backend.forget(task_id)
        _delete_broker_queue(app, broker, queue)
        app.close()


def _delete_broker_queue(app: Any, broker: str, queue: str) -> None:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        if broker == "redis":
            client = channel.client
            client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
            # A killed consumer leaves its message in kombu's shared unacked keys.
            for tag, entry in client.hgetall("unacked").items():
                if json.loads(entry)[2] == queue:
                    client.hdel("unacked", tag)
                    client.zrem("unacked_index", tag)
        else:
            channel.queue_delete(queue)
            channel.exchange_delete(queue)


# -- consumer processes -----------------------------------------------------------
def consume(system: str, broker: str, queue: str, concurrency: int, lease_s: float) -> None:
    """Run one system's consumer until SIGTERM (the child process's main)."""
    logging.basicConfig(level=logging.WARNING)
    stop = threading.Event()
    if system == "raw":
        from celery import signals

        app = raw_app(broker, queue, concurrency)
        signals.worker_ready.connect(lambda **_: os.write(1, f"{READY}\n".encode()), weak=False)
        app.worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={concurrency}",
                "--prefetch-multiplier=1",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "--loglevel=WARNING",
                f"--hostname=bench-{uuid.uuid4().hex[:8]}@%h",
                "-Q",
                queue,
            ]
        )
        return
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if system == "taskserve":
        from taskserve import instantiate_adapter_from_config

        adapter = instantiate_adapter_from_config(taskserve_config(broker, queue, lease_s))
        adapter.initialize(consumer_concurrency=concurrency)
        for name, func in HANDLERS.items():
            adapter.register_task_handle(func, name)
        adapter.start_consumer()
        print(READY, flush=True)
        stop.wait()
        adapter.shutdown()
        return
    ray = ray_adapter(broker, queue)
    ray.initialize(consumer_concurrency=concurrency)
    for name, func in HANDLERS.items():
        ray.register_task_handle(func, name)
    ray.start_consumer()
    print(READY, flush=True)
    stop.wait()
    ray.stop_consumer(timeout=10)


@contextlib.contextmanager
def consumer_process(
    system: str, broker: str, queue: str, concurrency: int, lease_s: float, markers: Path
) -> Iterator[subprocess.Popen[str]]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--consume",
        system,
        "--broker",
        broker,
        "--queue",
        queue,
        "--concurrency",
        str(concurrency),
        "--lease",
        str(lease_s),
    ]
    env = {**os.environ, MARKERS_ENV: str(markers), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        _wait_ready(process)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(process: subprocess.Popen[str], timeout: float = 60.0) -> None:
    assert process.stdout is not None
    done = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if READY in line:
                done.set()
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(timeout) or process.poll() is not None:
        raise RuntimeError(f"consumer {process.args} did not start")


# -- measurements -------------------------------------------------------------------
def throughput(
    system: str, broker: str, tasks: int, concurrency: int, lease_s: float, markers: Path
) -> dict[str, float]:
    queue = f"bench-celery-{system}-{uuid.uuid4().hex[:8]}"
    producer = Producer(system, broker, queue, lease_s, concurrency)
    ids: list[str] = []
    try:
        started = time.perf_counter()
        ids = [producer.enqueue("noop") for _ in range(tasks)]
        enqueue_s = time.perf_counter() - started
        with consumer_process(system, broker, queue, concurrency, lease_s, markers):
            deadline = time.monotonic() + 600
            finished: list[float] = []
            for task_id in ids:
                while (done := producer.done_at(task_id)) is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{system}: task {task_id} did not finish")
                    time.sleep(0.02)
                finished.append(done)
        span = max(finished) - min(finished)
        return {
            "enqueue_per_s": tasks / enqueue_s,
            "consume_per_s": (tasks - 1) / span if span > 0 else float("inf"),
        }
    finally:
        producer.cleanup(ids, broker, queue)


def crash_redelivery(
    system: str, broker: str, lease_s: float, wait_s: float, markers_root: Path
) -> float | None:
    """Seconds from SIGKILL of a busy consumer until its task starts again (None: not
    within ``wait_s``)."""
    queue = f"bench-celery-crash-{system}-{uuid.uuid4().hex[:8]}"
    markers = Path(tempfile.mkdtemp(dir=markers_root))
    producer = Producer(system, broker, queue, lease_s, 1)
    ids: list[str] = []
    try:
        with consumer_process(system, broker, queue, 1, lease_s, markers) as victim:
            ids.append(producer.enqueue("sleep_marked", [120.0]))
            _wait(lambda: len(_starts(markers)) >= 1, 60, "the task did not start")
            with consumer_process(system, broker, queue, 1, lease_s, markers):
                victim.kill()
                victim.wait()
                killed = time.time()
                deadline = time.monotonic() + wait_s
                while time.monotonic() < deadline:
                    starts = _starts(markers)
                    if len(starts) >= 2:
                        return float(starts[1]["time"] - killed)
                    time.sleep(0.02)
                return None
    finally:
        producer.cleanup(ids, broker, queue)


def _wait(predicate: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--lease", type=float, default=5.0, help="taskserve lease_s")
    parser.add_argument("--brokers", default="redis,rabbitmq")
    parser.add_argument("--crash-wait", type=float, default=None, help="default: 4 leases")
    parser.add_argument("--consume", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        consume(args.consume, args.broker, args.queue, args.concurrency, args.lease)
        return
    logging.basicConfig(level=logging.ERROR)
    crash_wait = args.crash_wait or 4 * args.lease
    markers_root = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    print(
        f"{args.tasks} no-op tasks, concurrency {args.concurrency}, "
        f"taskserve lease {args.lease:g}s, one consumer process each"
    )
    for broker in args.brokers.split(","):
        results = {
            s: throughput(s, broker, args.tasks, args.concurrency, args.lease, markers_root)
            for s in SYSTEMS
        }
        print(f"\n== {broker} ==")
        print(f"{'':18} {'consume tasks/s':>16} {'enqueue tasks/s':>16}")
        for system in SYSTEMS:
            r = results[system]
            print(f"{LABELS[system]:18} {r['consume_per_s']:16.0f} {r['enqueue_per_s']:16.0f}")
        ours = results["taskserve"]
        for other in ("raw", "ray"):
            print(
                f"taskserve-celery / {LABELS[other]}: consume "
                f"{ours['consume_per_s'] / results[other]['consume_per_s']:.2f}, enqueue "
                f"{ours['enqueue_per_s'] / results[other]['enqueue_per_s']:.2f}"
            )
        for system in ("taskserve", "ray"):
            seconds = crash_redelivery(system, broker, args.lease, crash_wait, markers_root)
            shown = f"{seconds:.1f}s" if seconds is not None else f"not within {crash_wait:g}s"
            note = f" (lease {args.lease:g}s)" if system == "taskserve" else ""
            print(f"crash to redelivery, {LABELS[system]}: {shown}{note}")


if __name__ == "__main__":
    main()
