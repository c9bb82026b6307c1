"""Benchmark of the Dramatiq adapter against raw Dramatiq (not part of the tests).

    python bench/bench_dramatiq.py [--tasks 2000] [--threads 8] [--rounds 3]

For each broker (Redis, then RabbitMQ) it measures, in the same run:

* no-op task throughput of taskserve-dramatiq and of raw Dramatiq with
  equivalent settings: the same broker, the same number of worker threads,
  the same prefetch (one message per thread) and the same idle timeout. The
  tasks are queued first, then the consumer is started and timed until every
  task has run. The ratio taskserve / raw is printed per broker;
* crash-to-redelivery time: a consumer process is killed with SIGKILL while it
  runs a task, and the time until a second, idle consumer process starts the
  task again is measured (bounded by the lease on Redis, by the closed
  connection on RabbitMQ).

Needs Redis on 127.0.0.1:6379 and RabbitMQ on 127.0.0.1:5672 (guest/guest);
everything it creates is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from taskserve import TaskProcessorConfig, TaskState, instantiate_adapter_from_config
from taskserve.worker import READY_LINE
from taskserve_dramatiq import DramatiqAdapterConfig
from taskserve_dramatiq.harness import DramatiqHarness

REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
WORKER_TIMEOUT_S = 0.1


# -- handlers (also imported by the consumer processes of the crash test) -----
def noop() -> None:
    """The task whose throughput is measured."""


def hold(seconds: float) -> float:
    """A task that runs long enough to be killed mid-run."""
    time.sleep(seconds)
    return seconds


HANDLERS = {"noop": noop, "hold": hold}


# -- brokers -------------------------------------------------------------------
@dataclass(frozen=True)
class Broker:
    """One broker the benchmark runs on."""

    name: str
    url: str

    def adapter_config(self, unique: str) -> DramatiqAdapterConfig:
        if self.name == "redis":
            return DramatiqAdapterConfig(
                broker_url=self.url,
                results_prefix=f"bench-{unique}",
                broker_options={"namespace": f"bench-{unique}"},
                worker_timeout_s=WORKER_TIMEOUT_S,
            )
        return DramatiqAdapterConfig(
            broker_url=self.url,
            results_url=REDIS_URL,
            results_prefix=f"bench-{unique}",
            worker_timeout_s=WORKER_TIMEOUT_S,
        )

    def raw_broker(self, unique: str) -> dramatiq.Broker:
        if self.name == "redis":
            return RedisBroker(url=self.url, namespace=f"bench-raw-{unique}")
        return RabbitmqBroker(url=self.url, confirm_delivery=True)


BROKERS = (Broker("redis", REDIS_URL), Broker("rabbitmq", RABBITMQ_URL))


def _config(broker: Broker, unique: str, **fields: Any) -> TaskProcessorConfig:
    queue = f"bench-{unique}"
    return TaskProcessorConfig(
        queue_name=queue,
        adapter_config=broker.adapter_config(unique),
        failed_task_queue_name=f"{queue}.failed",
        unprocessable_task_queue_name=f"{queue}.unprocessable",
        **fields,
    )


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:.0f}s")
        time.sleep(0.005)


class _Counter:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.value += 1


# -- throughput ------------------------------------------------------------------
def taskserve_throughput(broker: Broker, tasks: int, threads: int) -> float:
    """No-op tasks per second through the taskserve Dramatiq adapter."""
    unique = uuid.uuid4().hex[:10]
    config = _config(broker, unique, consumer_concurrency=threads)
    adapter = instantiate_adapter_from_config(config)
    counter = _Counter()

    def counted_noop() -> None:
        counter.add()

    adapter.register_task_handle(counted_noop, "noop")
    try:
        ids = [adapter.enqueue_task_sync("noop").id for _ in range(tasks)]
        started = time.perf_counter()
        adapter.start_consumer()
        _wait(lambda: counter.value >= tasks, 600, "the tasks did not run")
        elapsed = time.perf_counter() - started
        adapter.stop_consumer(timeout=30)
        unfinished = [i for i in ids if adapter.get_task_status_sync(i).status != TaskState.SUCCESS]
        if unfinished:
            raise RuntimeError(f"{len(unfinished)} tasks did not end SUCCESS")
        return tasks / elapsed
    finally:
        adapter.shutdown()
        DramatiqHarness().cleanup(config)


def raw_throughput(broker: Broker, tasks: int, threads: int) -> float:
    """No-op tasks per second through raw Dramatiq (default middleware)."""
    unique = uuid.uuid4().hex[:10]
    raw = broker.raw_broker(unique)
    queue = f"bench-raw-{unique}"
    counter = _Counter()

    @dramatiq.actor(broker=raw, queue_name=queue, actor_name=f"noop_{unique}")
    def counted_noop() -> None:
        counter.add()

    worker = dramatiq.Worker(
        raw, worker_threads=threads, worker_timeout=int(WORKER_TIMEOUT_S * 1000)
    )
    worker.queue_prefetch = threads
    try:
        for _ in range(tasks):
            counted_noop.send()
        started = time.perf_counter()
        worker.start()
        _wait(lambda: counter.value >= tasks, 600, "the raw tasks did not run")
        elapsed = time.perf_counter() - started
        return tasks / elapsed
    finally:
        worker.stop(timeout=30_000)
        raw.flush_all()
        _delete_raw(broker, raw, counted_noop.queue_name, unique)
        raw.close()


def _delete_raw(broker: Broker, raw: dramatiq.Broker, queue: str, unique: str) -> None:
    if isinstance(raw, RedisBroker):
        for key in raw.client.scan_iter(match=f"bench-raw-{unique}:*"):
            raw.client.delete(key)
    elif isinstance(raw, RabbitmqBroker):
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            raw.channel.queue_delete(name)


# -- crash to redelivery -------------------------------------------------------------
@contextmanager
def _consumer_process(config: TaskProcessorConfig) -> Iterator[subprocess.Popen[str]]:
    data = config.model_dump(mode="json", exclude={"adapter", "adapter_config"})
    data["adapter"] = "dramatiq"
    data["adapter_config"] = config.adapter_config.model_dump(mode="json")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskserve.worker",
            "--config",
            json.dumps(data),
            "--handlers",
            "bench_dramatiq:HANDLERS",
            "--concurrency",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if READY_LINE not in line:
            raise RuntimeError(f"consumer did not start: {line!r}")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def crash_to_redelivery(broker: Broker, lease_s: float) -> float:
    """Seconds from a consumer's SIGKILL to its task's start on another consumer."""
    unique = uuid.uuid4().hex[:10]
    config = _config(broker, unique, lease_s=lease_s)
    producer = instantiate_adapter_from_config(config)
    try:
        with _consumer_process(config) as first:
            task = producer.enqueue_task_sync("hold", [lease_s * 4])
            _wait(
                lambda: producer.get_task_status_sync(task.id).status == TaskState.STARTED,
                60,
                "the task did not start",
            )
            with _consumer_process(config):
                os.kill(first.pid, signal.SIGKILL)
                killed = time.perf_counter()
                first.wait()
                _wait(
                    lambda: producer.get_task_status_sync(task.id).attempts >= 2,
                    lease_s * 10 + 60,
                    "the task was not delivered again",
                )
                return time.perf_counter() - killed
    finally:
        producer.shutdown()
        DramatiqHarness().cleanup(config)


# -- main ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="no-op tasks per round")
    parser.add_argument("--threads", type=int, default=8, help="worker threads")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (the median is kept)")
    parser.add_argument("--lease", type=float, default=5.0, help="lease_s of the crash test")
    args = parser.parse_args(argv)
    print(
        f"no-op throughput: {args.tasks} tasks, {args.threads} worker threads, "
        f"prefetch {args.threads}, median of {args.rounds} rounds"
    )
    for broker in BROKERS:
        ours: list[float] = []
        raw: list[float] = []
        for _ in range(args.rounds):
            raw.append(raw_throughput(broker, args.tasks, args.threads))
            ours.append(taskserve_throughput(broker, args.tasks, args.threads))
        ours_m, raw_m = statistics.median(ours), statistics.median(raw)
        print(
            f"  {broker.name:9s} raw Dramatiq {raw_m:8.0f} tasks/s   taskserve-dramatiq "
            f"{ours_m:8.0f} tasks/s   ratio taskserve/raw {ours_m / raw_m:.2f}"
        )
    print(f"crash to redelivery (lease_s={args.lease:g}, SIGKILL, an idle second consumer):")
    for broker in BROKERS:
        seconds = crash_to_redelivery(broker, args.lease)
        print(f"  {broker.name:9s} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
