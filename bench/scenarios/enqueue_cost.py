"""Enqueue cost: calls per second and CPU per call, with one and with several producer threads.

No consumer runs. One producer of the system (one client, as a deployment
shares its adapter between requests) is opened on a fresh queue and warmed
up with one call (which connects); then ``threads`` threads, started
together, make ``calls`` enqueue calls between them. Calls per second are
the calls over the wall time from the start to the last thread's end; CPU
per call is this process's user and system time over the same span
(:func:`resource.getrusage`, microsecond resolution, every thread of the
process) divided by the calls. The
broker's own CPU is not counted.
"""

from __future__ import annotations

import resource
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.contenders import Contender
from bench.engines.base import Trial, TrialOptions


@dataclass(frozen=True)
class EnqueueResult:
    """One measurement of enqueue cost."""

    key: str
    task: str
    threads: int
    calls: int
    calls_per_s: float
    cpu_per_call_s: float


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _call(
    trial: Trial, task: str, count: int, start: threading.Barrier, errors: list[BaseException]
) -> None:
    start.wait()
    try:
        for _ in range(count):
            trial.enqueue(task)
    except BaseException as e:
        errors.append(e)


def enqueue_cost(
    contender: Contender, task: str, calls: int, threads: int, workdir: Path
) -> EnqueueResult:
    """``calls`` enqueue calls of ``contender`` spread over ``threads`` threads."""
    if calls < threads:
        raise ValueError("at least one call per thread")
    run_id = uuid.uuid4().hex[:12]
    markers = workdir / f"markers-{run_id}"
    markers.mkdir(parents=True, exist_ok=True)
    trial = contender.open(
        TrialOptions(run_id=run_id, concurrency=1, workdir=workdir, markers=markers)
    )
    try:
        trial.enqueue(task)
        shares = [calls // threads + (1 if i < calls % threads else 0) for i in range(threads)]
        start = threading.Barrier(threads + 1)
        errors: list[BaseException] = []
        workers = [
            threading.Thread(target=_call, args=(trial, task, share, start, errors))
            for share in shares
        ]
        for worker in workers:
            worker.start()
        start.wait()
        wall, cpu = time.perf_counter(), _cpu_s()
        for worker in workers:
            worker.join()
        wall, cpu = time.perf_counter() - wall, _cpu_s() - cpu
        if errors:
            raise errors[0]
    finally:
        trial.close()
    return EnqueueResult(contender.key, task, threads, calls, calls / wall, cpu / calls)
