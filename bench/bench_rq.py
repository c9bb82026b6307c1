"""Benchmark of the RQ adapter (not part of the tests).

    python bench/bench_rq.py [--tasks 1000] [--rounds 3] [--lease 2] [--redis-url redis://127.0.0.1:6379/0]

1. No-op task throughput, in one run, of:
   * taskserve-rq (one embedded worker thread: concurrency 1),
   * raw RQ ``SimpleWorker`` (one worker, jobs run in its process),
   * raw RQ ``Worker`` (one worker forking a work horse per job),
   with equivalent settings: the same Redis, JSON serializer, one worker,
   RQ's logging at WARNING, and the consumer timed from its start until every
   task ran (enqueue times are shown apart). Ratios are printed against the
   raw SimpleWorker.
2. Crash-to-redelivery time: a consumer process is killed with SIGKILL while
   it runs a task; a second, idle consumer is already running. The time from
   the kill until the task starts again is reported with the lease.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from rq import Queue, SimpleWorker, Worker
from rq.serializers import JSONSerializer

from taskserve import TaskProcessorConfig, TaskState, instantiate_adapter_from_config
from taskserve_rq import RQAdapterConfig
from taskserve_rq.harness import RQHarness


def noop() -> None:
    """The benchmark's task: nothing."""


def sleep_task(seconds: float) -> float:
    """A task long enough to be killed in the middle of."""
    time.sleep(seconds)
    return seconds


NOOP_PATH = "bench_rq.noop"
"""How raw RQ names ``noop`` (this file's directory is on ``sys.path`` when run)."""

CONSUMER_HANDLERS: dict[str, Callable[..., Any]] = {"noop": noop, "sleep": sleep_task}


def _config(redis_url: str, lease_s: float) -> TaskProcessorConfig:
    queue = f"bench-rq-{uuid.uuid4().hex[:10]}"
    return TaskProcessorConfig(
        queue_name=queue,
        adapter_config=RQAdapterConfig(redis_url=redis_url, key_prefix=f"bench-{queue}"),
        lease_s=lease_s,
        max_retries=3,
        failed_task_queue_name=f"{queue}.failed",
    )


def _clean_raw_queue(client: redis.Redis, queue: Queue) -> None:
    for registry in (queue.finished_job_registry, queue.failed_job_registry):
        for job_id in registry.get_job_ids():
            client.delete(f"rq:job:{job_id}", f"rq:results:{job_id}", f"rq:executions:{job_id}")
    for key in client.scan_iter(match=f"rq:*:{queue.name}*"):
        client.delete(key)
    client.delete(queue.key)
    client.srem("rq:queues", queue.key)


def bench_raw(client: redis.Redis, worker_class: type[Worker], tasks: int) -> tuple[float, float]:
    """(enqueue seconds, consume seconds) of raw RQ with ``worker_class``."""
    queue = Queue(
        f"bench-raw-{uuid.uuid4().hex[:10]}", connection=client, serializer=JSONSerializer
    )
    try:
        started = time.perf_counter()
        for _ in range(tasks):
            queue.enqueue(NOOP_PATH)
        enqueued = time.perf_counter() - started
        worker = worker_class([queue], connection=client, serializer=JSONSerializer)
        worker.log.setLevel(logging.WARNING)
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        started = time.perf_counter()
        try:
            worker.work(burst=True, logging_level="WARNING")
        finally:  # a command-line worker takes over SIGINT and SIGTERM
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        consumed = time.perf_counter() - started
        assert queue.count == 0 and len(queue.finished_job_registry) == tasks, "jobs failed"
        return enqueued, consumed
    finally:
        _clean_raw_queue(client, queue)


def bench_taskserve(redis_url: str, tasks: int, concurrency: int) -> tuple[float, float]:
    """(enqueue seconds, consume seconds) of taskserve-rq with ``concurrency`` threads."""
    config = _config(redis_url, lease_s=30.0)
    producer = instantiate_adapter_from_config(config)
    done = threading.Event()
    count = 0
    lock = threading.Lock()

    def counted() -> None:
        nonlocal count
        with lock:
            count += 1
            if count == tasks:
                done.set()

    try:
        started = time.perf_counter()
        ids = [producer.enqueue_task_sync("noop").id for _ in range(tasks)]
        enqueued = time.perf_counter() - started
        consumer = instantiate_adapter_from_config(config)
        consumer.initialize(consumer_concurrency=concurrency)
        consumer.register_task_handle(counted, "noop")
        started = time.perf_counter()
        consumer.start_consumer()
        if not done.wait(600):
            raise RuntimeError(f"only {count} of {tasks} tasks ran")
        while producer.get_task_status_sync(ids[-1]).status is not TaskState.SUCCESS:
            time.sleep(0.001)
        consumed = time.perf_counter() - started
        consumer.shutdown()
        return enqueued, consumed
    finally:
        producer.shutdown()
        RQHarness().cleanup(config)


def _spawn_consumer(config: TaskProcessorConfig) -> subprocess.Popen[bytes]:
    data = config.model_dump(mode="json", exclude={"adapter_config"})
    data["adapter_config"] = config.adapter_config.model_dump(mode="json")
    process = subprocess.Popen(
        [sys.executable, __file__, "--consumer", json.dumps(data)],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if b"ready" not in line:
        raise RuntimeError(f"consumer did not start: {line!r}")
    return process


def bench_redelivery(redis_url: str, lease_s: float) -> float:
    """Seconds from SIGKILL of a consumer mid-task until the task starts again."""
    config = _config(redis_url, lease_s)
    producer = instantiate_adapter_from_config(config)
    doomed = _spawn_consumer(config)
    survivor: subprocess.Popen[bytes] | None = None
    try:
        task = producer.enqueue_task_sync("sleep", [1.0])
        while producer.get_task_status_sync(task.id).status is not TaskState.STARTED:
            time.sleep(0.005)
        survivor = _spawn_consumer(config)  # idle: the queue is empty
        killed_at = time.perf_counter()
        os.kill(doomed.pid, signal.SIGKILL)
        while producer.get_task_status_sync(task.id).attempts < 2:
            time.sleep(0.005)
        elapsed = time.perf_counter() - killed_at
        while producer.get_task_status_sync(task.id).status is not TaskState.SUCCESS:
            time.sleep(0.01)
        return elapsed
    finally:
        for process in (doomed, survivor):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(30)
        producer.shutdown()
        RQHarness().cleanup(config)


def run_consumer(config_json: str) -> None:
    """Child mode: a consumer process running the benchmark's handlers."""
    from taskserve.worker import run_worker

    logging.basicConfig(level=logging.ERROR)
    run_worker(TaskProcessorConfig.from_dict(json.loads(config_json)), CONSUMER_HANDLERS, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the median counts")
    parser.add_argument("--lease", type=float, default=2.0, help="lease_s of the crash test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--consumer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consumer:
        run_consumer(args.consumer)
        return
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("rq.worker").setLevel(logging.WARNING)
    client = redis.Redis.from_url(args.redis_url)
    n = args.tasks
    print(
        f"no-op tasks: {n} per run, median of {args.rounds} interleaved runs, JSON "
        f"serializer, Redis {args.redis_url}"
    )
    contenders: dict[str, Callable[[], tuple[float, float]]] = {
        "raw RQ SimpleWorker": lambda: bench_raw(client, SimpleWorker, n),
        "raw RQ Worker (fork per job)": lambda: bench_raw(client, Worker, n),
        "taskserve-rq (concurrency 1)": lambda: bench_taskserve(args.redis_url, n, 1),
        "taskserve-rq (concurrency 4)": lambda: bench_taskserve(args.redis_url, n, 4),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            runs[name].append(run())
    results = {
        name: (statistics.median(e for e, _ in times), statistics.median(c for _, c in times))
        for name, times in runs.items()
    }
    base = n / results["raw RQ SimpleWorker"][1]
    print(f"{'':32} {'enqueue/s':>10} {'consume/s':>10} {'vs SimpleWorker':>16}")
    for name, (enqueued, consumed) in results.items():
        rate = n / consumed
        print(f"{name:32} {n / enqueued:10.0f} {rate:10.0f} {rate / base:15.2f}x")
    ours = n / results["taskserve-rq (concurrency 1)"][1]
    forked = n / results["raw RQ Worker (fork per job)"][1]
    print(f"ratio taskserve-rq / raw RQ SimpleWorker: {ours / base:.2f}")
    print(f"ratio taskserve-rq / raw RQ Worker (fork): {ours / forked:.2f}")
    redelivery = bench_redelivery(args.redis_url, args.lease)
    print(
        f"crash-to-redelivery: {redelivery:.2f}s after SIGKILL (lease_s={args.lease:g}; "
        "an idle second consumer was running)"
    )


if __name__ == "__main__":
    main()
