"""The report's section of the batching scenario (:mod:`bench.scenarios.batching`).

Throughputs are medians over the repetitions; a speed-up is the median at a
batch size over the median at batch size 1 of the same adapter and broker,
both measured by the same consumer process in the same run.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.batch_model import BATCH_WAIT_TIMEOUT_S, CALL_COST_S, ITEM_COST_S, bound_rate
from bench.contenders import GROUPS, Contender
from bench.report import _BROKER_NAMES, DASH, TIMES, _table
from bench.results import Results
from bench.scenarios.batching import BATCHING, BatchingResult
from bench.stats import Spread


def _group(result: BatchingResult) -> tuple[str, str]:
    contender = Contender(*result.key.split("/"))
    return contender.engine, contender.broker


def medians(found: Sequence[BatchingResult]) -> dict[tuple[str, str], dict[int, float]]:
    """(engine, broker) -> batch size -> median tasks/s, in the order of :data:`GROUPS`."""
    values: dict[tuple[str, str], dict[int, list[float]]] = {}
    for result in found:
        values.setdefault(_group(result), {}).setdefault(result.batch_max_size, [])
        values[_group(result)][result.batch_max_size].append(result.throughput)
    return {
        group: {size: Spread.of(rates).median for size, rates in sorted(values[group].items())}
        for group in GROUPS
        if group in values
    }


def speedup(rates: dict[int, float], size: int) -> float | None:
    """Tasks/s at ``size`` over tasks/s at batch size 1 (None if either is missing)."""
    if size not in rates or not rates.get(1):
        return None
    return rates[size] / rates[1]


def _cell(rate: float | None, ratio: float | None) -> str:
    if rate is None:
        return DASH
    shown = f"{rate:,.0f}"
    return shown if ratio is None else f"{shown} ({ratio:.1f}{TIMES})"


def summary_table(found: Sequence[BatchingResult]) -> list[str]:
    """Adapter and broker by batch size: tasks/s with the speed-up over batch size 1,
    and the model's own bound as the last row."""
    sizes = sorted({r.batch_max_size for r in found})
    header = ["adapter, broker", *(f"batch_max_size {size}" for size in sizes)]
    rows = []
    for (engine, broker), rates in medians(found).items():
        cells = [
            _cell(rates.get(size), None if size == 1 else speedup(rates, size)) for size in sizes
        ]
        rows.append([f"{engine}, {_BROKER_NAMES[broker]}", *cells])
    bound = {size: bound_rate(size) for size in sizes}
    rows.append(
        [
            "*the model alone (bound)*",
            *(_cell(bound[size], None if size == 1 else speedup(bound, size)) for size in sizes),
        ]
    )
    return _table(header, rows)


def _spread(values: Sequence[float], digits: int = 0) -> str:
    s = Spread.of(values)
    if s.count == 1:
        return f"{s.median:,.{digits}f}"
    return f"{s.median:,.{digits}f} ({s.low:,.{digits}f}{DASH}{s.high:,.{digits}f})"


def detail_table(found: Sequence[BatchingResult]) -> list[str]:
    """One row per adapter, broker and batch size: the spread of the repetitions,
    the share of the model's bound, tasks per call and the consumer's CPU per task."""
    runs: dict[tuple[tuple[str, str], int], list[BatchingResult]] = {}
    for result in found:
        runs.setdefault((_group(result), result.batch_max_size), []).append(result)
    rates = medians(found)
    rows = []
    for (group, size), mine in sorted(runs.items(), key=lambda i: (GROUPS.index(i[0][0]), i[0][1])):
        median = rates[group][size]
        ratio = speedup(rates[group], size)
        rows.append(
            [
                f"{group[0]}, {_BROKER_NAMES[group[1]]}",
                str(size),
                f"{mine[0].tasks:,}",
                _spread([r.throughput for r in mine]),
                DASH if ratio is None else f"{ratio:.2f}{TIMES}",
                f"{median / mine[0].bound_rate:.0%}",
                _spread([r.mean_batch for r in mine], 1),
                _spread([1000 * r.cpu_s / r.tasks for r in mine], 2),
            ]
        )
    header = [
        "adapter, broker",
        "batch_max_size",
        "tasks",
        "tasks/s",
        "over batch size 1",
        "of the model's bound",
        "tasks per call",
        "consumer CPU ms per task",
    ]
    return _table(header, rows)


def not_measured(results: Results) -> list[str]:
    """A paragraph naming the adapters whose batching drains failed, and why."""
    failed = [line for line in results.skipped if f" {BATCHING}: " in line]
    if not failed:
        return []
    return ["Not measured: " + "; ".join(failed) + ".", ""]


def batching_section(results: Results) -> list[str]:
    """The batching scenario: the summary, the plot and the details."""
    found = results.batching
    if not found:
        return []
    concurrency = found[0].concurrency
    return [
        "## Batched handlers",
        "",
        "A model-like task: one model that runs one call at a time (a lock, as one "
        f"accelerator), each call taking {1000 * CALL_COST_S:g} ms plus "
        f"{1000 * ITEM_COST_S:g} ms per input, slept so that it costs no CPU "
        "(`bench/batch_model.py`). One consumer process of each taskserve adapter "
        f"(`python -m taskserve.worker`, concurrency {concurrency}: twice the largest batch, "
        "so that the next batch gathers while one runs) holds a handler batched at each "
        f"`batch_max_size`, all with `batch_wait_timeout_s={BATCH_WAIT_TIMEOUT_S:g}`. For "
        "each batch size in turn the consumer is paused, a backlog of that handler's "
        f"tasks is enqueued (about {results.settings.get('batch_target_s', 0):g} s of the "
        "model's own work at that size), and the consumer resumed; tasks/s from the resume "
        "to the last SUCCESS visible to a client. The bound is the model's own rate with "
        "every call full; tasks per call is counted from the model's calls.",
        "",
        *summary_table(found),
        "",
        *not_measured(results),
        "![batching](batching.png)",
        "",
        *detail_table(found),
        "",
    ]
