"""Batched handlers: drain throughput of a model-like task at several batch sizes.

The task is :mod:`bench.batch_model`'s simulated model: one call at a time,
20 ms per call plus 0.5 ms per input, so a call on 32 inputs does 32 tasks'
work in 36 ms where 32 calls on one take 656 ms. On a fresh queue of
taskserve's adapter, one consumer process (``python -m taskserve.worker``,
concurrency ``concurrency``, every batched handler of the model) starts;
then, for each repetition and each batch size in turn, the backlog of the
handler batched at that size is drained as in the consumers scenario
(:func:`bench.scenarios.consumers.drain_paused`): the consumer is paused,
the backlog filled, the consumer resumed. Throughput is the tasks over the
time from the resume to the last SUCCESS visible to a client (within the
watcher's 10 ms wait step); the model's calls and their sizes are counted
from what its handlers recorded, the consumer's CPU from ``/proc``.

Each backlog holds about ``target_s`` seconds of the model's own work at
its batch size (:func:`backlog_size`), so every drain lasts about as long
whatever the size.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bench.batch_model import BATCH_SIZES, HANDLERS, bound_rate, calls_seen, task_name
from bench.contenders import TASKSERVE, Contender, contenders
from bench.engines.adapters import AdapterTrial
from bench.engines.base import ConsumerCommand, TrialOptions
from bench.process import ConsumerProcess
from bench.scenarios.consumers import drain_paused

if TYPE_CHECKING:
    from bench.suite import Suite

BATCHING = "batching"
"""The scenario's name on the command line."""
MODEL_HANDLERS = "bench.batch_model:HANDLERS"
"""The consumer's ``--handlers``."""


@dataclass(frozen=True)
class BatchingResult:
    """One drain of ``tasks`` tasks of the handler batched at ``batch_max_size``
    by one consumer of ``concurrency``: ``drain_s`` from the resume to the
    last SUCCESS seen, ``calls`` handler calls, ``cpu_s`` the consumer's CPU
    seconds over the drain, ``bound_rate`` the model's own tasks/s at that
    batch size."""

    key: str
    batch_max_size: int
    concurrency: int
    tasks: int
    throughput: float
    drain_s: float
    calls: int
    cpu_s: float
    bound_rate: float

    @property
    def mean_batch(self) -> float:
        """Tasks per handler call."""
        return self.tasks / self.calls if self.calls else 0.0


class ModelTrial(AdapterTrial):
    """A taskserve adapter on a fresh queue whose consumer runs the batched
    handlers of :mod:`bench.batch_model`."""

    def consumer(self) -> ConsumerCommand:
        command = super().consumer()
        argv = list(command.argv)
        argv[argv.index("--handlers") + 1] = MODEL_HANDLERS
        return replace(command, argv=argv)


def backlog_size(batch_max_size: int, target_s: float) -> int:
    """Tasks of a backlog holding about ``target_s`` seconds of the model's
    work at ``batch_max_size``, at least two full batches."""
    return max(2 * batch_max_size, round(bound_rate(batch_max_size) * target_s))


def _calls(markers: Path, name: str) -> Counter[int]:
    return calls_seen(markers).get(name, Counter())


def drain_batched(
    key: str,
    sizes: tuple[int, ...],
    repetitions: int,
    concurrency: int,
    target_s: float,
    fill_threads: int,
    workdir: Path,
) -> Iterator[BatchingResult]:
    """Every batch size of ``sizes``, ``repetitions`` times in turn, drained by
    one consumer process of taskserve's adapter ``key`` (``engine/broker/taskserve``);
    each result as soon as its drain is over."""
    unknown = [size for size in sizes if task_name(size) not in HANDLERS]
    if unknown:
        raise ValueError(
            f"no batched handler of size {', '.join(map(str, unknown))}; "
            f"the model has {', '.join(map(str, BATCH_SIZES))}"
        )
    contender = Contender(*key.split("/"))
    run_id = uuid.uuid4().hex[:12]
    markers = workdir / f"markers-{run_id}"
    markers.mkdir(parents=True, exist_ok=True)
    options = TrialOptions(run_id=run_id, concurrency=concurrency, workdir=workdir, markers=markers)
    trial = ModelTrial(contender.engine, contender.broker, options)
    try:
        with ConsumerProcess(trial.consumer(), workdir / f"{run_id}.log", markers) as consumer:
            for _ in range(repetitions):
                for size in sizes:
                    tasks = backlog_size(size, target_s)
                    before = _calls(markers, task_name(size))
                    drain = drain_paused(
                        trial, [consumer.pid], task_name(size), tasks, fill_threads
                    )
                    calls = _calls(markers, task_name(size)) - before
                    yield BatchingResult(
                        key=key,
                        batch_max_size=size,
                        concurrency=concurrency,
                        tasks=tasks,
                        throughput=tasks / drain.cpu_window_s,
                        drain_s=drain.cpu_window_s,
                        calls=calls.total(),
                        cpu_s=sum(drain.cpu_s),
                        bound_rate=bound_rate(size),
                    )
    finally:
        trial.close()


def batching(suite: Suite, engine: str, broker: str) -> None:
    """taskserve's adapter of the group draining the model's backlogs at every batch
    size; a failed drain ends the group's run, keeping the drains done before it."""
    settings = suite.settings
    [contender] = [c for c in contenders(engine, broker) if c.system == TASKSERVE]
    drains = drain_batched(
        contender.key,
        settings.batch_sizes,
        settings.repetitions,
        settings.batch_concurrency,
        settings.batch_target_s,
        settings.backlog_fill_threads,
        suite.workdir,
    )

    def record() -> None:
        for result in drains:
            suite.results.batching.append(result)
            suite.checkpoint(suite.results)
            suite.log(
                f"{contender.key:32} batch_max_size {result.batch_max_size:>3}  "
                f"{result.tasks:5} tasks  {result.throughput:7.0f} tasks/s over "
                f"{result.drain_s:5.2f}s  {result.mean_batch:5.1f} per call  "
                f"model bound {result.bound_rate:5.0f}/s"
            )

    suite.measure(f"{contender.key} batching", record)
