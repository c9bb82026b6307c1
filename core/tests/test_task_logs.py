"""Task logs: one lifecycle line per event on a real sqlite consumer, the running
task on handler lines, the text and JSON formats, and the worker's options."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from taskserve import (
    TaskProcessorAdapter,
    TaskProcessorConfig,
    current_task,
    instantiate_adapter_from_config,
)
from taskserve.hooks import TaskEvent
from taskserve.logs import (
    LIFECYCLE_FIELDS,
    TASK_LOGGER_NAME,
    JsonFormatter,
    TaskContextFilter,
    TaskTextFormatter,
    configure_logging,
    log_task_event,
)
from taskserve.models import TaskError

_T = TypeVar("_T")

HANDLER_LOGGER = logging.getLogger(__name__)
gate = threading.Event()


def wait_until(predicate: Callable[[], _T | None], timeout: float = 15.0) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not true within {timeout}s; last: {value!r}"
        time.sleep(0.01)


def attr(record: logging.LogRecord, name: str) -> Any:
    """The record's extra field ``name`` (KeyError when it has none)."""
    return record.__dict__[name]


class Collect(logging.Handler):
    """Keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self.records.append(record)

    def lifecycle(self, task_id: str) -> list[logging.LogRecord]:
        with self._guard:
            return [
                r
                for r in self.records
                if r.name == TASK_LOGGER_NAME and getattr(r, "task_id", None) == task_id
            ]

    def events(self, task_id: str) -> list[str]:
        return [attr(r, "task_event") for r in self.lifecycle(task_id)]

    def of(self, task_id: str, event: str) -> logging.LogRecord:
        found = [r for r in self.lifecycle(task_id) if attr(r, "task_event") == event]
        assert len(found) == 1, [r.getMessage() for r in self.lifecycle(task_id)]
        return found[0]


@pytest.fixture
def collected() -> Iterator[Collect]:
    """Every record at INFO and above, through a handler with the task filter
    (as an application installs it: on the root logger's handler)."""
    handler = Collect()
    handler.addFilter(TaskContextFilter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


# -- handlers --------------------------------------------------------------------------------
def ok(value: int) -> int:
    HANDLER_LOGGER.info("sync handler got %s", value)
    return value


async def async_ok(value: int) -> int:
    HANDLER_LOGGER.info("async handler got %s", value)
    await asyncio.to_thread(HANDLER_LOGGER.info, "async handler's thread got %s", value)
    return value


def always_fails() -> None:
    raise ValueError("no luck")


def waits_for_cancel() -> str:
    context = current_task()
    gate.set()
    assert context.wait_cancelled(30), "never cancelled"
    context.raise_if_cancelled()
    return "not cancelled"


HANDLERS: dict[str, Callable[..., Any]] = {
    "ok": ok,
    "async_ok": async_ok,
    "always_fails": always_fails,
    "waits_for_cancel": waits_for_cancel,
}


@pytest.fixture
def config(tmp_path: Path) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name="logs-tests",
        adapter_config={"path": str(tmp_path / "tasks.db"), "poll_interval_s": 0.01},
        max_retries=1,
        retry_backoff_s=0.01,
        retry_jitter=False,
        failed_task_queue_name="logs-tests.failed",
        unprocessable_task_queue_name="logs-tests.unprocessable",
    )


@pytest.fixture
def consumer(config: TaskProcessorConfig) -> Iterator[TaskProcessorAdapter]:
    gate.clear()
    adapter = instantiate_adapter_from_config(config)
    for name, handler in HANDLERS.items():
        adapter.register_task_handle(handler, name)
    adapter.start_consumer()
    yield adapter
    adapter.shutdown()


def _stop(adapter: TaskProcessorAdapter) -> None:
    """Stop the consumer: every event of the tasks it ran has been logged."""
    adapter.stop_consumer(timeout=10)


# -- lifecycle lines on a real consumer ------------------------------------------------------
def test_a_success_logs_enqueued_started_and_succeeded_once_each(
    consumer: TaskProcessorAdapter, collected: Collect
) -> None:
    task = consumer.enqueue_task_sync("ok", [7])
    wait_until(lambda: "succeeded" in collected.events(task.id))
    _stop(consumer)
    assert collected.events(task.id) == ["enqueued", "started", "succeeded"]
    enqueued = collected.of(task.id, "enqueued")
    assert (attr(enqueued, "task_name"), attr(enqueued, "queue"), attr(enqueued, "attempt")) == (
        "ok",
        "logs-tests",
        0,
    )
    assert enqueued.levelno == logging.INFO
    assert enqueued.getMessage() == f"task {task.id} ok queue=logs-tests enqueued"
    started = collected.of(task.id, "started")
    assert attr(started, "attempt") == 1 and attr(started, "queue_wait_s") >= 0
    succeeded = collected.of(task.id, "succeeded")
    assert succeeded.levelno == logging.INFO
    assert (attr(succeeded, "task_name"), attr(succeeded, "queue"), attr(succeeded, "attempt")) == (
        "ok",
        "logs-tests",
        1,
    )
    duration = attr(succeeded, "duration_s")
    assert isinstance(duration, float) and duration >= 0
    assert succeeded.getMessage() == (
        f"task {task.id} ok queue=logs-tests attempt=1 succeeded in {duration:.2f} s"
    )
    for record in collected.lifecycle(task.id):
        assert all(hasattr(record, name) for name in LIFECYCLE_FIELDS)


def test_a_failing_task_logs_its_retry_its_failure_with_traceback_and_its_dead_letter(
    consumer: TaskProcessorAdapter, collected: Collect
) -> None:
    task = consumer.enqueue_task_sync("always_fails")
    wait_until(lambda: "dead_lettered" in collected.events(task.id))
    _stop(consumer)
    assert Counter(collected.events(task.id)) == {
        "enqueued": 1,
        "started": 2,
        "retried": 1,
        "failed": 1,
        "dead_lettered": 1,
    }
    retried = collected.of(task.id, "retried")
    assert retried.levelno == logging.WARNING and attr(retried, "attempt") == 1
    assert attr(retried, "retry_delay_s") == pytest.approx(0.01)
    assert (attr(retried, "error_type"), attr(retried, "error_message")) == (
        "ValueError",
        "no luck",
    )
    assert "raised ValueError: no luck after " in retried.getMessage()
    assert retried.getMessage().endswith("; retry in 0.01 s")
    failed = collected.of(task.id, "failed")
    assert failed.levelno == logging.ERROR and attr(failed, "attempt") == 2
    assert attr(failed, "duration_s") is not None
    assert failed.getMessage().endswith(": ValueError: no luck")
    assert failed.exc_text is not None and failed.exc_text.startswith("Traceback")
    assert 'raise ValueError("no luck")' in failed.exc_text
    text = TaskTextFormatter().format(failed)
    assert text.splitlines()[0].endswith(": ValueError: no luck")
    assert 'raise ValueError("no luck")' in text
    dead = collected.of(task.id, "dead_lettered")
    assert attr(dead, "dead_letter_queue") == "logs-tests.failed"
    assert "dead-lettered to logs-tests.failed" in dead.getMessage()


def test_an_unknown_task_logs_one_failure_and_its_dead_letter(
    consumer: TaskProcessorAdapter, collected: Collect
) -> None:
    task = consumer.enqueue_task_sync("no_such_handler")
    wait_until(lambda: "dead_lettered" in collected.events(task.id))
    _stop(consumer)
    assert collected.events(task.id) == ["enqueued", "failed", "dead_lettered"]
    failed = collected.of(task.id, "failed")
    assert (
        attr(failed, "attempt") == 0
        and attr(failed, "error_type") == "taskserve.errors.UnknownTask"
    )
    assert failed.exc_text is None  # nothing ran: the message says it all
    dead = collected.of(task.id, "dead_lettered")
    assert attr(dead, "dead_letter_queue") == "logs-tests.unprocessable"


def test_cancels_log_one_line_before_and_while_running(
    consumer: TaskProcessorAdapter, collected: Collect
) -> None:
    waiting = consumer.enqueue_task_sync("ok", [1], delay_s=60)
    consumer.cancel_task_sync(waiting.id)
    running = consumer.enqueue_task_sync("waits_for_cancel")
    assert gate.wait(15)
    consumer.cancel_task_sync(running.id)
    wait_until(lambda: "cancelled" in collected.events(running.id))
    _stop(consumer)
    assert collected.events(waiting.id) == ["enqueued", "cancelled"]
    before = collected.of(waiting.id, "cancelled")
    assert before.getMessage() == f"task {waiting.id} queue=logs-tests cancelled before it started"
    assert collected.events(running.id) == ["enqueued", "started", "cancelled"]
    during = collected.of(running.id, "cancelled")
    assert attr(during, "attempt") == 1 and attr(during, "duration_s") is not None
    assert " attempt=1 cancelled after " in during.getMessage()


def test_lifecycle_lines_are_not_built_below_their_level(
    consumer: TaskProcessorAdapter, collected: Collect
) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    task = consumer.enqueue_task_sync("always_fails")
    wait_until(lambda: "dead_lettered" in collected.events(task.id))
    _stop(consumer)
    assert collected.events(task.id) == ["retried", "failed", "dead_lettered"]


# -- handler lines ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ok", "async_ok"])
def test_handler_lines_carry_the_running_task(
    name: str, consumer: TaskProcessorAdapter, collected: Collect
) -> None:
    task = consumer.enqueue_task_sync(name, [5])
    wait_until(lambda: "succeeded" in collected.events(task.id))
    HANDLER_LOGGER.info("outside any task")
    _stop(consumer)
    lines = [r for r in collected.records if r.name == __name__]
    inside = [r for r in lines if r.getMessage() != "outside any task"]
    assert len(inside) == (1 if name == "ok" else 2), [r.getMessage() for r in lines]
    for record in inside:
        fields = (
            attr(record, "task_id"),
            attr(record, "task_name"),
            attr(record, "queue"),
            attr(record, "attempt"),
        )
        assert fields == (task.id, name, "logs-tests", 1)
        assert (
            TaskTextFormatter()
            .format(record)
            .endswith(f"[task {task.id} {name} attempt=1] {record.getMessage()}")
        )
    outside = [r for r in lines if r.getMessage() == "outside any task"]
    assert len(outside) == 1 and attr(outside[0], "task_id") is None
    assert TaskTextFormatter().format(outside[0]).endswith(f"{__name__}: outside any task")


def test_the_filter_keeps_the_task_a_record_names() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    record.task_id = "given"
    assert TaskContextFilter().filter(record) is True
    assert (
        attr(record, "task_id"),
        attr(record, "task_name"),
        attr(record, "queue"),
        attr(record, "attempt"),
    ) == (
        "given",
        None,
        None,
        None,
    )


# -- JSON ------------------------------------------------------------------------------------
def _event(**fields: Any) -> TaskEvent:
    return TaskEvent(
        task_id="t-1", task_name="index", queue_name="docs", adapter="sqlite", attempt=2, **fields
    )


def test_json_lines_parse_and_carry_the_fields(collected: Collect) -> None:
    try:
        raise KeyError("page")
    except KeyError as e:
        error = TaskError.from_exception(e)
    log_task_event("failed", _event(error=error, run_time_s=0.25))
    log_task_event("succeeded", _event(run_time_s=0.5))
    HANDLER_LOGGER.info("two\nlines", extra={"page": 3, "blob": object()})
    formatter = JsonFormatter()
    mine = [r for r in collected.records if r.name in (TASK_LOGGER_NAME, __name__)]
    lines = [formatter.format(r) for r in mine]
    assert all("\n" not in line for line in lines)
    failed, succeeded, handler = (json.loads(line) for line in lines)
    assert failed["level"] == "ERROR" and failed["logger"] == TASK_LOGGER_NAME
    assert failed["task_event"] == "failed" and failed["duration_s"] == 0.25
    assert failed["task_id"] == "t-1" and failed["attempt"] == 2 and failed["queue"] == "docs"
    assert failed["error_type"] == "KeyError" and "raise KeyError" in failed["traceback"]
    assert "retry_delay_s" not in failed  # None fields are left out
    assert succeeded["message"] == "task t-1 index queue=docs attempt=2 succeeded in 0.50 s"
    assert "traceback" not in succeeded
    assert handler["message"] == "two\nlines" and handler["page"] == 3
    assert handler["blob"].startswith("<object object at")
    assert "task_id" not in handler  # logged outside any task
    assert handler["time"].endswith("+00:00")


def test_secrets_in_errors_are_hidden() -> None:
    handler = Collect()
    logger = logging.getLogger(TASK_LOGGER_NAME)
    logger.addHandler(handler)
    try:
        error = TaskError(
            type="E", message="redis://u:hunter2@h/0", traceback="T\nredis://u:hunter2@h"
        )
        log_task_event("failed", _event(error=error))
    finally:
        logger.removeHandler(handler)
    (record,) = handler.records
    shown = JsonFormatter().format(record) + TaskTextFormatter().format(record)
    assert "hunter2" not in shown and "redis://u:***@h" in shown


def test_configure_logging_replaces_its_own_handler_only() -> None:
    root = logging.getLogger()
    kept = list(root.handlers)
    # a handler an earlier configure_logging left in this process is replaced too
    before = [h for h in kept if h.get_name() != "taskserve.logs"]
    level = root.level
    try:
        first = configure_logging("info", "json", io.StringIO())
        second_stream = io.StringIO()
        second = configure_logging("DEBUG", "text", second_stream)
        assert first not in root.handlers and second in root.handlers
        assert root.handlers == [*before, second] and root.level == logging.DEBUG
        log_task_event("enqueued", _event())
        assert "INFO taskserve.tasks: task t-1 index queue=docs attempt=2 enqueued" in (
            second_stream.getvalue()
        )
        with pytest.raises(ValueError, match="log format 'xml'"):
            configure_logging("INFO", "xml")
        with pytest.raises(ValueError, match="log level 'LOUD'"):
            configure_logging("loud")
    finally:
        root.handlers = kept
        root.setLevel(level)


# -- processes -------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}


def test_without_logging_configured_task_events_print_nothing(tmp_path: Path) -> None:
    script = (
        "import time\n"
        "from taskserve import TaskProcessorConfig, instantiate_adapter_from_config\n"
        "def fails():\n"
        "    raise ValueError('boom')\n"
        "config = TaskProcessorConfig(queue_name='quiet', max_retries=1, retry_backoff_s=0,\n"
        f"    adapter_config={{'path': {str(tmp_path / 'q.db')!r}, 'poll_interval_s': 0.01}})\n"
        "adapter = instantiate_adapter_from_config(config)\n"
        "adapter.register_task_handle(fails)\n"
        "adapter.start_consumer()\n"
        "task = adapter.enqueue_task_sync('fails')\n"
        "deadline = time.monotonic() + 30\n"
        "while not adapter.get_task_status_sync(task.id).status.is_terminal:\n"
        "    assert time.monotonic() < deadline\n"
        "    time.sleep(0.01)\n"
        "adapter.shutdown()\n"
        "print(adapter.get_task_status_sync(task.id).status.value)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "FAILURE"
    assert result.stderr == ""


class _Lines:
    """The lines a process writes to one of its pipes, read on a thread."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put("")

    def until(self, wanted: Callable[[str], bool], timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no such line within {timeout}s; got:\n{''.join(self.seen)}"
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line, f"the process ended; it wrote:\n{''.join(self.seen)}"
            self.seen.append(line)
            if wanted(line):
                return line


def _worker(tmp_path: Path, *argv: str) -> tuple[subprocess.Popen[str], TaskProcessorAdapter]:
    module = f"log_handlers_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(
        "import logging\n\n"
        "def add(a, b):\n"
        "    logging.getLogger('app.handlers').info('adding %s and %s', a, b)\n"
        "    return a + b\n\n"
        "HANDLERS = [add]\n"
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "queue_name: logs-worker\n"
        "adapter: sqlite\n"
        "adapter_config:\n"
        f"  path: {tmp_path / 'tasks.db'}\n"
        "  poll_interval_s: 0.02\n"
    )
    command = [arg.format(config=config_file, handlers=f"{module}:HANDLERS") for arg in argv]
    worker = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return worker, instantiate_adapter_from_config(TaskProcessorConfig.from_yaml(config_file))


def _stop_worker(worker: subprocess.Popen[str], adapter: TaskProcessorAdapter) -> None:
    adapter.shutdown()
    if worker.poll() is None:
        worker.terminate()
    worker.wait(timeout=60)


def test_the_worker_command_prints_json_task_lines(tmp_path: Path) -> None:
    script = str(Path(sys.executable).with_name("taskserve"))
    worker, adapter = _worker(
        tmp_path,
        script,
        "worker",
        "-c",
        "{config}",
        "--handlers",
        "{handlers}",
        "--log-level",
        "INFO",
        "--log-format",
        "json",
    )
    try:
        assert worker.stdout is not None and worker.stderr is not None
        assert worker.stdout.readline().strip() == "taskserve-worker ready"
        stderr = _Lines(worker.stderr)
        task = adapter.enqueue_task_sync("add", [2, 3])

        def about_task(event: str) -> Callable[[str], bool]:
            def wanted(line: str) -> bool:
                document: dict[str, Any] = json.loads(line)  # every line is one JSON object
                return document.get("task_id") == task.id and (
                    document.get("task_event") == event or document["logger"] == event
                )

            return wanted

        handler_line = json.loads(stderr.until(about_task("app.handlers")))
        assert handler_line["message"] == "adding 2 and 3"
        assert (handler_line["task_name"], handler_line["attempt"]) == ("add", 1)
        succeeded = json.loads(stderr.until(about_task("succeeded")))
        assert succeeded["logger"] == TASK_LOGGER_NAME and succeeded["level"] == "INFO"
        assert succeeded["queue"] == "logs-worker" and succeeded["duration_s"] >= 0
        events = [json.loads(line).get("task_event") for line in stderr.seen]
        assert events.count("started") == 1 and events.count("succeeded") == 1
    finally:
        _stop_worker(worker, adapter)
    assert worker.returncode == 0


def test_the_worker_module_logs_text_and_hides_info_by_default(tmp_path: Path) -> None:
    worker, adapter = _worker(
        tmp_path,
        sys.executable,
        "-m",
        "taskserve.worker",
        "--config",
        "{config}",
        "--handlers",
        "{handlers}",
        "--log-level",
        "info",
    )
    try:
        assert worker.stdout is not None and worker.stderr is not None
        assert worker.stdout.readline().strip() == "taskserve-worker ready"
        stderr = _Lines(worker.stderr)
        task = adapter.enqueue_task_sync("add", [1, 1])
        line = stderr.until(lambda text: f"task {task.id} add " in text and "succeeded" in text)
        assert (
            " INFO taskserve.tasks: " in line and "queue=logs-worker attempt=1 succeeded in" in line
        )
        assert any(
            f"app.handlers: [task {task.id} add attempt=1] adding 1 and 1" in s for s in stderr.seen
        )
    finally:
        _stop_worker(worker, adapter)
    assert worker.returncode == 0
    quiet, adapter = _worker(
        tmp_path,
        sys.executable,
        "-m",
        "taskserve.worker",
        "--config",
        "{config}",
        "--handlers",
        "{handlers}",
    )
    try:
        assert quiet.stdout is not None and quiet.stderr is not None
        assert quiet.stdout.readline().strip() == "taskserve-worker ready"
        task = adapter.enqueue_task_sync("add", [1, 2])
        wait_until(lambda: adapter.get_task_status_sync(task.id).status.is_terminal, timeout=30)
    finally:
        _stop_worker(quiet, adapter)
    assert quiet.returncode == 0
    assert quiet.stderr.read() == ""  # WARNING by default: no line for a success
