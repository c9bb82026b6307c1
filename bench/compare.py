"""From repeated runs to summaries per system and ratios per adapter and broker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.contenders import GROUPS, RAW, RAY, TASKSERVE, Contender, contenders
from bench.runner import RunResult
from bench.stats import Spread
from bench.tasks import TASK_LABELS


@dataclass(frozen=True)
class Summary:
    """One system's repeated runs of one task."""

    contender: Contender
    task: str
    tasks: int
    concurrency: int
    throughput: Spread
    enqueue_rate: Spread
    latency_p50_s: Spread | None
    latency_p99_s: Spread | None


@dataclass(frozen=True)
class Ratio:
    """taskserve's median throughput over another system's, on the same broker."""

    group: str
    task: str
    taskserve: Summary
    other: Summary

    @property
    def value(self) -> float:
        """The ratio of the medians."""
        return self.taskserve.throughput.ratio(self.other.throughput)


def _spread(values: Sequence[float | None]) -> Spread | None:
    present = [value for value in values if value is not None]
    return Spread.of(present) if present else None


def summaries(runs: Sequence[RunResult]) -> list[Summary]:
    """A summary per system and task, in the order of the groups."""
    found: list[Summary] = []
    for engine, broker in GROUPS:
        for contender in contenders(engine, broker):
            for task in TASK_LABELS:
                mine = [r for r in runs if r.key == contender.key and r.task == task]
                if not mine:
                    continue
                found.append(
                    Summary(
                        contender=contender,
                        task=task,
                        tasks=mine[0].tasks,
                        concurrency=mine[0].concurrency,
                        throughput=Spread.of([r.throughput for r in mine]),
                        enqueue_rate=Spread.of([r.enqueue_rate for r in mine]),
                        latency_p50_s=_spread([r.latency_p50_s for r in mine]),
                        latency_p99_s=_spread([r.latency_p99_s for r in mine]),
                    )
                )
    return found


def ratios(found: Sequence[Summary]) -> list[Ratio]:
    """taskserve against every raw engine and Ray's adapter of its group."""
    pairs: list[Ratio] = []
    for ours in found:
        if ours.contender.system != TASKSERVE:
            continue
        for other in found:
            same = other.contender.group == ours.contender.group and other.task == ours.task
            if same and other.contender.system in (RAW, RAY):
                pairs.append(Ratio(ours.contender.group, ours.task, ours, other))
    return pairs
