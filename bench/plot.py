"""``throughput.png``: throughput of each adapter next to its raw engine and Ray's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.compare import Summary
from bench.contenders import GROUPS, RAW, RAY, TASKSERVE
from bench.tasks import TASK_LABELS

_SERIES: tuple[tuple[str, Callable[[Summary], bool], str], ...] = (
    ("taskserve", lambda s: s.contender.system == TASKSERVE, "#1f6feb"),
    (
        "raw engine",
        lambda s: s.contender.system == RAW and s.contender.variant != "Worker",
        "#8b949e",
    ),
    ("raw RQ Worker (fork per job)", lambda s: s.contender.variant == "Worker", "#d0d7de"),
    ("Ray built-in", lambda s: s.contender.system == RAY, "#f0883e"),
)
_BROKERS = {"file": "file", "redis": "Redis", "rabbitmq": "RabbitMQ", "postgres": "PostgreSQL"}
_WIDTH = 0.2


def _panel(axis: Any, found: Sequence[Summary], task: str, groups: list[tuple[str, str]]) -> None:
    bars: dict[str, tuple[list[float], list[float], list[list[float]]]] = {
        label: ([], [], [[], []]) for label, _, _ in _SERIES
    }
    for position, group in enumerate(groups):
        mine = [
            s for s in found if s.task == task and (s.contender.engine, s.contender.broker) == group
        ]
        present = [
            (label, match)
            for label, belongs, _ in _SERIES
            if (match := next((s for s in mine if belongs(s)), None)) is not None
        ]
        baseline = next((s for label, s in present if label == "raw engine"), None)
        for index, (label, summary) in enumerate(present):
            x = position + (index - (len(present) - 1) / 2) * _WIDTH
            spread = summary.throughput
            xs, heights, errors = bars[label]
            xs.append(x)
            heights.append(spread.median)
            errors[0].append(spread.median - spread.low)
            errors[1].append(spread.high - spread.median)
            if label == "taskserve" and baseline is not None:
                ratio = spread.ratio(baseline.throughput)
                axis.annotate(
                    f"{ratio:.2f}x",
                    (x, spread.high),
                    textcoords="offset points",
                    xytext=(0, 3),
                    ha="center",
                    fontsize=7,
                )
    for label, _, color in _SERIES:
        xs, heights, errors = bars[label]
        if xs:
            axis.bar(
                xs,
                heights,
                _WIDTH,
                label=label,
                color=color,
                edgecolor="#24292f",
                linewidth=0.4,
                yerr=errors,
                capsize=2,
                error_kw={"linewidth": 0.7},
            )
    axis.set_xticks(range(len(groups)))
    concurrency = {
        (s.contender.engine, s.contender.broker): s.concurrency for s in found if s.task == task
    }
    axis.set_xticklabels(
        [
            f"{engine}\n{_BROKERS[broker]}\nconcurrency {concurrency.get((engine, broker), '?')}"
            for engine, broker in groups
        ],
        fontsize=8,
    )
    axis.set_xlim(-0.5, len(groups) - 0.5)
    axis.set_title(f"{TASK_LABELS[task]} task")
    axis.set_ylabel("tasks/s, one consumer")
    axis.grid(axis="y", alpha=0.3)
    axis.set_axisbelow(True)


def plot(found: Sequence[Summary], path: Path) -> None:
    """One panel per task; per adapter and broker a bar per system (median, min-max
    whiskers), taskserve's bar labelled with its ratio to the raw engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        g for g in GROUPS if any((s.contender.engine, s.contender.broker) == g for s in found)
    ]
    tasks = [task for task in TASK_LABELS if any(s.task == task for s in found)]
    figure, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.6), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        _panel(axis, found, task, groups)
    axes[0][0].legend(fontsize=8, loc="upper right")
    figure.suptitle("Throughput of taskserve's adapters, the raw engines and Ray's built-in")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
