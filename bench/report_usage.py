"""The report's sections of the scenarios of real use (:mod:`bench.usage_suite`).

Figures are medians over the repetitions with min-max in parentheses; every
ratio is a median of taskserve (or another system) over the median of its
group's baseline (the group's first system, the raw engine; taskserve-sqlite
for sqlite), both taken in the same run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from bench.brokers import RABBITMQ
from bench.contenders import Contender, contenders
from bench.report import _BROKER_NAMES, DASH, TIMES, _contender, _table
from bench.results import Results
from bench.stats import Spread
from bench.tasks import TASK_LABELS

_R = TypeVar("_R")


def _baseline(contender: Contender) -> Contender:
    return contenders(contender.engine, contender.broker)[0]


def _spread(values: Sequence[float], scale: float = 1.0, digits: int = 0) -> str:
    if not values:
        return DASH
    s = Spread.of([value * scale for value in values])
    if s.count == 1:
        return f"{s.median:,.{digits}f}"
    return f"{s.median:,.{digits}f} ({s.low:,.{digits}f}{DASH}{s.high:,.{digits}f})"


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return Spread.of(present).median if present else None


def _ratio(ours: float | None, base: float | None, own: bool) -> str:
    if own:
        return "baseline"
    if ours is None or not base:
        return DASH
    return f"{ours / base:.2f}{TIMES}"


def _grouped(
    items: Sequence[_R], key: Callable[[_R], tuple[str, ...]]
) -> dict[tuple[str, ...], list[_R]]:
    found: dict[tuple[str, ...], list[_R]] = {}
    for item in items:
        found.setdefault(key(item), []).append(item)
    return found


def producers_section(results: Results) -> list[str]:
    """End to end with a producer running: paced and unlimited."""
    if not results.producers:
        return []
    groups = _grouped(
        results.producers,
        lambda r: (r.key, r.task, "unlimited" if r.target_rate is None else "paced"),
    )
    rows = []
    for (key, task, mode), mine in groups.items():
        contender = _contender(key)
        base = groups.get((_baseline(contender).key, task, mode), [])
        own = _baseline(contender).key == key
        done = _median([r.completed_rate for r in mine])
        p50 = _median([r.latency_p50_s for r in mine])
        offered = "unlimited" if mode == "unlimited" else f"{mine[0].target_rate:,.0f}/s"
        rows.append(
            [
                contender.label,
                _BROKER_NAMES[contender.broker],
                TASK_LABELS.get(task, task),
                offered,
                _spread([r.enqueue_rate for r in mine]),
                _spread([r.completed_rate for r in mine]),
                _ratio(done, _median([r.completed_rate for r in base]), own),
                _spread([float(r.backlog) for r in mine]),
                _spread([r.latency_p50_s for r in mine if r.latency_p50_s is not None], 1000, 1),
                _spread([r.latency_p99_s for r in mine if r.latency_p99_s is not None], 1000, 1),
                _ratio(p50, _median([r.latency_p50_s for r in base]), own),
                "yes" if all(r.drained for r in mine) else "no",
            ]
        )
    header = [
        "system",
        "broker",
        "task",
        "producer",
        "enqueued/s",
        "SUCCESS/s",
        "SUCCESS/s over baseline",
        "backlog at end",
        "p50 ms",
        "p99 ms",
        "p50 over baseline",
        "all done",
    ]
    load = results.settings.get("producer_load", 0.7)
    seconds = results.settings.get("producer_s", 0)
    baselines = ", ".join(
        f"{_contender(k.split()[0]).label} ({_BROKER_NAMES[_contender(k.split()[0]).broker]}, "
        f"{TASK_LABELS.get(k.split()[1], k.split()[1])}) {rate:,.0f}/s"
        for k, rate in results.baselines.items()
    )
    return [
        "## With a producer running",
        "",
        f"One consumer process runs while a producer thread of the benchmark's process enqueues "
        f"for {seconds:g} s, paced at {load:.0%} of the baseline's drain rate (drained with no "
        "producer running, in the same run: "
        f"{baselines or DASH}) or unlimited (as fast as it can, sharing the machine with the "
        "consumer and the broker); the consumer is not throttled. SUCCESS/s: tasks seen SUCCESS "
        "within the producer's window, over the window; backlog: enqueued and not yet seen "
        "SUCCESS when the producer stops; latency: from just before each enqueue call to "
        "SUCCESS visible, over every task once all are done (after an unlimited producer, over "
        "the tasks done within three windows more; all done says whether every task was). "
        "The baseline is the group's raw "
        "engine (for sqlite, taskserve-sqlite itself).",
        "",
        *_table(header, rows),
        "",
    ]


def enqueue_section(results: Results) -> list[str]:
    """Enqueue calls per second and CPU per call."""
    if not results.enqueues:
        return []
    groups = _grouped(results.enqueues, lambda r: (r.key, str(r.threads)))
    rows = []
    for (key, threads), mine in sorted(groups.items(), key=lambda item: int(item[0][1])):
        contender = _contender(key)
        base = groups.get((_baseline(contender).key, threads), [])
        own = _baseline(contender).key == key
        rows.append(
            [
                contender.label,
                _BROKER_NAMES[contender.broker],
                threads,
                _spread([r.calls_per_s for r in mine]),
                _ratio(
                    _median([r.calls_per_s for r in mine]),
                    _median([r.calls_per_s for r in base]),
                    own,
                ),
                _spread([r.cpu_per_call_s for r in mine], 1e6),
                _ratio(
                    _median([r.cpu_per_call_s for r in mine]),
                    _median([r.cpu_per_call_s for r in base]),
                    own,
                ),
            ]
        )
    header = [
        "system",
        "broker",
        "threads",
        "calls/s",
        "over baseline",
        "CPU µs per call",
        "over baseline",
    ]
    calls = results.settings.get("enqueue_calls", 0)
    return [
        "## Enqueue cost",
        "",
        f"{calls:,} enqueue calls of a no-op task through one producer (client) shared by the "
        "threads, no consumer running; calls/s over the wall time, CPU per call from the "
        "process's user + system time (`getrusage`, all threads); the broker's CPU is not "
        "counted.",
        "",
        *_table(header, rows),
        "",
    ]


def _breakdown(per_task: Sequence[dict[str, float]]) -> str:
    names = sorted({name for counts in per_task for name in counts})
    medians = {name: Spread.of([c.get(name, 0.0) for c in per_task]).median for name in names}
    shown = [f"{name} {value:.1f}" for name, value in sorted(medians.items(), key=lambda i: -i[1])]
    return ", ".join(shown[:6]) if shown else DASH


def roundtrips_section(results: Results) -> list[str]:
    """Redis commands per task by phase."""
    if not results.roundtrips:
        return []
    groups = _grouped(results.roundtrips, lambda r: (r.key,))
    rows = []
    for (key,), mine in groups.items():
        contender = _contender(key)
        base = groups.get((_baseline(contender).key,), [])
        own = _baseline(contender).key == key
        total = _median([r.enqueue + r.consume + r.status for r in mine])
        base_total = _median([r.enqueue + r.consume + r.status for r in base])
        extra = DASH if own or total is None or base_total is None else f"{total - base_total:+.1f}"
        rows.append(
            [
                contender.label,
                _BROKER_NAMES[contender.broker]
                + (" (Redis state store only)" if contender.broker == RABBITMQ else ""),
                _spread([r.enqueue for r in mine], digits=1),
                _spread([r.consume for r in mine], digits=1),
                _spread([r.status for r in mine], digits=1),
                f"{total:.1f}" if total is not None else DASH,
                extra,
                _spread([r.idle_per_s for r in mine], digits=1),
                " / ".join(
                    f"{Spread.of([r.in_scripts[phase] for r in mine]).median:.1f}"
                    for phase in ("enqueue", "consume", "status")
                ),
                _breakdown([r.commands["enqueue"] for r in mine]),
                _breakdown([r.commands["consume"] for r in mine]),
                _breakdown([r.commands["status"] for r in mine]),
            ]
        )
    header = [
        "system",
        "broker",
        "enqueue",
        "consume",
        "status read",
        "total",
        "over baseline",
        "idle consumer, per s",
        "run inside scripts (enqueue / consume / status)",
        "enqueue commands",
        "consume commands",
        "status-read commands",
    ]
    tasks = results.roundtrips[0].tasks
    return [
        "## Redis round trips per task",
        "",
        f"Round trips per task, read from `MONITOR` on a private Redis (the broker and state "
        f"store of the run), {tasks} tasks per run after one warm-up task: enqueue with the "
        "consumer paused (SIGSTOP); consume from resuming it until every task ran and its "
        "SUCCESS was written (the idle rate subtracted for the last 0.3 s); one status read per "
        "task with the consumer paused again. A round trip is a command a client sent; a "
        "`MULTI`/`EXEC` block counts one, a pipeline without a transaction one per command. "
        "The commands Lua scripts ran are counted apart (they cost the server, not a round "
        "trip). Idle: an idle consumer's round trips per second (polls, lease and heartbeat "
        "writes). On RabbitMQ only the Redis state store is counted: the management plugin is "
        "not enabled, so AMQP frames are not counted. sqlite and PostgreSQL use no Redis and "
        "are not counted.",
        "",
        *_table(header, rows),
        "",
    ]


def leftovers_section(results: Results) -> list[str]:
    """What is left of finished tasks once their result TTL has passed."""
    if not results.leftovers:
        return []
    rows = []
    for item in results.leftovers:
        contender = _contender(item.key)
        left = sum(item.left.values())
        shown = ", ".join(f"`{name}` ({count})" for name, count in item.left.items())
        rows.append(
            [
                contender.label,
                _BROKER_NAMES[contender.broker],
                str(item.tasks),
                f"{item.result_ttl_s:g} s",
                f"**{left}**" + (f": {shown}" if shown else ""),
                f"{item.cleared_after_s:.1f} s" if item.cleared_after_s is not None else "never",
                ", ".join(f"`{name}`" for name in item.others) or DASH,
            ]
        )
    header = [
        "system",
        "broker",
        "tasks",
        "result TTL",
        "entries naming a task at the end (must be 0)",
        "cleared after the TTL",
        "other keys of the queue",
    ]
    wait = results.leftovers[0].wait_s
    return [
        "## Left after the result TTL",
        "",
        "No-op tasks run with a short `result_ttl_s` while one consumer keeps running; from the "
        f"TTL after the last SUCCESS, the store is read every 0.25 s for up to {wait:g} s until "
        "nothing names one of the tasks: Redis (a private server, every key) keys whose name or "
        "members, fields or elements contain a task id; sqlite and PostgreSQL rows whose `id` "
        "or `task_id` is a task's. Names show `<task>` for a task id, `<run>` for the run's id, "
        "`<n>` for other numbers.",
        "",
        *_table(header, rows),
        "",
    ]


def usage_sections(results: Results) -> list[str]:
    """Every section of the scenarios of real use that has results."""
    return [
        *producers_section(results),
        *enqueue_section(results),
        *roundtrips_section(results),
        *leftovers_section(results),
    ]
