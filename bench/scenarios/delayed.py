"""Delayed tasks: how late after its due time a task enqueued with ``delay_s`` starts.

One taskserve consumer process (concurrency 8) runs; a producer enqueues
``tasks`` ``stamp`` tasks, one every ``interval_s``, each with a delay drawn
from ``delays_s`` (so due times interleave with enqueues, as in real traffic).
Each task records when it started; lateness is that start minus the task's
``due_at``. A task that starts before its due time is counted as early (the
promise is that none does).
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.contenders import Contender
from bench.engines.adapters import AdapterTrial
from bench.engines.base import TrialOptions
from bench.process import ConsumerProcess
from bench.stats import percentile
from bench.tasks import stamps

CONCURRENCY = 8
WAIT_AFTER_LAST_DUE_S = 60.0


@dataclass(frozen=True)
class DelayResult:
    """Lateness of delayed tasks after their due time, in seconds."""

    key: str
    tasks: int
    started: int
    early: int
    lateness_p50_s: float | None
    lateness_p99_s: float | None
    lateness_max_s: float | None


def delayed_lateness(
    contender: Contender,
    tasks: int,
    interval_s: float,
    delays_s: tuple[float, float],
    workdir: Path,
) -> DelayResult:
    """Enqueue delayed tasks while a consumer runs; measure how late each starts."""
    run_id = uuid.uuid4().hex[:12]
    markers = workdir / f"markers-{run_id}"
    markers.mkdir(parents=True, exist_ok=True)
    options = TrialOptions(
        run_id=run_id, concurrency=CONCURRENCY, workdir=workdir, markers=markers, lease_s=5.0
    )
    trial = contender.open(options)
    if not isinstance(trial, AdapterTrial):
        trial.close()
        raise TypeError(f"{contender.key}: delayed tasks are measured on taskserve adapters")
    due: dict[str, float] = {}
    draw = random.Random(run_id)
    try:
        with ConsumerProcess(trial.consumer(), workdir / f"{run_id}-consumer.log", markers):
            for _ in range(tasks):
                label = uuid.uuid4().hex
                task = trial.producer.enqueue_task_sync(
                    "stamp", [label], task_id=label, delay_s=draw.uniform(*delays_s)
                )
                assert task.due_at is not None
                due[label] = task.due_at
                time.sleep(interval_s)
            deadline = time.monotonic() + max(delays_s) + WAIT_AFTER_LAST_DUE_S
            while len(stamps(markers)) < tasks and time.monotonic() < deadline:
                time.sleep(0.05)
            started = stamps(markers)
    finally:
        trial.close()
    lateness = sorted(started[label] - due[label] for label in started if label in due)
    return DelayResult(
        key=contender.key,
        tasks=tasks,
        started=len(lateness),
        early=sum(1 for late in lateness if late < 0),
        lateness_p50_s=percentile(lateness, 0.5) if lateness else None,
        lateness_p99_s=percentile(lateness, 0.99) if lateness else None,
        lateness_max_s=lateness[-1] if lateness else None,
    )
