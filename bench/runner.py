"""The one runner: N tasks through one system, throughput and latency.

One run of a system on a fresh queue, with one consumer process:

1. **enqueue**: N tasks are sent by one producer thread while no consumer
   runs: the enqueue rate (the first call, which connects, is left out);
2. **drain**: the consumer process starts and works through them; throughput
   is the tasks over the time from the first to the last SUCCESS visible to a
   client (the consumer's start-up is not counted);
3. **one at a time**: ``latency_samples`` tasks, each sent once the previous
   one is seen SUCCESS: the latency from just before the enqueue call to
   SUCCESS being visible, for a task that waits for no other.

SUCCESS is observed by :class:`~bench.watcher.VisibilityWatcher` through each
system's own status call. :func:`size_tasks` turns a short run's throughput
into the N of a run lasting about ``target_s``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.contenders import Contender
from bench.engines.base import Trial, TrialOptions
from bench.process import ConsumerProcess
from bench.stats import percentile
from bench.watcher import VisibilityWatcher

RUN_TIMEOUT_S = 300.0
"""Longest a run may wait for its tasks."""


@dataclass(frozen=True)
class RunPlan:
    """What one run does."""

    task: str
    tasks: int
    concurrency: int
    latency_samples: int = 50


@dataclass(frozen=True)
class RunResult:
    """The measurements of one run (rates in tasks/s, times in seconds)."""

    key: str
    task: str
    tasks: int
    concurrency: int
    throughput: float
    drain_s: float
    enqueue_rate: float
    latency_p50_s: float | None
    latency_p99_s: float | None


def size_tasks(throughput: float, target_s: float, low: int = 100, high: int = 50_000) -> int:
    """N for about ``target_s`` seconds at ``throughput``, rounded to 100."""
    return max(low, min(high, round(throughput * target_s / 100) * 100))


def _send(trial: Trial, watcher: VisibilityWatcher, task: str, count: int) -> list[float]:
    """Enqueue ``count`` tasks one after the other; the time each call started."""
    started: list[float] = []
    for _ in range(count):
        started.append(time.perf_counter())
        watcher.add(trial.enqueue(task))
    return started


def run(contender: Contender, plan: RunPlan, workdir: Path) -> RunResult:
    """One run of ``contender`` as ``plan`` says; everything it creates is deleted."""
    if plan.tasks < 2:
        raise ValueError("a run needs at least 2 tasks")
    run_id = uuid.uuid4().hex[:12]
    markers = workdir / f"markers-{run_id}"
    markers.mkdir(parents=True, exist_ok=True)
    options = TrialOptions(
        run_id=run_id, concurrency=plan.concurrency, workdir=workdir, markers=markers
    )
    trial = contender.open(options)
    try:
        with VisibilityWatcher(trial) as watcher:
            sent = _send(trial, watcher, plan.task, plan.tasks)
            enqueue_rate = (plan.tasks - 1) / (time.perf_counter() - sent[1])
            consumer = ConsumerProcess(trial.consumer(), workdir / f"{run_id}.log", markers)
            with consumer:
                watcher.start()
                seen = watcher.wait(plan.tasks, RUN_TIMEOUT_S)
                drain_s = seen[-1] - seen[0]
                latencies = []
                for done in range(plan.tasks + 1, plan.tasks + plan.latency_samples + 1):
                    started = _send(trial, watcher, plan.task, 1)[0]
                    latencies.append(watcher.wait(done, RUN_TIMEOUT_S)[-1] - started)
    finally:
        trial.close()
    return RunResult(
        key=contender.key,
        task=plan.task,
        tasks=plan.tasks,
        concurrency=plan.concurrency,
        throughput=(plan.tasks - 1) / drain_s,
        drain_s=drain_s,
        enqueue_rate=enqueue_rate,
        latency_p50_s=percentile(latencies, 0.5) if latencies else None,
        latency_p99_s=percentile(latencies, 0.99) if latencies else None,
    )
