"""The ``taskserve`` command's output for people, ``--json``, ``--version``,
configuration problems, the shipped example configs, and handlers imported
from the working directory."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskserve import TaskProcessorConfig, TaskState, instantiate_adapter_from_config
from taskserve.cli import EXIT_OK, EXIT_USAGE, main
from taskserve.registry import installed_adapters
from taskserve.selection import FIRST_PARTY_DISTRIBUTIONS

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIGS = sorted((REPO / "examples" / "configs").glob("*.yaml"))
EXAMPLE_QUEUE = "document_indexing_queue"
"""The queue of examples/document_indexing.py, which every example config names."""

EPOCH_FLOAT = re.compile(r"\b1\d{9}(\.\d+)?\b")
"""A unix time as a number (what the human output must not show)."""


@pytest.fixture
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
        "queue_name: cli-output\n"
        "adapter: sqlite\n"
        "adapter_config:\n"
        f"  path: {tmp_path / 'tasks.db'}\n"
        "max_retries: 0\n"
        "failed_task_queue_name: cli-output.failed\n"
    )
    return path


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out=out)
    return status, out.getvalue()


def labelled(text: str) -> dict[str, str]:
    """``label  value`` lines as a mapping (labels may hold one space)."""
    pairs = (re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2}


# -- human output -----------------------------------------------------------------
def test_show_prints_labelled_values_with_local_times(config_file: Path, local_zone: None) -> None:
    status, text = run("enqueue", "-c", str(config_file), "add", "--args", "[1, 2]")
    assert status == EXIT_OK
    values = labelled(text)
    task_id = values["id"]
    assert values["status"] == "PENDING" and values["name"] == "add"
    status, text = run("show", "-c", str(config_file), task_id)
    assert status == EXIT_OK
    values = labelled(text)
    assert values["queue"] == "cli-output" and values["attempts"] == "0"
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d XST \((now|\d+ s ago)\)", values["created"]
    ), values["created"]
    assert not EPOCH_FLOAT.search(text), text


def test_delayed_task_shows_when_it_is_due(config_file: Path, local_zone: None) -> None:
    status, text = run("enqueue", "-c", str(config_file), "add", "--delay-s", "120")
    assert status == EXIT_OK
    due = labelled(text)["due"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d XST \(in (1 min \d+ s|2 min)\)", due), due


def test_json_flag_goes_before_or_after_the_command(config_file: Path) -> None:
    status, before = run("--json", "enqueue", "-c", str(config_file), "add")
    assert status == EXIT_OK and json.loads(before)["status"] == "PENDING"
    task_id = json.loads(before)["id"]
    status, after = run("show", "-c", str(config_file), task_id, "--json")
    assert status == EXIT_OK
    shown = json.loads(after)
    assert shown["id"] == task_id and isinstance(shown["created_at"], float)


def test_cancel_and_metrics_read_as_labelled_values(config_file: Path) -> None:
    status, text = run("enqueue", "-c", str(config_file), "add")
    task_id = labelled(text)["id"]
    status, text = run("cancel", "-c", str(config_file), task_id)
    assert status == EXIT_OK
    values = labelled(text)
    assert (values["id"], values["status"], values["changed"]) == (task_id, "CANCELLED", "yes")
    status, text = run("metrics", "-c", str(config_file))
    values = labelled(text)
    assert status == EXIT_OK and values["queue"] == "cli-output" and values["queued"] == "0"
    assert values["dead letters, failed"] == "0"
    assert values["dead letters, unprocessable"] == "no queue configured"


def test_check_prints_health(config_file: Path) -> None:
    status, text = run("check", "-c", str(config_file))
    values = labelled(text)
    assert status == EXIT_OK
    assert values["adapter"] == "sqlite" and values["healthy"] == "yes"
    assert values["broker reachable"] == "yes" and values["consumer running"] == "not started here"


def test_adapters_prints_a_capability_matrix() -> None:
    status, text = run("adapters")
    assert status == EXIT_OK
    listing = next(line for line in text.splitlines() if line.startswith("sqlite "))
    assert listing.split() == [
        "sqlite",
        "taskserve",
        version("taskserve"),
        "taskserve.adapters.sqlite:SqliteAdapter",
    ]
    header = next(line for line in text.splitlines() if line.startswith("CAPABILITY"))
    column = header.split().index("sqlite")
    row = next(line for line in text.splitlines() if line.startswith("dead_letters "))
    assert row.split()[column] == "yes"


def test_dead_letters_print_as_a_table(config_file: Path, local_zone: None) -> None:
    config = TaskProcessorConfig.from_yaml(config_file)
    adapter = instantiate_adapter_from_config(config)

    def explode() -> None:
        raise ValueError("broken \x1b[31mred\x1b[0m input")

    adapter.register_task_handle(explode, "explode")
    adapter.start_consumer()
    try:
        task = adapter.enqueue_task_sync("explode")
        deadline = time.monotonic() + 10
        while adapter.get_task_status_sync(task.id).status is not TaskState.FAILURE:
            assert time.monotonic() < deadline, "the task never failed"
            time.sleep(0.02)
    finally:
        adapter.shutdown()
    status, text = run("dead-letters", "list", "-c", str(config_file))
    assert status == EXIT_OK
    header, row = text.splitlines()
    assert header.split() == ["ID", "TASK", "TASK", "ID", "ATTEMPTS", "FAILED", "ERROR"]
    assert f"explode  {task.id}" in row and " XST " in row
    assert "ValueError: broken \\x1b[31mred\\x1b[0m input" in row  # escaped, not sent raw
    assert "\x1b" not in text
    status, text = run("show", "-c", str(config_file), task.id)
    values = labelled(text)
    assert values["status"] == "FAILURE" and values["error"].endswith("input")
    assert "traceback" in values
    status, text = run("dead-letters", "purge", "-c", str(config_file), "--yes")
    assert (status, text) == (EXIT_OK, "purged 1 failed dead letter\n")
    assert run("dead-letters", "list", "-c", str(config_file)) == (EXIT_OK, "no dead letters\n")


# -- --version ----------------------------------------------------------------------
def test_version_names_the_core_and_every_adapter(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"taskserve {version('taskserve')}"
    assert lines[1] == "adapters:"
    listed = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert set(listed) == set(installed_adapters())
    assert listed["sqlite"] == ["taskserve", version("taskserve"), "built", "in"]
    for alias, dist in FIRST_PARTY_DISTRIBUTIONS.items():
        if alias in listed:
            assert listed[alias] == [dist, version(dist)]


def test_version_through_the_console_script() -> None:
    script = Path(sys.executable).with_name("taskserve")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"taskserve {version('taskserve')}\n")


# -- configuration problems ---------------------------------------------------------
def test_every_config_problem_is_printed_on_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "max_retries: -1\nlease_s: 0\nretries: 2\nadapter: sqlite\n"
        "adapter_config:\n  pth: x.db\n  busy_timeout_s: soon\n"
    )
    assert run("check", "-c", str(bad))[0] == EXIT_USAGE
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"taskserve: error: invalid configuration in '{bad}' (6 problems):"
    assert sorted(lines[1:]) == sorted(
        [
            "  queue_name: Field required",
            "  max_retries: Input should be greater than or equal to 0",
            "  lease_s: Input should be greater than 0",
            "  retries: unknown field; did you mean 'max_retries'?",
            "  adapter_config.pth: unknown field; did you mean 'path'? (adapter 'sqlite')",
            "  adapter_config.busy_timeout_s: Input should be a valid number, unable to parse "
            "string as a number (adapter 'sqlite')",
        ]
    )


def test_config_problems_never_show_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    text = json.dumps({"queue_name": "q", "adapter_config": {"url": "redis://:hunter2@h:1/0"}})
    assert run("check", "--config", text)[0] == EXIT_USAGE
    err = capsys.readouterr().err
    assert "(1 problem):" in err and "adapter_config.url: unknown field" in err
    assert "hunter2" not in err


def test_a_nested_section_is_selected_by_a_dotted_path(tmp_path: Path) -> None:
    serve = tmp_path / "serve.yaml"
    serve.write_text(
        "applications:\n"
        "  - name: docs\n"
        "    import_path: app:graph\n"
        "    args:\n"
        "      processor:\n"
        "        queue_name: nested-queue\n"
        f"        adapter_config: {{path: {tmp_path / 'n.db'}}}\n"
    )
    for key in ("applications.0.args.processor", "applications.docs.args.processor"):
        status, text = run("check", "--no-connect", "--json", "-c", str(serve), "--key", key)
        assert status == EXIT_OK
        assert json.loads(text) == {"adapter": "sqlite", "queue": "nested-queue", "valid": True}


def test_a_missing_section_names_what_is_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serve = tmp_path / "serve.yaml"
    serve.write_text("applications:\n  - name: docs\n    args: {processor: {queue_name: q}}\n")
    assert run("check", "-c", str(serve), "--key", "applications.0.args.tasks")[0] == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no section 'applications.0.args.tasks' ('applications.0.args' has: processor)" in err


def test_check_no_connect_validates_without_the_broker(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    config = json.dumps({"queue_name": "q", "adapter_config": {"path": str(blocked / "x.db")}})
    status, text = run("check", "--no-connect", "--config", config)
    assert status == EXIT_OK
    assert labelled(text)["configuration"] == "valid (the broker was not contacted)"
    assert run("check", "--json", "--config", config)[0] != EXIT_OK  # connecting fails


# -- the example configs ------------------------------------------------------------
def test_the_example_configs_are_there() -> None:
    assert len(EXAMPLE_CONFIGS) >= 4, EXAMPLE_CONFIGS


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_every_example_config_passes_check(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alias = yaml.safe_load(path.read_text()).get("adapter")
    if alias in FIRST_PARTY_DISTRIBUTIONS and alias not in installed_adapters():
        pytest.skip(f"needs {FIRST_PARTY_DISTRIBUTIONS[alias]}")
    status, text = run("check", "--no-connect", "--json", "-c", str(path))
    assert status == EXIT_OK, capsys.readouterr().err
    assert json.loads(text) == {"adapter": alias, "queue": EXAMPLE_QUEUE, "valid": True}


def test_the_sqlite_example_config_passes_a_live_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # its relative database path lands here
    status, text = run("check", "--json", "-c", str(REPO / "examples" / "configs" / "sqlite.yaml"))
    assert status == EXIT_OK and json.loads(text)["healthy"] is True
    assert (tmp_path / ".taskserve" / "examples.db").is_file()


# -- handlers from the working directory ---------------------------------------------
def _handlers_module(folder: Path) -> str:
    name = f"handlers_{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text("def add(a, b):\n    return a + b\n\nHANDLERS = [add]\n")
    return name


def _worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    return env | extra


def test_worker_imports_handlers_from_the_working_directory(
    tmp_path: Path, config_file: Path
) -> None:
    work = tmp_path / "project"
    work.mkdir()
    module = _handlers_module(work)
    script = Path(sys.executable).with_name("taskserve")
    worker = subprocess.Popen(
        [str(script), "worker", "-c", str(config_file), "--handlers", f"{module}:HANDLERS"],
        cwd=work,
        env=_worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    adapter = instantiate_adapter_from_config(TaskProcessorConfig.from_yaml(config_file))
    try:
        assert worker.stdout is not None
        ready = worker.stdout.readline()  # "" once the process ended
        assert ready.strip() == "taskserve-worker ready", worker.communicate(timeout=30)[1]
        task = adapter.enqueue_task_sync("add", [2, 3])
        deadline = time.monotonic() + 30
        while (status := adapter.get_task_status_sync(task.id)).status is not TaskState.SUCCESS:
            assert status.status is not TaskState.FAILURE, status.error
            assert time.monotonic() < deadline, "the worker never ran the task"
            time.sleep(0.05)
        assert status.result == 5
    finally:
        adapter.shutdown()
        worker.terminate()
        worker.communicate(timeout=60)
    assert worker.returncode == 0


def test_safe_path_keeps_the_working_directory_out(tmp_path: Path, config_file: Path) -> None:
    module = _handlers_module(tmp_path)
    script = Path(sys.executable).with_name("taskserve")
    result = subprocess.run(
        [str(script), "worker", "-c", str(config_file), "--handlers", f"{module}:HANDLERS"],
        cwd=tmp_path,
        env=_worker_env(PYTHONSAFEPATH="1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_USAGE
    assert f"no module named '{module}' in the working directory ({tmp_path})" in result.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{module}:MISSING", "module '{module}' has no attribute 'MISSING'"),
        ("nowhere_{uid}:HANDLERS", "no module named 'nowhere_{uid}' in the working directory"),
        ("{module}", "--handlers must look like 'package.module:NAME'"),
    ],
)
def test_bad_handlers_are_usage_errors(
    spec: str,
    message: str,
    tmp_path: Path,
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    root = logging.getLogger()  # the worker command sets up logging before it fails
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    fields: dict[str, Any] = {"module": _handlers_module(tmp_path), "uid": uuid.uuid4().hex[:8]}
    status, _ = run("worker", "-c", str(config_file), "--handlers", spec.format(**fields))
    assert status == EXIT_USAGE
    assert message.format(**fields) in capsys.readouterr().err
