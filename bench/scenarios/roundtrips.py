"""Redis round trips per task: enqueue, consume and status read, from ``MONITOR``.

Runs in a child process on a private Redis (:func:`bench.isolated.run_isolated`),
which is then the broker and the state store of every Redis-backed system
(on RabbitMQ, only the state store: AMQP traffic is not counted). Per run,
on a fresh queue with one consumer process:

1. the consumer starts and runs one warm-up task (connections made, scripts
   loaded); its commands per second while idle are then counted over
   ``idle_s``;
2. the consumer is paused (SIGSTOP) and ``tasks`` ``stamp`` tasks are
   enqueued: every command in between is the producer's (**enqueue**);
3. the consumer is resumed (SIGCONT) until every task has recorded its start
   in a file and ``SETTLE_S`` has passed: the commands in between, minus the
   idle rate over ``SETTLE_S``, are the consumer's (**consume**: fetch, state
   writes, acknowledgement, and its periodic work while it drains);
4. the consumer is paused again and each task's status is read once
   (**status read**).

Phases are delimited by marks in the server's own command order
(:class:`~bench.redis_monitor.CommandRecorder`); round trips are the
clients' commands (a ``MULTI``/``EXEC`` block one), apart from the commands
Lua scripts ran. Each count is divided by ``tasks``. A command a paused
consumer had left blocked on the server may be counted one phase early (at
most one per consumer connection).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.contenders import Contender
from bench.engines.base import TrialOptions
from bench.process import ConsumerProcess
from bench.redis_monitor import CommandRecorder, Counts

SETTLE_S = 0.3
"""Wait after the last task's start, for its SUCCESS to be written."""
DRAIN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class RoundTripResult:
    """Redis round trips per task by phase, and per second of an idle consumer;
    ``commands``: round trips per task of each command, by phase;
    ``in_scripts``: commands run inside Lua scripts per task, by phase."""

    key: str
    tasks: int
    enqueue: float
    consume: float
    status: float
    idle_per_s: float
    commands: dict[str, dict[str, float]]
    in_scripts: dict[str, float]


@contextmanager
def _paused(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _wait_stamps(markers: Path, count: int) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while sum(1 for _ in markers.glob("stamp-*.json")) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} tasks started within {DRAIN_TIMEOUT_S:g}s")
        time.sleep(0.01)


def _per_task(counts: Counts, tasks: int) -> dict[str, float]:
    return {name: count / tasks for name, count in counts.by_command.items()}


def count_round_trips(
    key: str, tasks: int, concurrency: int, idle_s: float, workdir: str
) -> RoundTripResult:
    """Count the Redis commands of one run of the system ``key``."""
    contender = Contender(*key.split("/"))
    run_id = uuid.uuid4().hex[:12]
    folder = Path(workdir)
    markers = folder / f"markers-{run_id}"
    markers.mkdir(parents=True, exist_ok=True)
    trial = contender.open(
        TrialOptions(run_id=run_id, concurrency=concurrency, workdir=folder, markers=markers)
    )
    try:
        consumer = ConsumerProcess(trial.consumer(), folder / f"{run_id}.log", markers)
        with consumer, CommandRecorder() as recorder:
            trial.enqueue("stamp", [uuid.uuid4().hex])
            _wait_stamps(markers, 1)
            time.sleep(min(idle_s, 0.5))
            start = recorder.mark()
            time.sleep(idle_s)
            idle = recorder.between(start, recorder.mark()).round_trips / idle_s
            with _paused(consumer.pid):
                start = recorder.mark()
                ids = [trial.enqueue("stamp", [uuid.uuid4().hex]) for _ in range(tasks)]
                enqueued = recorder.between(start, start := recorder.mark())
            _wait_stamps(markers, tasks + 1)
            time.sleep(SETTLE_S)
            with _paused(consumer.pid):
                consumed = recorder.between(start, start := recorder.mark())
                unfinished = [task_id for task_id in ids if not trial.succeeded(task_id)]
                read = recorder.between(start, recorder.mark())
            if unfinished:
                raise RuntimeError(f"{len(unfinished)} of {tasks} tasks not SUCCESS after draining")
    finally:
        trial.close()
    return RoundTripResult(
        key=key,
        tasks=tasks,
        enqueue=enqueued.round_trips / tasks,
        consume=max(0.0, consumed.round_trips - idle * SETTLE_S) / tasks,
        status=read.round_trips / tasks,
        idle_per_s=idle,
        commands={
            "enqueue": _per_task(enqueued, tasks),
            "consume": _per_task(consumed, tasks),
            "status": _per_task(read, tasks),
        },
        in_scripts={
            "enqueue": enqueued.in_scripts / tasks,
            "consume": consumed.in_scripts / tasks,
            "status": read.in_scripts / tasks,
        },
    )
