"""The report's sections of the scenarios of real use (:mod:`bench.usage_suite`).

Figures are medians over the repetitions with min-max in parentheses; every
ratio is a median of taskserve (or another system) over the median of its
group's baseline (the group's first system, the raw engine; taskserve-sqlite
for sqlite), both taken in the same run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bench.brokers import RABBITMQ
from bench.contenders import GROUPS, Contender, contenders
from bench.report import _BROKER_NAMES, DASH, TIMES, _contender, _table
from bench.report_batching import batching_section
from bench.results import Results
from bench.scenarios.backlog import BacklogResult
from bench.scenarios.consumers import ConsumersResult
from bench.scenarios.two_node_ray import NODE_CPUS as TWO_NODE_CPUS
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


def _against(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return DASH
    return f"{value / reference:.2f}{TIMES}"


def _ms_of(value: float | None) -> str:
    return DASH if value is None else f"{1000 * value:,.2f}"


def _at_sizes(results: Results) -> dict[str, list[BacklogResult]]:
    """Each system's backlog results, smallest backlog first."""
    found = _grouped(results.backlogs, lambda r: (r.key,))
    return {key: sorted(mine, key=lambda r: r.size) for (key,), mine in found.items()}


def backlog_section(results: Results) -> list[str]:
    """Costs at each backlog size, and at the largest against the smallest."""
    if not results.backlogs:
        return []
    rows = []
    summary = []
    for key, mine in _at_sizes(results).items():
        contender = _contender(key)
        broker = _BROKER_NAMES[contender.broker]
        first, last = mine[0], mine[-1]
        for r in mine:
            rows.append(
                [
                    contender.label,
                    broker,
                    f"{r.size:,}",
                    f"{r.fill_rate:,.0f}",
                    f"{r.enqueue_rate:,.0f}",
                    _against(r.enqueue_rate, first.enqueue_rate),
                    _ms_of(r.status_p50_s),
                    _ms_of(r.status_p99_s),
                    _against(r.status_p99_s, first.status_p99_s),
                    _ms_of(r.metrics_p50_s),
                    _ms_of(r.metrics_p99_s),
                    DASH if r.queue_length is None else f"{r.queue_length:,}",
                    DASH if r.bytes_per_task is None else f"{r.bytes_per_task:,.0f}",
                    r.store,
                ]
            )
        if last.size == first.size:
            continue
        enqueue = last.enqueue_rate / first.enqueue_rate if first.enqueue_rate else None
        status = (
            last.status_p99_s / first.status_p99_s
            if last.status_p99_s is not None and first.status_p99_s
            else None
        )
        kept = (enqueue is None or enqueue >= 0.9) and (status is None or status <= 1.1)
        summary.append(
            [
                contender.label,
                broker,
                f"{last.size:,} / {first.size:,}",
                _against(last.enqueue_rate, first.enqueue_rate),
                _against(last.status_p99_s, first.status_p99_s),
                _against(last.metrics_p99_s, first.metrics_p99_s),
                "yes" if kept else "no",
            ]
        )
    header = [
        "system",
        "broker",
        "backlog",
        "fill tasks/s",
        "enqueue calls/s",
        "over the smallest",
        "status p50 ms",
        "status p99 ms",
        "over the smallest",
        "length p50 ms",
        "length p99 ms",
        "length read",
        "bytes per task",
        "bytes counted",
    ]
    s = results.settings
    first_result = results.backlogs[0]
    text = [
        "## Cost as the backlog grows",
        "",
        "No consumer runs. A fresh queue is filled with no-op tasks by "
        f"{first_result.fill_threads} producer threads sharing one producer of the system (its "
        f"own enqueue call); then, at that backlog, {first_result.enqueue_calls:,} more enqueue "
        f"calls from one thread, {s.get('backlog_status_reads', 0):,} status reads of tasks "
        "drawn at random from the backlog (taskserve: `get_task_status_sync`; raw Celery: "
        "`AsyncResult.state`; raw RQ: `Job.fetch().get_status()`; raw PostgreSQL: the job "
        f"row; raw Dramatiq has none) and {s.get('backlog_metrics_reads', 0):,} calls of the "
        "queue-length call (taskserve: `get_metrics_sync`; raw Celery: a passive "
        "`queue_declare`; RQ: `Queue.count`; Dramatiq: its broker's queue size; raw "
        "PostgreSQL: `count(*)` of queued rows). Length read: what the last call said (the "
        "backlog, one warm-up task and the further calls). Bytes per task: what the store "
        "holds more after the fill, over the backlog: a private Redis's `used_memory` (on "
        "RabbitMQ only taskserve's Redis state store; the broker's memory is not read), the "
        "sqlite file after a WAL checkpoint, `pg_total_relation_size` of the queue's tables. "
        "One run per system and size.",
        "",
        *_table(header, rows),
        "",
    ]
    largest = s.get("backlog_largest_groups")
    restricted = s.get("backlog_others_max")
    if largest and restricted:
        text += [
            f"Backlogs above {restricted:,} run on {', '.join(largest)} only.",
            "",
        ]
    if summary:
        text += [
            "At the largest backlog against the smallest (target: enqueue rate and status "
            "p99 within 10 %, that is enqueue calls/s at least 0.90\u00d7 and status p99 at "
            "most 1.10\u00d7; faster is within it):",
            "",
            *_table(
                [
                    "system",
                    "broker",
                    "backlogs",
                    "enqueue calls/s",
                    "status p99",
                    "length p99",
                    "within 10 %",
                ],
                summary,
            ),
            "",
        ]
    return text


def _cpu_share(runs: Sequence[ConsumersResult]) -> str:
    mean = [100 * sum(r.cpu_s) / len(r.cpu_s) / r.cpu_window_s for r in runs if r.cpu_s]
    busiest = [100 * max(r.cpu_s) / r.cpu_window_s for r in runs if r.cpu_s]
    if not mean:
        return DASH
    return f"{Spread.of(mean).median:.0f} ({Spread.of(busiest).median:.0f})"


def consumers_section(results: Results) -> list[str]:
    """Throughput and CPU of 1, 2, 4 consumer processes, and on two Ray nodes."""
    lines: list[str] = []
    if results.consumers:
        groups = _grouped(results.consumers, lambda r: (r.key, r.task, str(r.processes)))
        rows = []

        def order(item: tuple[tuple[str, ...], list[ConsumersResult]]) -> tuple[Any, ...]:
            key, task, processes = item[0]
            contender = _contender(key)
            return (
                GROUPS.index((contender.engine, contender.broker)),
                list(TASK_LABELS).index(task) if task in TASK_LABELS else len(TASK_LABELS),
                int(processes),
                _baseline(contender) != contender,
            )

        for (key, task, processes), mine in sorted(groups.items(), key=order):
            contender = _contender(key)
            base = groups.get((_baseline(contender).key, task, processes), [])
            alone = groups.get((key, task, "1"), [])
            rate = _median([r.throughput for r in mine])
            rows.append(
                [
                    contender.label,
                    _BROKER_NAMES[contender.broker],
                    TASK_LABELS.get(task, task),
                    processes,
                    _spread([r.throughput for r in mine]),
                    _against(rate, _median([r.throughput for r in alone])),
                    _ratio(
                        rate,
                        _median([r.throughput for r in base]),
                        _baseline(contender).key == key,
                    ),
                    _cpu_share(mine),
                    _spread([1000 * sum(r.cpu_s) / r.tasks for r in mine], digits=2),
                ]
            )
        header = [
            "system",
            "broker",
            "task",
            "processes",
            "tasks/s",
            "over 1 process",
            "over baseline",
            "CPU % of a core per process: mean (busiest)",
            "consumer CPU ms per task",
        ]
        first = results.consumers[0]
        lines += [
            "## Several consumer processes on one queue",
            "",
            f"1, 2 and 4 consumer processes of the system (concurrency {first.concurrency} "
            "each; RQ 1) start together on a fresh queue and are paused (SIGSTOP) once all "
            f"consume; {first.tasks:,} tasks are enqueued, then every process is resumed and "
            "the backlog drains; the same processes then drain a backlog of the other task. "
            "tasks/s from the first to the last SUCCESS visible to a client; CPU: each "
            "process's user + system time (`/proc`) from its resume until the last SUCCESS "
            "was seen, as a share of one core over that time, "
            "and all processes' CPU over the tasks. The baseline is the group's raw engine "
            "(for sqlite, taskserve-sqlite itself), at the same number of processes; all "
            "processes share the machine's cores with the broker.",
            "",
            *_table(header, rows),
            "",
        ]
    if results.two_node:
        one = _median([r.throughput for r in results.two_node if r.nodes == 1])
        rows = [
            [
                str(r.nodes),
                " + ".join(str(count) for count in r.replicas_per_node),
                f"{r.tasks:,}",
                f"{r.throughput:,.0f}",
                _against(r.throughput, one),
                " / ".join(f"{100 * cpu / r.cpu_window_s:.0f}" for cpu in r.cpu_s),
            ]
            for r in results.two_node
        ]
        header = [
            "Ray nodes",
            "replicas per node",
            "tasks",
            "tasks/s",
            "over 1 node",
            "CPU % of a core per replica",
        ]
        first_two = results.two_node[0]
        lines += [
            "## Consumer replicas on two Ray nodes",
            "",
            "Two Ray nodes on this machine (`ray start --head` and `ray start --address`, "
            f"{TWO_NODE_CPUS} logical CPUs and one unit of a custom resource each, so no node "
            "holds two replicas); taskserve-celery (Redis) consumer replicas of concurrency "
            f"{first_two.concurrency}, one per node, drain {first_two.tasks:,} no-op tasks "
            "enqueued while they were paused, as above. Both nodes share the machine's cores.",
            "",
            *_table(header, rows),
            "",
        ]
    return lines


def usage_sections(results: Results) -> list[str]:
    """Every section of the scenarios of real use that has results."""
    return [
        *producers_section(results),
        *enqueue_section(results),
        *roundtrips_section(results),
        *leftovers_section(results),
        *backlog_section(results),
        *consumers_section(results),
        *batching_section(results),
    ]
