"""``RESULTS.md``: the results of one benchmark run as Markdown."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.brokers import SQLITE_FILE
from bench.compare import Ratio, Summary, ratios, summaries
from bench.contenders import Contender
from bench.results import Results
from bench.scenarios.autoscaling import AUTOSCALING_SETTINGS, POLL_INTERVAL_S
from bench.stats import Spread
from bench.tasks import TASK_LABELS

_BROKER_NAMES = {
    SQLITE_FILE: "file",
    "redis": "Redis",
    "rabbitmq": "RabbitMQ",
    "postgres": "PostgreSQL",
}
DASH = "\u2013"
ARROW = "\u2192"
"""En dash, for ranges and empty cells."""
TIMES = "\u00d7"


def _where(contender: Contender) -> str:
    return f"{contender.engine}, {_BROKER_NAMES[contender.broker]}"


def _rate(spread: Spread) -> str:
    if spread.count == 1:
        return f"{spread.median:,.0f}"
    return f"{spread.median:,.0f} ({spread.low:,.0f}{DASH}{spread.high:,.0f})"


def _ms(spread: Spread | None) -> str:
    if spread is None:
        return DASH
    if spread.count == 1:
        return f"{spread.median * 1000:.1f}"
    return f"{spread.median * 1000:.1f} ({spread.low * 1000:.1f}{DASH}{spread.high * 1000:.1f})"


def _seconds(values: Sequence[float]) -> str:
    return _rate_s(Spread.of(values)) if values else DASH


def _rate_s(spread: Spread) -> str:
    if spread.count == 1:
        return f"{spread.median:.2f} s"
    return f"{spread.median:.2f} s ({spread.low:.2f}{DASH}{spread.high:.2f})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def ratio_summary(pairs: Sequence[Ratio]) -> list[str]:
    """One row per adapter, broker and system compared with: the throughput
    ratio of each task (the README's table)."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for pair in pairs:
        row = rows.setdefault((_where(pair.taskserve.contender), pair.other.contender.label), {})
        row[pair.task] = DASH if math.isnan(pair.value) else f"{pair.value:.2f}{TIMES}"
    tasks = list(TASK_LABELS)
    header = ["adapter, broker", "taskserve throughput over", *(TASK_LABELS[t] for t in tasks)]
    body = [
        [where, other, *(row.get(t, DASH) for t in tasks)] for (where, other), row in rows.items()
    ]
    return _table(header, body)


def ratio_table(pairs: Sequence[Ratio]) -> list[str]:
    """taskserve against each other system: throughput and latency side by side."""
    rows = []
    for pair in pairs:
        ours, other = pair.taskserve, pair.other
        p50 = DASH
        if ours.latency_p50_s and other.latency_p50_s:
            p50 = (
                f"{ours.latency_p50_s.median * 1000:.1f} / {other.latency_p50_s.median * 1000:.1f}"
            )
        value = pair.value
        shown = DASH if math.isnan(value) else f"**{value:.2f}{TIMES}**"
        rows.append(
            [
                _where(ours.contender),
                TASK_LABELS[pair.task],
                other.contender.label,
                _rate(ours.throughput),
                _rate(other.throughput),
                shown,
                p50,
            ]
        )
    header = [
        "adapter, broker",
        "task",
        "compared with",
        "taskserve tasks/s",
        "its tasks/s",
        "throughput ratio",
        "p50 latency ms (taskserve / it)",
    ]
    return _table(header, rows)


def _systems_table(found: Sequence[Summary]) -> list[str]:
    rows = [
        [
            s.contender.label,
            _BROKER_NAMES[s.contender.broker],
            TASK_LABELS[s.task],
            f"{s.tasks:,}",
            str(s.concurrency),
            _rate(s.throughput),
            _ms(s.latency_p50_s),
            _ms(s.latency_p99_s),
        ]
        for s in found
    ]
    header = ["system", "broker", "task", "N", "concurrency", "tasks/s", "p50 ms", "p99 ms"]
    return _table(header, rows)


def _enqueue_table(results: Results, found: Sequence[Summary]) -> list[str]:
    rows = []
    for contender in dict.fromkeys(s.contender for s in found):
        rates = [r.enqueue_rate for r in results.runs if r.key == contender.key]
        rows.append([contender.label, _BROKER_NAMES[contender.broker], _rate(Spread.of(rates))])
    return _table(["system", "broker", "enqueue tasks/s"], rows)


def _crash_table(results: Results) -> list[str]:
    rows = []
    for crash in results.crashes:
        contender = _contender(crash.key)
        lease = f"{crash.lease_s:g} s" if crash.lease_s is not None else "its default"
        shown = (
            f"{crash.redelivery_s:.2f} s"
            if crash.redelivery_s is not None
            else f"not within {crash.wait_s:g} s"
        )
        rows.append([contender.label, _BROKER_NAMES[contender.broker], lease, shown])
    return _table(["system", "broker", "lease", "SIGKILL to the task's next start"], rows)


def _one_seconds(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f} s"


def _delay_table(results: Results) -> list[str]:
    rows = []
    for delay in results.delays:
        contender = _contender(delay.key)
        rows.append(
            [
                contender.label,
                _BROKER_NAMES[contender.broker],
                f"{delay.started}/{delay.tasks}",
                str(delay.early),
                _one_seconds(delay.lateness_p50_s),
                _one_seconds(delay.lateness_p99_s),
                _one_seconds(delay.lateness_max_s),
            ]
        )
    header = ["system", "broker", "started", "early", "late p50", "late p99", "late max"]
    return _table(header, rows)


def _startup_table(results: Results) -> list[str]:
    rows = []
    for key in dict.fromkeys(startup.key for startup in results.startups):
        mine = [startup for startup in results.startups if startup.key == key]
        contender = _contender(key)
        rows.append(
            [
                contender.label,
                _BROKER_NAMES[contender.broker],
                _seconds([startup.serve_run_s for startup in mine]),
                _seconds([startup.first_success_s for startup in mine]),
            ]
        )
    header = ["consumer", "broker", "`serve.run` returns after", "first SUCCESS after"]
    return _table(header, rows)


def _replica_timeline(timeline: Sequence[tuple[float, int, int]]) -> str:
    steps = [
        f"{running}{f' +{stopping}' if stopping else ''} at {moment:g} s"
        for moment, running, stopping in timeline
    ]
    return ", ".join(steps)


def _contender(key: str) -> Contender:
    parts = key.split("/")
    return Contender(*parts)


def _settings_lines(results: Results) -> list[str]:
    s = results.settings
    sizing = (
        f"N = {s['tasks']} tasks per run"
        if s.get("tasks")
        else (
            f"N sized per system and task from a {s['calibration_tasks']}-task calibration run, "
            f"for a drain of about {s['target_s']:g} s"
        )
    )
    return [
        f"- preset `{s['preset']}`: {s['repetitions']} repetition(s) per system and task, "
        f"run interleaved; {sizing}; {s['latency_samples']} one-at-a-time latency samples per run.",
        f"- one consumer process per run, concurrency {s['concurrency']} "
        "(RQ: 1, as one RQ worker runs one job at a time); a fresh queue per run, deleted after.",
    ]


def render(
    results: Results, notes: str | None = None, chaos: Mapping[str, Any] | None = None
) -> str:
    """The whole report; ``chaos`` is what ``python -m bench.chaos`` wrote."""
    found = summaries(results.runs)
    pairs = ratios(found)
    lines = [
        "# taskserve benchmark results",
        "",
        f"`python -m bench` ({results.settings['preset']} preset), {results.started}, "
        f"{results.wall_s / 60:.1f} minutes in all. Figures are medians with min{DASH}max "
        "of the repetitions in parentheses.",
        "",
        "## Machine",
        "",
        *_table(["", ""], [[k, v] for k, v in results.machine.items()]),
        "",
        "## How it is measured",
        "",
        *_settings_lines(results),
        "- **throughput**: N tasks are enqueued first (no consumer running), then the consumer "
        "process starts; tasks per second from the first to the last SUCCESS visible to a client "
        "through the system's own status call (the consumer's start-up is not counted).",
        "- **latency**: then tasks are sent one at a time, each once the previous one is seen "
        "SUCCESS; p50 and p99 from just before the enqueue call to SUCCESS visible.",
        "- **enqueue rate**: the N enqueue calls of each run, one producer thread, no consumer running.",
        "- every system runs on the same broker, side by side: taskserve's adapter "
        "(`python -m taskserve.worker`), the raw engine with equivalent settings, and for Celery "
        "Ray Serve's built-in adapter (`CeleryTaskProcessorAdapter` with its own worker thread, "
        "outside Serve). Details of each setup are in the docstrings of `bench/engines/`.",
        "",
    ]
    if results.skipped:
        lines += ["Skipped: " + "; ".join(results.skipped) + ".", ""]
    if pairs:
        lines += [
            "## Throughput: taskserve against the raw engines and Ray's built-in",
            "",
            *ratio_summary(pairs),
            "",
            *ratio_table(pairs),
            "",
            "![throughput](throughput.png)",
            "",
        ]
    if found:
        lines += [
            "## Throughput and latency of every system",
            "",
            *_systems_table(found),
            "",
            "## Enqueue rate, one producer",
            "",
            "Over every run of both tasks.",
            "",
            *_enqueue_table(results, found),
            "",
        ]
    if results.startups:
        lines += [
            "## `serve.run` to first SUCCESS",
            "",
            "A task waits in the queue; `serve.run` deploys a one-replica consumer application "
            f"on a running Serve (Ray and Serve started in {results.serve_cold_start_s or 0:.1f} s).",
            "",
            *_startup_table(results),
            "",
        ]
    if results.crashes:
        lines += [
            "## Crash to redelivery",
            "",
            "A consumer process (concurrency 1) running a task is killed with SIGKILL while a "
            "second, idle consumer of the queue runs; the time until the task starts again. "
            "taskserve's adapters run `python -m taskserve.worker`.",
            "",
            *_crash_table(results),
            "",
        ]
    if results.delays:
        lines += [
            "## Delayed tasks",
            "",
            "One consumer process (concurrency 8) runs while a producer enqueues tasks with "
            "`delay_s` drawn between 0.5 and 2.5 s, one every 20 ms; how long after its "
            "`due_at` each task started (early: started before it was due).",
            "",
            *_delay_table(results),
            "",
        ]
    if results.autoscaling:
        first = results.autoscaling[0]
        ideal = math.ceil(first.tasks / int(AUTOSCALING_SETTINGS["max_replicas"])) * first.task_s
        settings = ", ".join(f"`{k}={v}`" for k, v in AUTOSCALING_SETTINGS.items())
        rows = [
            [
                a.policy,
                f"{a.wall_s:.1f} s" if a.wall_s is not None else "did not finish",
                str(a.peak_replicas),
                f"{a.replica_seconds:.0f}",
                f"{a.stopping_seconds:.0f}",
                str(a.redelivered),
                _replica_timeline(a.timeline),
            ]
            for a in results.autoscaling
        ]
        header = [
            "policy",
            f"all {first.tasks} done after",
            "peak replicas",
            "replica-seconds",
            "of which stopping",
            "tasks run twice",
            "replicas over time (RUNNING, +STOPPING)",
        ]
        lines += [
            "## Autoscaling",
            "",
            f"{first.tasks} tasks of {first.task_s:g} s enqueued at once on a taskserve-celery "
            f"(Redis) consumer deployment, `max_ongoing_requests=1`, Serve settings {settings}; "
            f"both policies poll the broker every {POLL_INTERVAL_S:g} s. Three replicas from the "
            f"start would need {ideal:g} s.",
            "",
            *_table(header, rows),
            "",
        ]
    from bench.report_usage import usage_sections

    lines += usage_sections(results)
    if chaos is not None:
        lines += _chaos_section(chaos)
    if notes:
        lines += [notes.strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def _chaos_section(chaos: Mapping[str, Any]) -> list[str]:
    """The full chaos runs (``python -m bench.chaos``), one row per adapter and broker."""
    s = chaos["settings"]
    header = [
        "adapter, broker",
        "succeeded",
        "lost",
        "stuck",
        "wrong",
        "backward",
        "run twice+",
        "dup. completions",
        "kills",
        "restarts",
        "enqueue retries",
        "republished (lost / lease)",
        f"kill {ARROW} rerun p50 / p99 / max",
        "max clear of the restart",
        "time",
    ]
    rows = []
    for run in chaos["runs"]:
        again = run.get("republished")
        rerun = run.get("rerun_after_kill_s") or {}
        clear = run.get("rerun_clear_of_restart_s") or {}
        rows.append(
            [
                run["pair"],
                f"{run['succeeded']}/{run['tasks']}",
                str(run["lost"]),
                str(run["stuck"]),
                str(run["wrong_results"]),
                str(run["backward_moves"]),
                str(run["duplicate_runs"]),
                str(run["duplicate_completions"]),
                str(run["kills"]),
                str(run["restarts"]),
                str(run["enqueue_retries"]),
                f"{again['lost']} / {again['lease']}" if again else "(no ledger)",
                " / ".join(f"{rerun.get(k, 0):.1f} s" for k in ("p50", "p99", "max"))
                if rerun
                else DASH,
                f"{clear['max']:.1f} s" if clear else DASH,
                f"{run['duration_s']:.0f} s",
            ]
        )
    return [
        "## Chaos runs",
        "",
        f"`python -m bench.chaos`, {chaos['started']}: per adapter and broker "
        f"{s['consumers']} consumer processes (concurrency {s['concurrency']}, lease "
        f"{s['lease_s']:g} s), {s['tasks']:,} tasks enqueued by {s['producers']} producers "
        "while they work (each with an idempotency key; an enqueue refused during the broker "
        "restart is retried), a random consumer SIGKILLed every "
        f"{s['kill_every_s'][0]:g}{DASH}{s['kill_every_s'][1]:g} s and replaced, and one "
        "restart of the message broker halfway (a private persistent Redis with `appendfsync "
        "always`, a RabbitMQ node of its own, a PostgreSQL cluster of its own; sqlite has no "
        "server). Every task is counted from a journal its handler writes with `O_APPEND` "
        "(it survives SIGKILL): lost = never run and not finished; stuck = run, not finished; "
        "backward = a status seen leaving SUCCESS, FAILURE or CANCELLED. Republished: how "
        "often the store's ledger published a task again because the engine lost its message "
        f"(lost) or its consumer died (lease). Kill {ARROW} rerun: from a SIGKILL to the next start "
        "of each task the killed consumer was running; the lease promises a new delivery "
        "within the lease and about half a second while the broker is reachable, so the last "
        "column leaves out the kills whose rerun waited on the broker restart.",
        "",
        *_table(header, rows),
        "",
    ]


def write(results: Results, path: Path, notes_path: Path | None = None) -> None:
    """Write the report to ``path``, with the chaos runs of ``chaos.json`` beside it and
    the notes of ``notes_path`` appended."""
    notes = notes_path.read_text() if notes_path is not None and notes_path.exists() else None
    chaos_path = path.with_name("chaos.json")
    chaos = json.loads(chaos_path.read_text()) if chaos_path.exists() else None
    path.write_text(render(results, notes, chaos))
