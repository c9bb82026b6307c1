"""The text primitives and views of the ``taskserve`` command, without a broker."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from taskserve import TaskState
from taskserve.cli import render, views
from taskserve.models import (
    AdapterMetrics,
    DeadLetter,
    DeadLetterKind,
    TaskError,
    TaskProgress,
    TaskResult,
)

T0 = 1_767_225_600.0
"""2026-01-01 00:00:00 UTC."""


@pytest.fixture(autouse=True)
def local_zone() -> Iterator[None]:
    """Local time is UTC+05:30, named XST."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "XST-05:30"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_times_are_local_with_the_zone_name() -> None:
    assert render.format_time(T0) == "2026-01-01 05:30:00 XST"
    assert render.format_time(None) == "-"
    assert (
        render.format_time(T0, now=T0 - 90, relative=True)
        == "2026-01-01 05:30:00 XST (in 1 min 30 s)"
    )
    assert render.format_time(T0, now=T0 + 7200, relative=True).endswith("(2 h ago)")
    assert render.format_time(T0, now=T0 + 0.4, relative=True).endswith("(now)")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (59.6, "1 min"),
        (61, "1 min 1 s"),
        (3600, "1 h"),
        (3725, "1 h 2 min"),
        (90061, "1 d 1 h"),
        (-45, "45 s"),
    ],
)
def test_durations_keep_their_two_largest_units(seconds: float, text: str) -> None:
    assert render.format_duration(seconds) == text


def test_control_characters_are_escaped() -> None:
    assert render.clean("a\x1b[2Jb\tc\nd\x7f\u202e") == "a\\x1b[2Jb\\tc\\nd\\x7f\\u202e"
    assert render.clean("one\ntwo", keep_newlines=True) == "one\ntwo"
    assert render.clean("naïve 日本") == "naïve 日本"


def test_tables_align_columns_and_count_wide_characters() -> None:
    text = render.table(["name", "n"], [["日本", "1"], ["abcde", "22"]], right={1})
    assert text.splitlines() == ["NAME    N", "日本    1", "abcde  22"]


def test_cells_are_cut_and_the_flex_column_fits_the_width() -> None:
    long = "x" * 100
    _header, row = render.table(["id", "error"], [["a", long]]).splitlines()
    assert row == "a   " + "x" * (render.CELL_MAX - 1) + "…"
    lines = render.table(["id", "error"], [["a", long]], width=30).splitlines()
    assert all(render.display_width(line) <= 30 for line in lines)
    assert lines[1].endswith("…")


def test_key_values_align_and_indent_continuation_lines() -> None:
    text = render.key_values([("id", "1"), ("traceback", "line 1\nline 2")])
    assert text.splitlines() == ["id         1", "traceback  line 1", "           line 2"]


def test_task_view_of_a_failed_task() -> None:
    task = TaskResult(
        id="t1",
        status=TaskState.FAILURE,
        name="index",
        queue_name="docs",
        created_at=T0,
        updated_at=T0 + 5,
        attempts=2,
        error=TaskError(type="ValueError", message="bad page", traceback="Traceback\n  boom\n"),
        progress=TaskProgress(fraction=0.25, message="page 1", updated_at=T0 + 1),
    )
    lines = views.task_view(task, now=T0 + 65).splitlines()
    assert lines == [
        "id           t1",
        "name         index",
        "queue        docs",
        "status       FAILURE",
        "attempts     2",
        "created      2026-01-01 05:30:00 XST (1 min 5 s ago)",
        "updated      2026-01-01 05:30:05 XST (1 min ago)",
        "progress     25% page 1",
        "progress at  2026-01-01 05:30:01 XST (1 min 4 s ago)",
        "error        ValueError: bad page",
        "traceback    Traceback",
        "               boom",
    ]


def test_task_view_cuts_a_long_result() -> None:
    task = TaskResult(id="t", status=TaskState.SUCCESS, result="y" * 2000, created_at=T0)
    result = next(line for line in views.task_view(task).splitlines() if line.startswith("result"))
    assert result.endswith("… (1502 more characters; --json prints it all)")


def test_metrics_view_lists_workers() -> None:
    metrics = AdapterMetrics(
        queue_name="docs",
        queue_depth=4,
        in_flight=1,
        dead_letters_failed=None,
        workers={
            "w1@host": {
                "pool": {"max-concurrency": 8},
                "total": {"index": 10, "other": 2},
                "pid": 4242,
                "uptime": 3725,
                "in_flight": 1,
            },
            "odd": {"pool": "not a mapping"},
        },
    )
    text = views.metrics_view(metrics)
    assert "dead letters, failed         no queue configured" in text
    table = text.split("\n\n")[1].splitlines()
    assert table[0].split() == ["WORKER", "PID", "IN", "FLIGHT", "CONCURRENCY", "RUNS", "UPTIME"]
    assert table[1].split() == ["odd", "-", "-", "-", "-", "-"]
    assert table[2].split() == ["w1@host", "4242", "1", "8", "12", "1", "h", "2", "min"]


def test_dead_letters_view() -> None:
    record = DeadLetter(
        id="d1",
        kind=DeadLetterKind.FAILED,
        queue_name="docs.failed",
        source_queue="docs",
        task_id="t1",
        task_name="index",
        args=[],
        kwargs={},
        error=TaskError(type="KeyError", message="m" * 200),
        attempts=3,
        enqueued_at=T0,
        failed_at=T0,
    )
    header, row = views.dead_letters_view([record]).splitlines()
    assert header.split() == ["ID", "TASK", "TASK", "ID", "ATTEMPTS", "FAILED", "ERROR"]
    assert row.startswith("d1  index  t1")
    assert "2026-01-01 05:30:00 XST" in row and row.endswith("…")
    assert views.dead_letters_view([]) == "no dead letters\n"
