"""The ``taskserve`` command line, on the sqlite adapter."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from taskserve import NonRetryableError, TaskProcessorConfig, instantiate_adapter_from_config
from taskserve.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "taskserve:\n"
        "  queue_name: cli-tests\n"
        "  adapter: sqlite\n"
        "  adapter_config:\n"
        f"    path: {tmp_path / 'tasks.db'}\n"
        "  max_retries: 0\n"
        "  failed_task_queue_name: cli-tests.failed\n"
    )
    return path


def run(*argv: str) -> tuple[int, Any]:
    out = io.StringIO()
    status = main(list(argv), out=out)
    text = out.getvalue()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def cfg(config_file: Path) -> list[str]:
    return ["--json", "--config", str(config_file), "--key", "taskserve"]


def test_adapters_lists_capabilities_without_a_broker() -> None:
    status, rows = run("adapters", "--json")
    assert status == EXIT_OK
    sqlite = next(row for row in rows if row["alias"] == "sqlite")
    assert sqlite["available"] is True
    assert "cancel_running" in sqlite["capabilities"]
    assert "path" in sqlite["config_fields"]
    assert sqlite["distribution"] == "taskserve" and sqlite["version"]


def test_check_reports_health(config_file: Path, tmp_path: Path) -> None:
    status, report = run("check", *cfg(config_file))
    assert status == EXIT_OK
    assert report["healthy"] is True and report["adapter"] == "sqlite"
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    bad = json.dumps({"queue_name": "q", "adapter_config": {"path": str(blocked / "x.db")}})
    status, _ = run("check", "--json", "--config", bad)
    assert status in (EXIT_FAILURE, EXIT_USAGE)


def test_enqueue_show_cancel(config_file: Path) -> None:
    status, task = run("enqueue", *cfg(config_file), "add", "--args", "[1, 2]")
    assert status == EXIT_OK and task["status"] == "PENDING"
    status, shown = run("show", *cfg(config_file), task["id"])
    assert status == EXIT_OK and shown["name"] == "add" and shown["status"] == "PENDING"
    status, outcome = run("cancel", *cfg(config_file), task["id"])
    assert status == EXIT_OK and outcome["status"] == "CANCELLED"
    status, metrics = run("metrics", *cfg(config_file))
    assert status == EXIT_OK and metrics["queue_depth"] == 0


def test_enqueue_with_a_delay_or_an_eta(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = time.time()
    status, task = run("enqueue", *cfg(config_file), "add", "--args", "[1, 2]", "--delay-s", "60")
    assert status == EXIT_OK and task["status"] == "PENDING"
    assert before + 60 <= task["due_at"] <= time.time() + 60
    status, shown = run("show", *cfg(config_file), task["id"])
    assert status == EXIT_OK and shown["due_at"] == pytest.approx(task["due_at"])
    eta = "2100-01-01T00:00:00+00:00"
    assert run("enqueue", *cfg(config_file), "add", "--eta", eta)[0] == EXIT_USAGE
    assert "ahead" in capsys.readouterr().err
    soon = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 30))
    status, task = run("enqueue", *cfg(config_file), "add", "--eta", soon)
    assert status == EXIT_OK and task["due_at"] == pytest.approx(time.time() + 30, abs=2)
    naive = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 30))
    assert run("enqueue", *cfg(config_file), "add", "--eta", naive)[0] == EXIT_USAGE
    assert "aware datetime" in capsys.readouterr().err
    assert run("enqueue", *cfg(config_file), "add", "--eta", "tomorrow")[0] == EXIT_USAGE
    assert "--eta must be an ISO 8601 time" in capsys.readouterr().err
    assert run("enqueue", *cfg(config_file), "add", "--delay-s", "-1")[0] == EXIT_USAGE
    assert "delay_s must be between 0" in capsys.readouterr().err
    status, task = run("enqueue", *cfg(config_file), "add", "--args", "[1, 2]", "--priority", "9")
    assert status == EXIT_OK and task["status"] == "PENDING"
    assert run("enqueue", *cfg(config_file), "add", "--priority", "10")[0] == EXIT_USAGE
    assert "priority must be from 0 (lowest) to 9 (highest), got 10" in capsys.readouterr().err


def test_show_unknown_task_fails(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = run("show", *cfg(config_file), "missing")
    assert status == EXIT_FAILURE
    assert "No task with id 'missing'" in capsys.readouterr().err


def test_usage_errors_exit_2(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKSERVE_CONFIG", raising=False)
    assert run("show", "x")[0] == EXIT_USAGE
    assert "TASKSERVE_CONFIG" in capsys.readouterr().err
    assert run("enqueue", *cfg(config_file), "add", "--args", "{}")[0] == EXIT_USAGE
    assert run("show", "--config", '{"queue_name": "q", "adapter": "sqlit"}', "x")[0] == EXIT_USAGE
    assert "Did you mean 'sqlite'" in capsys.readouterr().err
    assert run("dead-letters", "purge", *cfg(config_file))[0] == EXIT_USAGE
    assert "--yes" in capsys.readouterr().err


def explode() -> None:
    raise NonRetryableError("no")


def test_dead_letters_list_redrive_purge(config_file: Path) -> None:
    config = TaskProcessorConfig.from_yaml(config_file, key="taskserve")
    adapter = instantiate_adapter_from_config(config)
    adapter.register_task_handle(explode)
    adapter.start_consumer()
    try:
        task = adapter.enqueue_task_sync("explode")
        deadline = time.monotonic() + 10
        while adapter.get_task_status_sync(task.id).status.value != "FAILURE":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        adapter.stop_consumer(timeout=1)
    status, records = run("dead-letters", "list", *cfg(config_file))
    assert status == EXIT_OK and [r["task_id"] for r in records] == [task.id]
    assert records[0]["error"]["message"] == "no"
    status, outcome = run("dead-letters", "redrive", *cfg(config_file), "--ids", records[0]["id"])
    redriven = outcome["redriven"]
    assert status == EXIT_OK and redriven[0]["retried_from"] == task.id
    assert redriven[0]["dead_letter_id"] == records[0]["id"] and outcome["not_redriven"] == []
    assert run("dead-letters", "list", *cfg(config_file))[1] == []
    adapter.register_task_handle(explode, "explode")
    adapter.start_consumer()
    try:
        deadline = time.monotonic() + 10
        while adapter.get_task_status_sync(redriven[0]["task_id"]).status.value != "FAILURE":
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        adapter.shutdown()
    status, purged = run("dead-letters", "purge", *cfg(config_file), "--yes")
    assert status == EXIT_OK and purged == {"purged": 1}


def test_console_script_entry_point(config_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "taskserve.cli", "adapters", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert any(row["alias"] == "sqlite" for row in json.loads(result.stdout))
