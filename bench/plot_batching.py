"""``batching.png``: drain throughput of each adapter at each batch size, against the model's bound."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.batch_model import CALL_COST_S, ITEM_COST_S, bound_rate
from bench.contenders import GROUPS
from bench.report_batching import medians, speedup
from bench.scenarios.batching import BatchingResult
from bench.stats import Spread

_COLORS = ("#8b949e", "#58a6ff", "#1f6feb", "#0a3069")
_BROKERS = {"file": "file", "redis": "Redis", "rabbitmq": "RabbitMQ", "postgres": "PostgreSQL"}
_WIDTH = 0.26


def plot_batching(found: Sequence[BatchingResult], path: Path) -> None:
    """Per adapter and broker a bar per batch size (median, min-max whiskers), each
    labelled with its speed-up over batch size 1; a dashed line per batch size at
    the model's own bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r.batch_max_size for r in found})
    rates = medians(found)
    groups = [group for group in GROUPS if group in rates]
    figure, axis = plt.subplots(figsize=(max(6.5, 1.45 * len(groups) + 2), 4.8))
    for index, size in enumerate(sizes):
        color = _COLORS[index % len(_COLORS)]
        xs, heights, low, high = [], [], [], []
        for position, group in enumerate(groups):
            mine = [
                r.throughput
                for r in found
                if r.batch_max_size == size and r.key.startswith(f"{group[0]}/{group[1]}/")
            ]
            if not mine:
                continue
            spread = Spread.of(mine)
            x = position + (index - (len(sizes) - 1) / 2) * _WIDTH
            xs.append(x)
            heights.append(spread.median)
            low.append(spread.median - spread.low)
            high.append(spread.high - spread.median)
            ratio = speedup(rates[group], size)
            if size != 1 and ratio is not None:
                axis.annotate(
                    f"{ratio:.1f}x",
                    (x, spread.high),
                    textcoords="offset points",
                    xytext=(0, 3),
                    ha="center",
                    fontsize=7,
                )
        axis.bar(
            xs,
            heights,
            _WIDTH,
            label=f"batch_max_size {size}",
            color=color,
            edgecolor="#24292f",
            linewidth=0.4,
            yerr=[low, high],
            capsize=2,
            error_kw={"linewidth": 0.7},
        )
        axis.axhline(bound_rate(size), color=color, linestyle="--", linewidth=0.9)
    axis.set_xticks(range(len(groups)))
    axis.set_xticklabels([f"{engine}\n{_BROKERS[broker]}" for engine, broker in groups], fontsize=8)
    axis.set_xlim(-0.5, len(groups) - 0.5)
    axis.set_ylabel("tasks/s, one consumer")
    axis.grid(axis="y", alpha=0.3)
    axis.set_axisbelow(True)
    axis.legend(fontsize=8, loc="upper left")
    concurrency = found[0].concurrency if found else 0
    axis.set_title(
        f"Draining a model-like task ({1000 * CALL_COST_S:g} ms + {1000 * ITEM_COST_S:g} ms "
        "per input, one call at a time), "
        f"concurrency {concurrency};\ndashed: the model's own bound at each batch size",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
