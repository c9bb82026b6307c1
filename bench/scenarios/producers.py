"""End to end with a producer running: tasks enqueued while the consumer works.

One consumer process runs (the runner's settings); the producer, this
process's main thread, enqueues for ``duration_s`` seconds, either paced at
``rate`` tasks/s (an open-loop schedule: the i-th call is due at
``i / rate`` after the start and is sent as soon as it is due) or, with no
rate, as fast as it can, sharing the machine with the consumer and the
broker. The consumer is not throttled: what it cannot keep up with is the
backlog.

SUCCESS is observed by :class:`~bench.watcher.VisibilityWatcher` while the
producer runs. Reported: the rate the producer achieved, the rate of
SUCCESS visible within the producer's window, the backlog when the producer
stops (enqueued, not yet seen SUCCESS), and the latency from just before
each enqueue call to SUCCESS visible, over every task once all are done
(waited for up to ``drain_wait_s``; over the ones done if they are not).
"""

from __future__ import annotations

import bisect
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.contenders import Contender
from bench.engines.base import Trial, TrialOptions
from bench.process import ConsumerProcess
from bench.stats import percentile
from bench.watcher import VisibilityWatcher

DRAIN_WAIT_S = 120.0


@dataclass(frozen=True)
class ProducerPlan:
    """What one run does; ``rate`` None means an unlimited producer."""

    task: str
    rate: float | None
    duration_s: float
    concurrency: int
    drain_wait_s: float = DRAIN_WAIT_S


@dataclass(frozen=True)
class ProducerResult:
    """One run with a producer running (rates in tasks/s, times in seconds)."""

    key: str
    task: str
    target_rate: float | None
    duration_s: float
    enqueued: int
    enqueue_rate: float
    completed_rate: float
    backlog: int
    drained: bool
    latency_p50_s: float | None
    latency_p99_s: float | None


def _produce(trial: Trial, watcher: VisibilityWatcher, plan: ProducerPlan) -> list[float]:
    """Enqueue for ``plan.duration_s``; the time each call started."""
    sent: list[float] = []
    start = time.perf_counter()
    end = start + plan.duration_s
    while True:
        now = time.perf_counter()
        if plan.rate is not None:
            due = start + len(sent) / plan.rate
            if due >= end:
                break
            if due > now:
                time.sleep(due - now)
                now = time.perf_counter()
        elif now >= end:
            break
        sent.append(now)
        watcher.add(trial.enqueue(plan.task))
    return sent


def run_with_producer(contender: Contender, plan: ProducerPlan, workdir: Path) -> ProducerResult:
    """One run of ``contender`` with a producer enqueueing while its consumer works."""
    run_id = uuid.uuid4().hex[:12]
    markers = workdir / f"markers-{run_id}"
    markers.mkdir(parents=True, exist_ok=True)
    options = TrialOptions(
        run_id=run_id, concurrency=plan.concurrency, workdir=workdir, markers=markers
    )
    trial = contender.open(options)
    try:
        consumer = ConsumerProcess(trial.consumer(), workdir / f"{run_id}.log", markers)
        with VisibilityWatcher(trial) as watcher, consumer:
            watcher.start()
            sent = _produce(trial, watcher, plan)
            stopped = time.perf_counter()
            try:
                watcher.wait(len(sent), plan.drain_wait_s)
                drained = True
            except TimeoutError:
                drained = False
            visible = list(watcher.visible_at)
    finally:
        trial.close()
    if len(sent) < 2:
        raise RuntimeError(f"{contender.key}: the producer sent {len(sent)} task(s)")
    window = stopped - sent[0]
    latencies = [seen - started for seen, started in zip(visible, sent, strict=False)]
    in_window = bisect.bisect_right(visible, stopped)
    return ProducerResult(
        key=contender.key,
        task=plan.task,
        target_rate=plan.rate,
        duration_s=window,
        enqueued=len(sent),
        enqueue_rate=(len(sent) - 1) / (sent[-1] - sent[0]),
        completed_rate=in_window / window,
        backlog=len(sent) - in_window,
        drained=drained,
        latency_p50_s=percentile(latencies, 0.5) if latencies else None,
        latency_p99_s=percentile(latencies, 0.99) if latencies else None,
    )
