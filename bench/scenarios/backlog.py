"""Cost as the backlog grows: enqueue, status read, queue length and bytes per task at one size.

No consumer runs. One system, on a fresh queue:

1. **fill**: after one warm-up call (which connects), ``fill_threads`` threads
   sharing one producer of the system (its own enqueue call, as a deployment
   shares its adapter) enqueue ``size`` no-op tasks; the fill rate is the
   tasks over the wall time of the fill;
2. **bytes per task**: what the store holds more after the fill than before,
   over ``size`` (:mod:`bench.scenarios.backlog_probes` says what is counted);
3. **enqueue**: ``enqueue_calls`` more calls from one thread, calls/s;
4. **status read**: ``status_reads`` reads of tasks drawn at random from the
   backlog through the system's own status call: p50 and p99 latency;
5. **queue length**: ``metrics_reads`` calls of its queue-length call
   (taskserve: ``get_metrics_sync``): p50 and p99 latency, and the last
   length read (the backlog, the warm-up and the further calls: a check that
   the call counts every task).

A system whose store is a Redis runs this in a child process on a private
Redis (:func:`bench.isolated.run_isolated`), so that its memory holds the run
only.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.contenders import Contender
from bench.engines.base import Trial, TrialOptions
from bench.scenarios.backlog_probes import probes_of
from bench.stats import percentile

BACKLOG_TASK = "noop"
_T = TypeVar("_T")


@dataclass(frozen=True)
class BacklogResult:
    """The costs of one system at one backlog size (rates per second, times in
    seconds); None where the system has no such call or store reading."""

    key: str
    size: int
    fill_threads: int
    fill_rate: float
    enqueue_calls: int
    enqueue_rate: float
    status_reads: int
    status_p50_s: float | None
    status_p99_s: float | None
    metrics_reads: int
    metrics_p50_s: float | None
    metrics_p99_s: float | None
    queue_length: int | None
    bytes_per_task: float | None
    store: str


def _enqueue_share(
    trial: Trial,
    task: str,
    count: int,
    start: threading.Barrier,
    ids: list[str],
    errors: list[BaseException],
) -> None:
    start.wait()
    try:
        for _ in range(count):
            ids.append(trial.enqueue(task))
    except BaseException as e:
        errors.append(e)


def fill(trial: Trial, task: str, count: int, threads: int) -> tuple[list[str], float]:
    """Enqueue ``count`` ``task`` tasks from ``threads`` threads sharing ``trial``'s
    producer: (their ids, in the order the calls returned; tasks per second)."""
    threads = max(1, min(threads, count))
    shares = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
    start = threading.Barrier(threads + 1)
    ids: list[str] = []
    errors: list[BaseException] = []
    workers = [
        threading.Thread(target=_enqueue_share, args=(trial, task, share, start, ids, errors))
        for share in shares
    ]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    return ids, count / wall


def _timed(call: Callable[[_T], object], arguments: Iterable[_T]) -> list[float]:
    """Seconds of each ``call(argument)``."""
    taken = []
    for argument in arguments:
        began = time.perf_counter()
        call(argument)
        taken.append(time.perf_counter() - began)
    return taken


def _p(values: list[float], fraction: float) -> float | None:
    return percentile(values, fraction) if values else None


def measure_backlog(
    key: str,
    broker: str,
    size: int,
    fill_threads: int,
    enqueue_calls: int,
    status_reads: int,
    metrics_reads: int,
    workdir: str,
) -> BacklogResult:
    """The costs of the system ``key`` at a backlog of ``size`` tasks."""
    if size < 1 or enqueue_calls < 1:
        raise ValueError("a backlog and the enqueue measurement need at least one task each")
    contender = Contender(*key.split("/"))
    run_id = uuid.uuid4().hex[:12]
    folder = Path(workdir)
    markers = folder / f"markers-{run_id}"
    markers.mkdir(parents=True, exist_ok=True)
    trial = contender.open(
        TrialOptions(run_id=run_id, concurrency=1, workdir=folder, markers=markers)
    )
    try:
        with probes_of(trial, broker) as probes:
            trial.enqueue(BACKLOG_TASK)
            before = probes.store_bytes() if probes.store_bytes else None
            ids, fill_rate = fill(trial, BACKLOG_TASK, size, fill_threads)
            after = probes.store_bytes() if probes.store_bytes else None
            began = time.perf_counter()
            for _ in range(enqueue_calls):
                trial.enqueue(BACKLOG_TASK)
            enqueue_rate = enqueue_calls / (time.perf_counter() - began)
            drawn = random.Random(size).choices(ids, k=status_reads)
            status = _timed(probes.status, drawn) if probes.status else []
            length: int | None = None
            metrics: list[float] = []
            read_length = probes.length
            if read_length is not None:
                metrics = _timed(lambda _: read_length(), range(metrics_reads))
                length = read_length()
    finally:
        trial.close()
    return BacklogResult(
        key=key,
        size=size,
        fill_threads=fill_threads,
        fill_rate=fill_rate,
        enqueue_calls=enqueue_calls,
        enqueue_rate=enqueue_rate,
        status_reads=len(status),
        status_p50_s=_p(status, 0.5),
        status_p99_s=_p(status, 0.99),
        metrics_reads=len(metrics),
        metrics_p50_s=_p(metrics, 0.5),
        metrics_p99_s=_p(metrics, 0.99),
        queue_length=length,
        bytes_per_task=None if before is None or after is None else (after - before) / size,
        store=probes.store,
    )
