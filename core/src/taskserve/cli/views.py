"""What the ``taskserve`` command prints for people (``--json`` prints the models).

Each view takes the values a command read and returns the text to print;
none of them contacts a broker or writes.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any

from taskserve.capabilities import Capability
from taskserve.cli.render import (
    EMPTY,
    count,
    format_duration,
    format_time,
    key_values,
    table,
    truncate,
    yes_no,
)
from taskserve.models import AdapterMetrics, CancelOutcome, DeadLetter, HealthReport, TaskResult
from taskserve.redaction import redact_url
from taskserve.selection import ADAPTERS_ENTRY_POINT_GROUP
from taskserve.states import TaskState

CORE_DISTRIBUTION = "taskserve"

RESULT_MAX = 500
"""Most characters of a result ``show`` prints (``--json`` prints it all)."""

ERROR_MAX = 80
"""Most characters of an error message in a dead-letter table."""


@dataclass(frozen=True)
class Installed:
    """Which distribution publishes an adapter alias, at which version."""

    alias: str
    target: str
    distribution: str | None
    version: str | None


def core_version() -> str | None:
    """The installed ``taskserve`` distribution's version (None when the core
    runs from a source tree that was never installed)."""
    try:
        return version(CORE_DISTRIBUTION)
    except PackageNotFoundError:
        return None


def installed_adapter_distributions() -> list[Installed]:
    """Every adapter entry point with its distribution and version, by alias;
    nothing is imported."""
    found = []
    for ep in entry_points(group=ADAPTERS_ENTRY_POINT_GROUP):
        dist = ep.dist
        found.append(
            Installed(
                alias=ep.name,
                target=ep.value,
                distribution=dist.name if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
        )
    return sorted(found, key=lambda i: i.alias)


def versions_text() -> str:
    """``taskserve X.Y.Z`` and the distribution and version of each adapter."""
    lines = [f"taskserve {core_version() or '(version unknown: not installed)'}"]
    adapters = installed_adapter_distributions()
    if adapters:
        lines.append("adapters:")
        rows = [
            [
                a.alias,
                a.distribution or "(unknown distribution)",
                a.version or EMPTY,
                "built in" if a.distribution == CORE_DISTRIBUTION else "",
            ]
            for a in adapters
        ]
        body = table(["alias", "distribution", "version", ""], rows)
        lines.extend("  " + line for line in body.splitlines()[1:])
    return "\n".join(lines) + "\n"


def _compact_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"


def task_view(task: TaskResult, *, now: float | None = None) -> str:
    """A task's record: labels and values, times local and relative to
    ``now``; the error with its traceback when it has one."""

    def when(timestamp: float | None) -> str:
        return format_time(timestamp, now=now, relative=True)

    pairs = [
        ("id", task.id),
        ("name", task.name or EMPTY),
        ("queue", task.queue_name or EMPTY),
        ("status", task.status.value),
        ("attempts", str(task.attempts)),
        ("created", when(task.created_at)),
        ("updated", when(task.updated_at)),
    ]
    if task.due_at is not None:
        pairs.append(("due", when(task.due_at)))
    if task.retried_from:
        pairs.append(("retried from", task.retried_from))
    if task.progress is not None:
        progress = _percent(task.progress.fraction)
        if task.progress.message:
            progress += f" {task.progress.message}"
        if task.progress.data is not None:
            progress += f" {truncate(_compact_json(task.progress.data), RESULT_MAX)}"
        pairs.append(("progress", progress))
        pairs.append(("progress at", when(task.progress.updated_at)))
    if task.status is TaskState.SUCCESS:
        text = _compact_json(task.model_dump(mode="json")["result"])
        if len(text) > RESULT_MAX:
            more = len(text) - RESULT_MAX
            text = f"{text[:RESULT_MAX]}… ({more} more characters; --json prints it all)"
        pairs.append(("result", text))
    if task.error is not None:
        pairs.append(("error", f"{task.error.type}: {task.error.message}"))
        if task.error.traceback.strip():
            pairs.append(("traceback", task.error.traceback.rstrip("\n")))
    return key_values(pairs)


def tasks_view(
    tasks: Sequence[TaskResult], *, limit: int | None = None, width: int | None = None
) -> str:
    """One row per task, newest first, times local; when the listing is full
    (``limit`` rows), a last line says how to list the older ones."""
    if not tasks:
        return "no tasks\n"
    rows = [
        [
            t.id,
            t.name or EMPTY,
            t.status.value,
            str(t.attempts),
            format_time(t.created_at),
            format_time(t.updated_at),
            format_time(t.due_at),
        ]
        for t in tasks
    ]
    headers = ["id", "name", "status", "attempts", "created", "updated", "due"]
    text = table(headers, rows, width=width, right={3}, flex=1)
    last = tasks[-1].created_at
    if limit is not None and len(tasks) >= limit and last is not None:
        text += f"\n{len(tasks)} shown; the older ones: --before {last!r}\n"
    return text


def cancel_view(outcome: CancelOutcome) -> str:
    """What a cancel did to one task."""
    return key_values(
        [
            ("id", outcome.id),
            ("status", outcome.status.value),
            ("changed", yes_no(outcome.cancelled)),
            ("detail", outcome.message or EMPTY),
        ]
    )


def health_view(adapter: str, queue: str, report: HealthReport) -> str:
    """A health check: whether the broker answers and consumers are alive."""
    names = [name for reply in report.workers for name in reply]
    workers = f"{len(names)} alive" + (f": {', '.join(names)}" if names else "")
    return key_values(
        [
            ("adapter", adapter),
            ("queue", queue),
            ("healthy", yes_no(report.healthy)),
            ("broker reachable", yes_no(report.broker_reachable)),
            ("consumer running", yes_no(report.consumer_running, none="not started here")),
            ("workers", workers),
            ("detail", redact_url(report.detail) or EMPTY),
        ]
    )


def validated_view(adapter: str, distribution: Installed | None, queue: str) -> str:
    """A configuration validated without contacting its broker."""
    origin = EMPTY
    if distribution is not None and distribution.distribution:
        origin = f"{distribution.distribution} {distribution.version or ''}".rstrip()
    return key_values(
        [
            ("configuration", "valid (the broker was not contacted)"),
            ("adapter", adapter),
            ("distribution", origin),
            ("queue", queue),
        ]
    )


def _stat(stats: Mapping[str, Any], *path: str) -> Any:
    node: Any = stats
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def metrics_view(metrics: AdapterMetrics, *, width: int | None = None) -> str:
    """Queue counters, then one row per consumer alive."""
    pairs = [
        ("queue", metrics.queue_name),
        ("queued", str(metrics.queue_depth)),
        ("in flight", str(metrics.in_flight)),
        ("dead letters, failed", count(metrics.dead_letters_failed, "no queue configured")),
        (
            "dead letters, unprocessable",
            count(metrics.dead_letters_unprocessable, "no queue configured"),
        ),
        ("workers", f"{len(metrics.workers)} alive"),
    ]
    text = key_values(pairs)
    if not metrics.workers:
        return text
    rows = []
    for name, stats in sorted(metrics.workers.items()):
        uptime = _stat(stats, "uptime")
        runs = _stat(stats, "total")
        total = (
            sum(v for v in runs.values() if isinstance(v, int))
            if isinstance(runs, Mapping)
            else None
        )
        rows.append(
            [
                name,
                count(_stat(stats, "pid")),
                count(_stat(stats, "in_flight")),
                count(_stat(stats, "pool", "max-concurrency")),
                count(total),
                format_duration(uptime) if isinstance(uptime, int | float) else EMPTY,
            ]
        )
    headers = ["worker", "pid", "in flight", "concurrency", "runs", "uptime"]
    return text + "\n" + table(headers, rows, width=width, right={1, 2, 3, 4}, flex=0)


def _error_line(record: DeadLetter) -> str:
    return truncate(f"{record.error.type}: {record.error.message}", ERROR_MAX)


def dead_letters_view(records: Sequence[DeadLetter], *, width: int | None = None) -> str:
    """One row per dead letter, oldest first."""
    if not records:
        return "no dead letters\n"
    rows = [
        [
            r.id,
            r.task_name or EMPTY,
            r.task_id or EMPTY,
            str(r.attempts),
            format_time(r.failed_at),
            _error_line(r),
        ]
        for r in records
    ]
    headers = ["id", "task", "task id", "attempts", "failed", "error"]
    return table(headers, rows, width=width, right={3})


def redrive_view(
    redriven: Sequence[tuple[str, TaskResult]],
    not_redriven: Sequence[tuple[str, str]],
    *,
    width: int | None = None,
) -> str:
    """The records redriven with their new tasks, then those left in place."""
    parts = [f"redriven: {len(redriven)}, not redriven: {len(not_redriven)}\n"]
    if redriven:
        rows = [[record, task.id, task.name or EMPTY] for record, task in redriven]
        parts.append("\n" + table(["dead letter", "new task", "task"], rows, width=width))
    if not_redriven:
        rows = [[record, reason] for record, reason in not_redriven]
        parts.append("\n" + table(["dead letter", "reason"], rows, width=width))
    return "".join(parts)


FIELDS_WIDTH = 100
"""Width the config-field lists of ``adapters`` wrap at when not on a terminal."""


def adapters_view(rows: Sequence[Mapping[str, Any]], *, width: int | None = None) -> str:
    """Installed adapters, a capability matrix of those that load, and their
    config fields."""
    if not rows:
        return "no adapters installed\n"
    listing = [
        [
            r["alias"],
            r.get("distribution") or EMPTY,
            r.get("version") or EMPTY,
            r["target"] if r["available"] else "unavailable (see below)",
        ]
        for r in rows
    ]
    text = table(["adapter", "distribution", "version", "class"], listing, width=width)
    available = [r for r in rows if r["available"]]
    if available:
        matrix = [
            [c.value, *("yes" if c.value in r["capabilities"] else "no" for r in available)]
            for c in Capability
        ]
        headers = ["CAPABILITY", *(r["alias"] for r in available)]
        text += "\n" + table(headers, matrix, upper=False)
        label = max(len(r["alias"]) for r in available) + 2
        fill = max((width or FIELDS_WIDTH) - label, 20)
        fields = [
            (r["alias"], textwrap.fill(", ".join(r["config_fields"]) or "(none)", fill))
            for r in available
        ]
        text += "\nconfig fields:\n" + key_values(fields)
    for r in rows:
        if not r["available"]:
            text += f"\nunavailable: {r['alias']}: {r['error']}\n"
    return text
