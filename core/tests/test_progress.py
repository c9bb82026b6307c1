"""Progress reports (``current_task().report_progress``): the arguments, the
write-rate limit, the store operation ``write_progress`` of every store (the
SQL store on sqlite, the SQL ledger store, the Redis store on a real Redis),
and a report's way from a running handler to the task's status, the HTTP API,
the clients and the command line on the sqlite adapter."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from fastapi.testclient import TestClient

from taskserve import (
    Capability,
    InvalidArgument,
    TaskError,
    TaskMessage,
    TaskProcessorAdapter,
    TaskProcessorConfig,
    TaskProgress,
    TaskResult,
    TaskRunner,
    TaskState,
    current_task,
    hookimpl,
    instantiate_adapter_from_config,
)
from taskserve.adapters.sqlite import SqliteAdapter
from taskserve.adapters.sqlite.dialect import SqliteDialect
from taskserve.cli import EXIT_OK, main
from taskserve.client import TaskClient
from taskserve.engine.progress import (
    MAX_PROGRESS_DATA_BYTES,
    MAX_PROGRESS_MESSAGE_LENGTH,
    PROGRESS_WRITE_INTERVAL_S,
    ProgressThrottle,
    check_progress,
    progress_json,
)
from taskserve.hooks import TaskEvent
from taskserve.http import create_task_app
from taskserve.kit import (
    SCHEMA_VERSION,
    LedgerStore,
    QueueStore,
    RedisTaskStore,
    SqlTaskStore,
    StoreRecorder,
    TaskStore,
)
from taskserve.plugins import get_plugin_manager
from taskserve.serialization import build_message

REDIS_URL = "redis://127.0.0.1:6379/0"
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"
OWNER = "consumer-a"
OTHER = "consumer-b"
ERROR = TaskError(type="ValueError", message="bad")

_T = TypeVar("_T")


def wait_until(predicate: Callable[[], _T | None], timeout: float = 10.0) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not true within {timeout}s; last: {value!r}"
        time.sleep(0.01)


def wait_terminal(adapter: TaskProcessorAdapter, task_id: str) -> TaskResult:
    def finished() -> TaskResult | None:
        record = adapter.get_task_status_sync(task_id)
        return record if record.status.is_terminal else None

    return wait_until(finished)


# -- the arguments --------------------------------------------------------------------
def test_a_report_keeps_what_the_handler_gave() -> None:
    progress = check_progress(1, "done", {"pages": [1, 2], "ratio": 0.5}, now=123.5)
    assert progress == TaskProgress(
        fraction=1.0, message="done", data={"pages": [1, 2], "ratio": 0.5}, updated_at=123.5
    )
    assert isinstance(progress.fraction, float)
    assert check_progress(0).message is None and check_progress(0).data is None
    unicode = "caf\u00e9 \u2603 \U0001f600"
    assert check_progress(0.25, unicode, [unicode]).message == unicode


def test_the_data_is_copied_when_reported() -> None:
    data: dict[str, Any] = {"done": [1]}
    progress = check_progress(0.5, None, data)
    data["done"].append(2)
    assert progress.data == {"done": [1]}


def _deep(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ((True,), "fraction"),
        ((False,), "fraction"),
        (("0.5",), "fraction"),
        ((None,), "fraction"),
        ((float("nan"),), "fraction"),
        ((float("inf"),), "fraction"),
        ((-0.01,), "fraction"),
        ((1.0001,), "fraction"),
        ((2,), "fraction"),
        ((0.5, 3), "message"),
        ((0.5, b"bytes"), "message"),
        ((0.5, "x" * (MAX_PROGRESS_MESSAGE_LENGTH + 1)), "message"),
        ((0.5, "lone \ud800 surrogate"), "message"),
        ((0.5, None, {1: "int key"}), "data"),
        ((0.5, None, {"set": {1, 2}}), "data"),
        ((0.5, None, object()), "data"),
        ((0.5, None, [float("nan")]), "data"),
        ((0.5, None, "x" * MAX_PROGRESS_DATA_BYTES), "data"),
        ((0.5, None, _deep(150)), "data"),
    ],
)
def test_a_report_that_is_not_acceptable_is_refused_naming_the_argument(
    args: tuple[Any, ...], named: str
) -> None:
    with pytest.raises(InvalidArgument, match=named):
        check_progress(*args)


# -- the store operation, on every store ---------------------------------------------------
def _queued(store: TaskStore) -> TaskMessage:
    message = build_message(
        task_name="t", args=[1], kwargs={}, queue_name="q", max_payload_bytes=10_000
    )
    assert store.insert(message, None).created
    return message


def _begin(store: TaskStore, message: TaskMessage, owner: str, lease_s: float = 30.0) -> None:
    if isinstance(store, QueueStore) and not isinstance(store, LedgerStore):
        claimed = store.claim(owner, lease_s, 3)
        assert claimed is not None and claimed.task_id == message.id and claimed.begun.started
    else:
        assert store.begin(message, owner, lease_s, 3).started


def _started(store: TaskStore, owner: str = OWNER, lease_s: float = 30.0) -> TaskMessage:
    message = _queued(store)
    _begin(store, message, owner, lease_s)
    return message


def _report(fraction: float, message: str = "", **data: Any) -> tuple[TaskProgress, str]:
    progress = check_progress(fraction, message or None, data or None)
    return progress, progress_json(progress)


def test_every_store_has_the_operation(store: TaskStore) -> None:
    assert isinstance(store, TaskStore)
    assert callable(store.write_progress)


def test_progress_is_written_while_started_under_the_own_lease_only(store: TaskStore) -> None:
    first, first_json = _report(0.25, "quarter", pages=3)
    message = _queued(store)
    assert not store.write_progress(message.id, OWNER, first_json), "PENDING took progress"
    assert store.status(message.id).progress is None
    _begin(store, message, OWNER)
    assert not store.write_progress(message.id, OTHER, first_json), "another owner wrote"
    assert store.status(message.id).progress is None
    assert store.write_progress(message.id, OWNER, first_json)
    record = store.status(message.id)
    assert record.status is TaskState.STARTED and record.progress == first
    second, second_json = _report(0.5)
    assert store.write_progress(message.id, OWNER, second_json)
    assert store.status(message.id).progress == second
    assert not store.write_progress(str(uuid.uuid4()), OWNER, first_json), "unknown id"


@pytest.mark.parametrize("outcome", ["success", "failure", "cancelled"])
def test_a_finished_task_keeps_its_last_report_and_takes_no_other(
    store: TaskStore, outcome: str
) -> None:
    last, last_json = _report(0.75, "last")
    message = _started(store)
    assert store.write_progress(message.id, OWNER, last_json)
    if outcome == "success":
        assert store.finish(message.id, TaskState.SUCCESS, result_json="1")
    elif outcome == "failure":
        assert store.finish(message.id, TaskState.FAILURE, error=ERROR)
    else:
        assert store.cancel(message.id) == (True, TaskState.STARTED)
        last, during_cancel = _report(0.8, "cancel requested")
        assert store.write_progress(message.id, OWNER, during_cancel), (
            "a task with a cancel request still runs and reports"
        )
        assert store.finish(message.id, TaskState.CANCELLED)
    before = store.status(message.id)
    assert before.status.is_terminal
    assert before.progress == last
    _, late_json = _report(1.0, "late")
    assert not store.write_progress(message.id, OWNER, late_json)
    assert store.status(message.id) == before


def test_a_waiting_retry_takes_no_progress_and_keeps_the_last(store: TaskStore) -> None:
    kept, kept_json = _report(0.4, "attempt 1")
    message = _started(store)
    assert store.write_progress(message.id, OWNER, kept_json)
    assert store.schedule_retry(message.id, ERROR, 60.0)
    assert not store.write_progress(message.id, OWNER, _report(0.9)[1])
    record = store.status(message.id)
    assert record.status is TaskState.RETRY and record.progress == kept


def test_a_delivery_whose_task_was_taken_over_writes_nothing(store: TaskStore) -> None:
    message = _started(store, OWNER, lease_s=0.05)
    time.sleep(0.2)  # the lease runs out: another delivery takes the task
    _begin(store, message, OTHER)
    assert not store.write_progress(message.id, OWNER, _report(0.3, "stale")[1])
    mine, mine_json = _report(0.1, "new delivery")
    assert store.write_progress(message.id, OTHER, mine_json)
    assert store.status(message.id).progress == mine


def test_a_handed_back_task_takes_no_progress(store: TaskStore) -> None:
    message = _started(store)
    store.release([message.id], OWNER, uncount=True)
    assert store.status(message.id).status is TaskState.PENDING
    assert not store.write_progress(message.id, OWNER, _report(0.5)[1])


def test_a_stored_report_that_cannot_be_read_is_left_out(store: TaskStore) -> None:
    message = _started(store)
    assert store.write_progress(message.id, OWNER, '{"fraction": 7}')
    assert store.status(message.id).progress is None


def test_a_version_3_sqlite_database_gets_the_progress_column(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    old = SqlTaskStore(SqliteDialect(path, 5.0), "q", result_ttl_s=60)
    message = _started(old)
    old.close()
    with sqlite3.connect(path) as db:  # the layout of version 3: no progress column
        db.execute("DROP INDEX tasks_queued")
        db.execute("DROP INDEX tasks_leased")
        db.execute("ALTER TABLE tasks DROP COLUMN priority")  # nor priority (version 5)
        db.execute("ALTER TABLE dead_letters DROP COLUMN priority")
        db.execute("ALTER TABLE tasks DROP COLUMN progress")
        for column in ("webhook_url", "webhook_events", "webhook_progress", "webhook_progress_at"):
            db.execute(f"ALTER TABLE tasks DROP COLUMN {column}")  # nor the webhook (version 7)
        db.execute("UPDATE schema_version SET version = 3")
    store = SqlTaskStore(SqliteDialect(path, 5.0), "q", result_ttl_s=60)
    try:
        assert store.status(message.id).progress is None
        progress, text = _report(0.5, "after the migration")
        assert store.write_progress(message.id, OWNER, text)
        assert store.status(message.id).progress == progress
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


# -- the write-rate limit ----------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sql_store(tmp_path: Path) -> Iterator[SqlTaskStore]:
    store = SqlTaskStore(SqliteDialect(str(tmp_path / "q.db"), 5.0), "q", result_ttl_s=60)
    yield store
    store.close()


def _throttle(store: TaskStore, task_id: str, clock: Clock, owner: str = OWNER) -> ProgressThrottle:
    return ProgressThrottle(
        task_id,
        lambda p: store.write_progress(task_id, owner, progress_json(p)),
        PROGRESS_WRITE_INTERVAL_S,
        clock=clock,
    )


def test_reports_within_the_interval_wait_and_only_the_latest_is_written(
    sql_store: SqlTaskStore,
) -> None:
    clock = Clock()
    message = _started(sql_store)
    throttle = _throttle(sql_store, message.id, clock)
    first, second, third = (check_progress(f / 10) for f in (1, 2, 3))
    assert throttle.report(first)
    assert sql_store.status(message.id).progress is None, "a report wrote in the handler"
    throttle.flush()
    assert throttle.writes == 1 and sql_store.status(message.id).progress == first
    assert throttle.report(second) and throttle.report(third)
    clock.now += PROGRESS_WRITE_INTERVAL_S * 0.9
    throttle.flush()
    assert throttle.writes == 1, "written again within the interval"
    assert sql_store.status(message.id).progress == first
    clock.now += PROGRESS_WRITE_INTERVAL_S * 0.1
    throttle.flush()
    assert throttle.writes == 2 and sql_store.status(message.id).progress == third
    clock.now += PROGRESS_WRITE_INTERVAL_S * 10
    throttle.flush()
    assert throttle.writes == 2, "nothing was pending"


def test_a_burst_of_reports_makes_one_write_per_interval(sql_store: SqlTaskStore) -> None:
    clock = Clock()
    message = _started(sql_store)
    throttle = _throttle(sql_store, message.id, clock)
    for i in range(1, 201):  # 200 reports, 10 ms apart, flushed on every tick of 50 ms
        throttle.report(check_progress(i / 200, f"{i}/200"))
        clock.now += 0.01
        if i % 5 == 0:
            throttle.flush()
    throttle.close()
    # 2 s of reports: a write at most every 0.5 s, and the one pending at the end.
    assert throttle.writes <= 2.0 / PROGRESS_WRITE_INTERVAL_S + 2
    last = sql_store.status(message.id).progress
    assert last is not None and last.message == "200/200"


def test_closing_writes_the_pending_report_and_drops_later_ones(sql_store: SqlTaskStore) -> None:
    clock = Clock()
    message = _started(sql_store)
    throttle = _throttle(sql_store, message.id, clock)
    throttle.report(check_progress(0.5))
    throttle.flush()
    final = check_progress(0.9, "final")
    throttle.report(final)
    throttle.close()  # within the interval: written all the same
    assert throttle.writes == 2 and sql_store.status(message.id).progress == final
    assert not throttle.report(check_progress(1.0, "late")), "a report after the end was kept"
    clock.now += 60
    throttle.flush()
    throttle.close()
    assert throttle.writes == 2 and sql_store.status(message.id).progress == final


def test_a_refused_write_ends_the_deliverys_writes(sql_store: SqlTaskStore) -> None:
    clock = Clock()
    message = _started(sql_store)
    throttle = _throttle(sql_store, message.id, clock, owner=OTHER)
    throttle.report(check_progress(0.5))
    throttle.flush()
    assert throttle.closed and throttle.writes == 0
    assert not throttle.report(check_progress(0.6))
    assert sql_store.status(message.id).progress is None


def test_a_failing_write_is_logged_once_kept_and_tried_again(
    sql_store: SqlTaskStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    message = _started(sql_store)
    down = RedisTaskStore(UNREACHABLE_REDIS_URL, "q", result_ttl_s=60)
    target: list[TaskStore] = [down]
    throttle = ProgressThrottle(
        message.id,
        lambda p: target[0].write_progress(message.id, OWNER, progress_json(p)),
        clock=clock,
    )
    report = check_progress(0.5, "kept")
    throttle.report(report)
    with caplog.at_level(logging.DEBUG, logger="taskserve.progress"):
        throttle.flush()  # BrokerUnavailable: logged, not raised
        clock.now += PROGRESS_WRITE_INTERVAL_S
        throttle.flush()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "BrokerUnavailable" in warnings[0].getMessage()
    assert not throttle.closed and throttle.writes == 0
    target[0] = sql_store  # the store is back: the kept report is written
    clock.now += PROGRESS_WRITE_INTERVAL_S
    throttle.flush()
    assert throttle.writes == 1 and sql_store.status(message.id).progress == report
    down.close()


# -- from a running handler to the status, on the sqlite adapter ---------------------------
gate = threading.Event()
late_reports: list[bool] = []


def report_and_wait(fraction: float, message: str | None = None, data: Any = None) -> str:
    current_task().report_progress(fraction, message, data)
    gate.wait(30)
    return "done"


async def async_report_and_wait(fraction: float, message: str | None = None) -> str:
    current_task().report_progress(fraction, message, {"async": True})
    while not gate.is_set():
        await asyncio.sleep(0.01)
    return "done"


def bad_reports() -> list[str]:
    task = current_task()
    refused = []
    for args in ((True,), (1.5,), (0.5, 7), (0.5, None, {1, 2})):
        try:
            task.report_progress(*args)
        except InvalidArgument as e:
            refused.append(str(e).split(" ", 1)[0])
    task.report_progress(0.5, "accepted")
    return refused


def burst(count: int, spacing_s: float) -> int:
    task = current_task()
    for i in range(1, count + 1):
        task.report_progress(i / count, f"{i}/{count}")
        time.sleep(spacing_s)
    return count


def outlive(reports: int) -> str:
    task = current_task()
    task.report_progress(0.5, "in the handler")

    def late() -> None:
        gate.wait(30)
        for _ in range(reports):
            task.report_progress(1.0, "after the handler returned")
            late_reports.append(True)
            time.sleep(0.05)

    threading.Thread(target=late, daemon=True).start()
    return "returned"


HANDLERS = (report_and_wait, async_report_and_wait, bad_reports, burst, outlive)


@pytest.fixture
def config(tmp_path: Path) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name="progress-tests",
        adapter_config={"path": str(tmp_path / "tasks.db"), "poll_interval_s": 0.01},
        max_retries=0,
    )


def _consumer(config: TaskProcessorConfig) -> TaskProcessorAdapter:
    gate.clear()
    late_reports.clear()
    adapter = instantiate_adapter_from_config(config)
    for handler in HANDLERS:
        adapter.register_task_handle(handler)
    adapter.start_consumer()
    return adapter


@pytest.fixture
def consumer(config: TaskProcessorConfig) -> Iterator[TaskProcessorAdapter]:
    adapter = _consumer(config)
    yield adapter
    gate.set()
    adapter.shutdown()


def _progress_of(adapter: TaskProcessorAdapter, task_id: str) -> TaskProgress | None:
    return adapter.get_task_status_sync(task_id).progress


@pytest.mark.parametrize("handler", ["report_and_wait", "async_report_and_wait"])
def test_a_running_task_shows_its_report_and_keeps_it_once_finished(
    consumer: TaskProcessorAdapter, handler: str
) -> None:
    task = consumer.enqueue_task_sync(handler, [0.4, "reading"])
    shown = wait_until(lambda: _progress_of(consumer, task.id))
    running = consumer.get_task_status_sync(task.id)
    assert running.status is TaskState.STARTED
    assert (shown.fraction, shown.message) == (0.4, "reading")
    assert shown.data == (None if handler == "report_and_wait" else {"async": True})
    assert abs(shown.updated_at - time.time()) < 30
    gate.set()
    done = wait_terminal(consumer, task.id)
    assert done.status is TaskState.SUCCESS and done.progress == shown


def test_invalid_reports_raise_in_the_handler_and_the_task_goes_on(
    consumer: TaskProcessorAdapter,
) -> None:
    task = consumer.enqueue_task_sync("bad_reports")
    done = wait_terminal(consumer, task.id)
    assert done.status is TaskState.SUCCESS
    assert done.result == ["fraction", "fraction", "message", "data"]
    assert done.progress is not None and done.progress.message == "accepted"


def test_a_burst_is_written_at_the_bounded_rate_and_ends_with_the_last_report(
    consumer: TaskProcessorAdapter,
) -> None:
    accepted: list[TaskEvent] = []

    class Counter:
        @hookimpl
        def taskserve_task_progress(self, event: TaskEvent) -> None:
            accepted.append(event)

    manager = get_plugin_manager()
    counter = Counter()
    manager.register(counter)
    try:
        started = time.monotonic()
        task = consumer.enqueue_task_sync("burst", [200, 0.01])
        seen: set[float] = set()
        while not (record := consumer.get_task_status_sync(task.id)).status.is_terminal:
            if record.progress is not None:
                seen.add(record.progress.updated_at)
            assert time.monotonic() - started < 60
            time.sleep(0.005)
        elapsed = time.monotonic() - started
    finally:
        manager.unregister(counter)
    assert record.status is TaskState.SUCCESS
    assert record.progress is not None and record.progress.message == "200/200"
    seen.add(record.progress.updated_at)
    assert len(accepted) == 200, "the hook is called for every accepted report"
    assert accepted[-1].progress is not None and accepted[-1].progress.message == "200/200"
    assert all(e.task_id == task.id and e.attempt == 1 for e in accepted)
    assert 2 <= len(seen) <= elapsed / PROGRESS_WRITE_INTERVAL_S + 2, (
        f"{len(seen)} different reports stored in {elapsed:.1f}s"
    )


def test_reports_after_the_handler_returned_change_nothing(
    consumer: TaskProcessorAdapter,
) -> None:
    task = consumer.enqueue_task_sync("outlive", [10])
    done = wait_terminal(consumer, task.id)
    assert done.status is TaskState.SUCCESS
    assert done.progress is not None and done.progress.message == "in the handler"
    gate.set()
    wait_until(lambda: len(late_reports) >= 10)
    time.sleep(2 * PROGRESS_WRITE_INTERVAL_S)
    assert consumer.get_task_status_sync(task.id) == done


class NoProgressAdapter(SqliteAdapter):
    """The sqlite adapter without the progress capability."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability) - {Capability.PROGRESS}


def test_an_adapter_without_the_capability_ignores_reports_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = TaskProcessorConfig(
        queue_name="no-progress",
        adapter=NoProgressAdapter,
        adapter_config={"path": str(tmp_path / "tasks.db"), "poll_interval_s": 0.01},
    )
    with caplog.at_level(logging.WARNING, logger="taskserve.runner"):
        adapter = _consumer(config)
        try:
            gate.set()
            tasks = [adapter.enqueue_task_sync("report_and_wait", [0.5, "x"]) for _ in range(3)]
            invalid = adapter.enqueue_task_sync("bad_reports")
            records = [wait_terminal(adapter, t.id) for t in [*tasks, invalid]]
        finally:
            adapter.shutdown()
    assert all(r.status is TaskState.SUCCESS and r.progress is None for r in records)
    assert records[-1].result == ["fraction", "fraction", "message", "data"], (
        "reports are checked even where they are ignored"
    )
    warnings = [r for r in caplog.records if "'progress' capability" in r.getMessage()]
    assert len(warnings) == 1


class DownProgressRecorder(StoreRecorder):
    """Records outcomes in one store and sends progress to a Redis that is down."""

    def __init__(self, store: TaskStore, down: RedisTaskStore, task_id: str, begun: Any) -> None:
        super().__init__(store, task_id, begun, owner=OWNER)
        self.down = down

    def record_progress(self, message: TaskMessage, attempt: int, progress: TaskProgress) -> bool:
        return self.down.write_progress(message.id, OWNER, progress_json(progress))


def test_a_progress_write_that_fails_never_fails_the_task(
    sql_store: SqlTaskStore, caplog: pytest.LogCaptureFixture
) -> None:
    config = TaskProcessorConfig(queue_name="q", max_retries=0)
    runner = TaskRunner(config, "test", {"burst": burst}, progress=True)
    message = build_message(
        task_name="burst", args=[30, 0.01], kwargs={}, queue_name="q", max_payload_bytes=10_000
    )
    sql_store.insert(message, None)
    claimed = sql_store.claim(OWNER, 30.0, 1)
    assert claimed is not None
    down = RedisTaskStore(UNREACHABLE_REDIS_URL, "q", result_ttl_s=60)
    recorder = DownProgressRecorder(sql_store, down, message.id, claimed.begun)
    stop = threading.Event()

    def keeper() -> None:  # what the lease keeper does each tick
        while not stop.wait(0.05):
            runner.flush_progress()

    flusher = threading.Thread(target=keeper, daemon=True)
    flusher.start()
    try:
        with caplog.at_level(logging.WARNING, logger="taskserve.progress"):
            outcome = runner.process(message, claimed.begun.attempt, recorder)
    finally:
        stop.set()
        flusher.join()
        runner.close()
        down.close()
    assert outcome.value == "succeeded"
    assert sql_store.status(message.id).status is TaskState.SUCCESS
    assert sum("could not be written" in r.getMessage() for r in caplog.records) == 1


# -- the HTTP API, the client and the command line ----------------------------------------
def test_status_over_http_the_client_and_the_cli_show_the_progress(
    consumer: TaskProcessorAdapter, config: TaskProcessorConfig, tmp_path: Path
) -> None:
    task = consumer.enqueue_task_sync("report_and_wait", [0.6, "http", {"rows": [1, 2]}])
    shown = wait_until(lambda: _progress_of(consumer, task.id))
    with TestClient(create_task_app(config)) as http:
        body = http.get(f"/status/{task.id}").json()
        assert body["status"] == "STARTED"
        assert body["progress"] == shown.model_dump(mode="json")
        schema = http.get("/openapi.json").json()["components"]["schemas"]
        status_progress = schema["TaskStatusResponse"]["properties"]["progress"]
        assert "TaskProgress" in json.dumps(status_progress)
        assert set(schema["TaskProgress"]["properties"]) == {
            "fraction",
            "message",
            "data",
            "updated_at",
        }
        with TaskClient(http_client=http) as client:
            assert client.handle(task.id).progress() == shown
            assert client.status(task.id).progress == shown
        never = consumer.enqueue_task_sync("no_such_handler")
        assert wait_terminal(consumer, never.id).status is TaskState.FAILURE
        assert http.get(f"/status/{never.id}").json()["progress"] is None
    cli_config = json.dumps(
        {"queue_name": config.queue_name, "adapter_config": {"path": str(tmp_path / "tasks.db")}}
    )
    out = io.StringIO()
    assert main(["show", "--json", "--config", cli_config, task.id], out=out) == EXIT_OK
    assert json.loads(out.getvalue())["progress"] == shown.model_dump(mode="json")
