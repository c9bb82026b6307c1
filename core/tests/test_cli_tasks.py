"""``taskserve tasks``: the queue's recent tasks as a table with local times, or
JSON; filtered by state, limited and paged; bad values refused with exit 2
before the broker is contacted."""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskserve import TaskProcessorConfig, TaskState, instantiate_adapter_from_config
from taskserve.cli import EXIT_OK, EXIT_USAGE, main, views
from taskserve.models import TaskResult

T0 = 1_767_225_600.0
"""2026-01-01 00:00:00 UTC."""

LOCAL_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d XST"


@pytest.fixture(autouse=True)
def local_zone() -> Iterator[None]:
    """Local time is UTC+05:30, named XST (a POSIX TZ rule: no tz database needed)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "XST-05:30"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "queue_name: cli-tasks\n"
        "adapter: sqlite\n"
        "adapter_config:\n"
        f"  path: {tmp_path / 'tasks.db'}\n"
    )
    return path


@pytest.fixture
def tasks(config_file: Path) -> list[TaskResult]:
    """Four tasks, oldest first: two queued, one cancelled, one delayed."""
    adapter = instantiate_adapter_from_config(TaskProcessorConfig.from_yaml(config_file))
    try:
        made = [adapter.enqueue_task_sync("index_document", [n]) for n in range(2)]
        made.append(adapter.enqueue_task_sync("transcribe"))
        adapter.cancel_task_sync(made[-1].id)
        made.append(adapter.enqueue_task_sync("index_document", delay_s=600))
        return [adapter.get_task_status_sync(t.id) for t in made]
    finally:
        adapter.shutdown()


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out=out)
    return status, out.getvalue()


def rows(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]


def test_tasks_print_as_a_table_newest_first_with_local_times(
    config_file: Path, tasks: list[TaskResult]
) -> None:
    status, text = run("tasks", "-c", str(config_file))
    assert status == EXIT_OK
    header, *lines = rows(text)
    assert header == ["ID", "NAME", "STATUS", "ATTEMPTS", "CREATED", "UPDATED", "DUE"]
    assert [line[0] for line in lines] == [t.id for t in reversed(tasks)]
    delayed, cancelled, *queued = lines
    assert delayed[2] == "PENDING" and re.fullmatch(LOCAL_TIME, delayed[6]), delayed
    assert cancelled[1] == "transcribe" and cancelled[2] == "CANCELLED"
    for line in (cancelled, *queued):
        assert line[3] == "0" and line[6] == "-"
        assert re.fullmatch(LOCAL_TIME, line[4]) and re.fullmatch(LOCAL_TIME, line[5]), line
    assert "shown" not in text  # the listing is not full: no next page to point at


def test_json_lists_every_field_with_unix_times(config_file: Path, tasks: list[TaskResult]) -> None:
    status, text = run("--json", "tasks", "-c", str(config_file), "--limit", "2")
    assert status == EXIT_OK
    listed = json.loads(text)
    assert [t["id"] for t in listed] == [tasks[3].id, tasks[2].id]
    assert listed[0] == tasks[3].model_dump(mode="json")
    assert isinstance(listed[0]["created_at"], float) and listed[0]["due_at"] > time.time()
    status, after = run("tasks", "-c", str(config_file), "--json", "--limit", "2")
    assert json.loads(after) == listed


def test_status_filters_add_up(config_file: Path, tasks: list[TaskResult]) -> None:
    def listed(*options: str) -> list[str]:
        status, text = run("--json", "tasks", "-c", str(config_file), *options)
        assert status == EXIT_OK, text
        return [t["id"] for t in json.loads(text)]

    pending = [tasks[3].id, tasks[1].id, tasks[0].id]
    assert listed("--status", "PENDING") == pending
    assert listed("--status", "cancelled") == [tasks[2].id]
    assert listed("--status", "PENDING", "CANCELLED") == [t.id for t in reversed(tasks)]
    assert listed("--status", "SUCCESS", "--status", "CANCELLED") == [tasks[2].id]
    assert listed("--status", "FAILURE") == []


def test_a_full_listing_says_how_to_page_on(config_file: Path, tasks: list[TaskResult]) -> None:
    status, text = run("tasks", "-c", str(config_file), "--limit", "2")
    assert status == EXIT_OK
    *table, footer = text.splitlines()
    assert [line[0] for line in rows("\n".join(table))[1:]] == [tasks[3].id, tasks[2].id]
    match = re.fullmatch(r"2 shown; the older ones: --before (\S+)", footer)
    assert match is not None, footer
    status, text = run("--json", "tasks", "-c", str(config_file), "--before", match[1])
    assert [t["id"] for t in json.loads(text)] == [tasks[1].id, tasks[0].id]


def test_before_takes_a_unix_time_or_an_iso_time(
    config_file: Path, tasks: list[TaskResult]
) -> None:
    def listed(before: str) -> list[str]:
        status, text = run("--json", "tasks", "-c", str(config_file), "--before", before)
        assert status == EXIT_OK, text
        return [t["id"] for t in json.loads(text)]

    newest = tasks[3].created_at
    assert newest is not None
    assert listed(repr(newest)) == [t.id for t in reversed(tasks[:3])]
    assert listed("2000-01-01T00:00:00+00:00") == []
    assert len(listed("2999-01-01T00:00:00Z")) == 4


def test_an_empty_queue_says_so(config_file: Path) -> None:
    assert run("tasks", "-c", str(config_file)) == (EXIT_OK, "no tasks\n")
    assert run("--json", "tasks", "-c", str(config_file)) == (EXIT_OK, "[]\n")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--limit", "0"], "limit must be an int from 1 to 1000"),
        (["--limit", "1001"], "limit must be an int from 1 to 1000"),
        (["--status", "sideways"], "status must be one of PENDING"),
        (["--before", "yesterday"], "--before must be a unix time or an ISO 8601 time"),
        (["--before", "nan"], "--before must be a finite unix time"),
        (["--before", "2026-01-31T12:00:00"], "--before needs an offset"),
    ],
)
def test_bad_values_exit_2_naming_the_option_without_a_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], named: str
) -> None:
    missing = tmp_path / "nowhere" / "tasks.db"
    config = tmp_path / "config.yaml"
    config.write_text(f"queue_name: q\nadapter_config:\n  path: {missing}\n")
    status, text = run("tasks", "-c", str(config), *options)
    assert status == EXIT_USAGE and text == ""
    assert named in capsys.readouterr().err
    assert not missing.parent.exists(), "the store was opened for a refused command"


def test_a_limit_that_is_not_a_number_is_an_argparse_error(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run("tasks", "-c", str(config_file), "--limit", "many")
    assert exited.value.code == EXIT_USAGE
    assert "--limit" in capsys.readouterr().err


def _task(n: int, **fields: Any) -> TaskResult:
    data: dict[str, Any] = {
        "id": f"task-{n}",
        "name": "index",
        "status": TaskState.PENDING,
        "created_at": T0 + n,
        "updated_at": T0 + n,
    }
    return TaskResult(**(data | fields))


def test_the_view_shows_each_column() -> None:
    text = views.tasks_view(
        [_task(2, status=TaskState.RETRY, attempts=2, due_at=T0 + 60), _task(1, name=None)],
        limit=50,
    )
    header, retry, unnamed = rows(text)
    assert header == ["ID", "NAME", "STATUS", "ATTEMPTS", "CREATED", "UPDATED", "DUE"]
    assert retry == [
        "task-2",
        "index",
        "RETRY",
        "2",
        "2026-01-01 05:30:02 XST",
        "2026-01-01 05:30:02 XST",
        "2026-01-01 05:31:00 XST",
    ]
    assert unnamed[:3] == ["task-1", "-", "PENDING"] and unnamed[-1] == "-"
    hostile = views.tasks_view([_task(3, name="index\x1b[31m\u202e")])
    assert "index\\x1b[31m\\u202e" in hostile and "\x1b" not in hostile
    assert views.tasks_view([], limit=10) == "no tasks\n"
    assert views.tasks_view([_task(1)], limit=1).endswith(
        f"\n1 shown; the older ones: --before {T0 + 1!r}\n"
    )


def test_the_view_fits_a_narrow_terminal_by_cutting_names() -> None:
    text = views.tasks_view([_task(1, name="n" * 200)], width=140)
    assert all(len(line) <= 140 for line in text.splitlines()), text
    assert "…" in text and "task-1" in text
