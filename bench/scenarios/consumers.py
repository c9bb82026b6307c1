"""Several consumer processes draining one queue: throughput and each process's CPU.

On a fresh queue, ``processes`` consumer processes of the system are started
together (each as the runner starts one, :class:`~bench.process.ConsumerProcess`)
and, once all of them consume, paused with SIGSTOP. Then, for each task:

1. ``tasks`` tasks are enqueued by the backlog's fill threads
   (:func:`bench.scenarios.backlog.fill`) while the consumers are paused, so
   the whole backlog is there before any of them takes a task;
2. every process is resumed (SIGCONT, one right after the other) and the
   backlog drains; throughput is the tasks over the time from the first to
   the last SUCCESS visible to a client (the runner's definition, through
   :class:`~bench.watcher.VisibilityWatcher`);
3. each process's CPU time (user + system, from ``/proc/<pid>/stat``) is
   taken from the resume to the last SUCCESS; then the processes are paused
   again for the next task.

A paused consumer that holds the sqlite database's write lock would block
the fill: there the pause is retried until the database is free.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.contenders import Contender
from bench.engines.adapters import AdapterTrial
from bench.engines.base import Trial, TrialOptions
from bench.process import ConsumerProcess
from bench.scenarios.backlog import fill
from bench.watcher import VisibilityWatcher

DRAIN_TIMEOUT_S = 300.0
PAUSE_ATTEMPTS = 100
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ConsumersResult:
    """One drain of ``tasks`` tasks by ``processes`` consumer processes of
    ``concurrency`` each; ``cpu_s``: each process's CPU seconds from its resume
    until the last SUCCESS was seen, ``cpu_window_s`` later."""

    key: str
    task: str
    processes: int
    concurrency: int
    tasks: int
    throughput: float
    drain_s: float
    cpu_s: list[float]
    cpu_window_s: float


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` and its reaped children."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(value) for value in fields[11:15]) / _CLOCK_TICKS


def _holds_sqlite_lock(trial: Trial) -> bool:
    if not isinstance(trial, AdapterTrial) or trial.adapter_name != "sqlite":
        return False
    path = trial.config.adapter_config.path
    with contextlib.closing(sqlite3.connect(path, timeout=0)) as conn:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True
        conn.rollback()
    return False


def _signal(pids: Sequence[int], which: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(pid, which)


def _pause(pids: Sequence[int], trial: Trial) -> None:
    """SIGSTOP every consumer, at a moment none of them blocks the producer."""
    for _ in range(PAUSE_ATTEMPTS):
        _signal(pids, signal.SIGSTOP)
        if not _holds_sqlite_lock(trial):
            return
        _signal(pids, signal.SIGCONT)
        time.sleep(0.01)
    raise RuntimeError(f"the consumers held the database lock at {PAUSE_ATTEMPTS} pauses")


@contextlib.contextmanager
def _consumers(trial: Trial, processes: int, workdir: Path, run_id: str) -> Iterator[list[int]]:
    """``processes`` consumer processes of ``trial``, started together; their pids."""
    markers = workdir / f"markers-{run_id}"
    started = [
        ConsumerProcess(trial.consumer(), workdir / f"{run_id}-{i}.log", markers)
        for i in range(processes)
    ]
    try:
        with ThreadPoolExecutor(processes) as pool:
            for future in [pool.submit(consumer.start) for consumer in started]:
                future.result()
        yield [consumer.pid for consumer in started]
    finally:
        with ThreadPoolExecutor(processes) as pool:
            list(pool.map(lambda consumer: consumer.stop(), started))


@dataclass(frozen=True)
class Drain:
    """What :func:`drain_paused` measured."""

    throughput: float
    drain_s: float
    cpu_s: list[float]
    cpu_window_s: float


def drain_paused(trial: Trial, pids: list[int], task: str, tasks: int, fill_threads: int) -> Drain:
    """Pause the consumer processes ``pids``, fill their queue with ``tasks``
    ``task`` tasks, resume them and wait for every SUCCESS. They run on after,
    whatever happened."""
    _pause(pids, trial)
    try:
        ids, _ = fill(trial, task, tasks, fill_threads)
        with VisibilityWatcher(trial) as watcher:
            for task_id in ids:
                watcher.add(task_id)
            watcher.start()
            before = [cpu_seconds(pid) for pid in pids]
            resumed = time.perf_counter()
            _signal(pids, signal.SIGCONT)
            seen = watcher.wait(tasks, DRAIN_TIMEOUT_S)
            cpu = [cpu_seconds(pid) - start for pid, start in zip(pids, before, strict=True)]
            window = time.perf_counter() - resumed
    finally:
        _signal(pids, signal.SIGCONT)  # a stopped process would not see SIGTERM
    drain_s = seen[-1] - seen[0]
    return Drain((tasks - 1) / drain_s, drain_s, cpu, window)


def drain_with_consumers(
    key: str,
    task_names: Sequence[str],
    tasks: int,
    processes: int,
    concurrency: int,
    fill_threads: int,
    workdir: Path,
) -> list[ConsumersResult]:
    """One backlog of ``tasks`` tasks per name of ``task_names``, drained by the
    same ``processes`` consumer processes of the system ``key``."""
    if tasks < 2 or processes < 1:
        raise ValueError("a drain needs at least 2 tasks and one consumer process")
    contender = Contender(*key.split("/"))
    run_id = uuid.uuid4().hex[:12]
    markers = workdir / f"markers-{run_id}"
    markers.mkdir(parents=True, exist_ok=True)
    trial = contender.open(
        TrialOptions(run_id=run_id, concurrency=concurrency, workdir=workdir, markers=markers)
    )
    results = []
    try:
        with _consumers(trial, processes, workdir, run_id) as pids:
            for task in task_names:
                drain = drain_paused(trial, pids, task, tasks, fill_threads)
                results.append(
                    ConsumersResult(
                        key,
                        task,
                        processes,
                        concurrency,
                        tasks,
                        drain.throughput,
                        drain.drain_s,
                        drain.cpu_s,
                        drain.cpu_window_s,
                    )
                )
    finally:
        trial.close()
    return results
