"""Listing a queue's recent tasks: the stores' ``recent`` (the SQL store on
sqlite, the SQL ledger store, the Redis store), the Redis store's listing set
(kept by its scripts, swept by inserts, pruned when read, read in steps), the
schema migration to version 6 on sqlite and PostgreSQL, and the adapter's
``list_tasks_sync`` (arguments, capability, routing adapters)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from taskserve import (
    MAX_TASK_LIST_LIMIT,
    Capability,
    ConfigError,
    InvalidArgument,
    TaskProcessorConfig,
    TaskResult,
    TaskState,
    UnsupportedCapability,
    instantiate_adapter_from_config,
    resolve_adapter,
)
from taskserve.adapters.sqlite import SqliteAdapter
from taskserve.adapters.sqlite.config import SqliteAdapterConfig
from taskserve.engine.redis import store as redis_store_module
from taskserve.kit import (
    SCHEMA_VERSION,
    LedgerStore,
    RedisTaskStore,
    SqliteDialect,
    SqlLedgerStore,
    SqlTaskStore,
    TaskError,
    TaskMessage,
    TaskStore,
)
from taskserve.ray_adapter import TaskProcessorAdapter as RayInterfaceAdapter
from taskserve.serialization import RawJson, build_message

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_ADMIN_DSN = os.environ.get(
    "TASKSERVE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
OWNER = "consumer-a"
ERROR = TaskError(type="ValueError", message="bad", traceback="Traceback ...")


def _message(n: int = 0, *, at: float | None = None, queue: str = "q") -> TaskMessage:
    message = build_message(
        task_name="t", args=[n], kwargs={}, queue_name=queue, max_payload_bytes=10_000
    )
    return message if at is None else dataclasses.replace(message, enqueued_at=at)


def _queued(store: TaskStore, n: int = 0, *, at: float | None = None) -> TaskMessage:
    message = _message(n, at=at, queue=store.queue_name)
    assert store.insert(message, None).created
    return message


def _started(store: TaskStore, message: TaskMessage) -> None:
    assert store.begin(message, OWNER, 30, 3).started


def _ids(tasks: list[TaskResult]) -> list[str]:
    return [t.id for t in tasks]


def _newest_first(store: TaskStore, ids: list[str]) -> list[str]:
    records = [store.status(task_id) for task_id in ids]
    records.sort(key=lambda t: (t.created_at or 0.0, t.id), reverse=True)
    return _ids(records)


def _wait(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.05)
    return value


@pytest.fixture
def redis_store() -> Iterator[RedisTaskStore]:
    prefix = f"taskserve-listing-{uuid.uuid4().hex[:12]}"
    made = RedisTaskStore(REDIS_URL, "q", result_ttl_s=60, prefix=prefix)
    yield made
    for key in made.client.scan_iter(f"{prefix}:*"):
        made.client.delete(key)
    made.close()


# -- every store ----------------------------------------------------------------------
def test_every_store_lists(store: TaskStore) -> None:
    assert isinstance(store, TaskStore)
    assert store.recent(None, 10) == []


def test_records_are_listed_newest_first_ties_by_id(store: TaskStore) -> None:
    base = time.time() - 100
    sent = [_queued(store, n, at=base + n) for n in range(4)]
    tied = [_queued(store, 10 + n, at=base + 50) for n in range(3)]
    listed = store.recent(None, 100)
    expected = [*sorted((m.id for m in tied), reverse=True), *(m.id for m in reversed(sent))]
    assert _ids(listed) == expected
    assert listed == [store.status(task_id) for task_id in expected]
    assert listed[0].created_at == base + 50 and listed[-1].created_at == base


def test_a_status_filter_keeps_those_states(store: TaskStore) -> None:
    pending, started, retried, succeeded, failed, cancelled = (
        _queued(store, n, at=time.time() - 10 + n) for n in range(6)
    )
    for message in (started, retried, succeeded, failed):
        _started(store, message)
    assert store.schedule_retry(retried.id, ERROR, 60.0)
    assert store.finish(succeeded.id, TaskState.SUCCESS, result_json='{"ok": 1}')
    assert store.finish(failed.id, TaskState.FAILURE, error=ERROR, attempts=1)
    assert store.cancel(cancelled.id) == (True, TaskState.CANCELLED)

    def only(*states: TaskState) -> list[str]:
        return _ids(store.recent(states, 100))

    assert only(TaskState.PENDING) == [pending.id]
    assert only(TaskState.STARTED) == [started.id]
    assert only(TaskState.RETRY) == [retried.id]
    assert only(TaskState.SUCCESS, TaskState.FAILURE) == [failed.id, succeeded.id]
    assert only(TaskState.CANCELLED, TaskState.PENDING) == [cancelled.id, pending.id]
    assert store.recent(frozenset(), 100) == []
    everything = store.recent(None, 100)
    assert len(everything) == 6
    by_id = {t.id: t for t in everything}
    assert by_id[succeeded.id].result == {"ok": 1}
    assert by_id[failed.id].error == ERROR
    assert by_id[retried.id].due_at is not None and by_id[retried.id].error == ERROR


def test_limit_and_before_page_through_the_listing(store: TaskStore) -> None:
    base = time.time() - 100
    sent = [_queued(store, n, at=base + n) for n in range(7)]
    newest = list(reversed([m.id for m in sent]))
    assert _ids(store.recent(None, 3)) == newest[:3]
    assert _ids(store.recent(None, 3, before=base + 4)) == newest[3:6]
    assert _ids(store.recent(None, 3, before=base + 1)) == newest[6:]
    assert store.recent(None, 3, before=base) == []  # strictly before
    assert _ids(store.recent(None, 1, before=base + 0.5)) == [sent[0].id]
    assert _ids(store.recent([TaskState.PENDING], 2, before=base + 6)) == newest[1:3]


@pytest.mark.parametrize("limit", [0, -1, MAX_TASK_LIST_LIMIT + 1, True, 2.0, "5", None])
def test_a_bad_limit_is_refused_naming_it(store: TaskStore, limit: Any) -> None:
    with pytest.raises(InvalidArgument, match="limit must be an int from 1 to 1000"):
        store.recent(None, limit)


def test_the_largest_limit_lists_that_many(store: TaskStore) -> None:
    base = time.time() - 1000
    for n in range(MAX_TASK_LIST_LIMIT + 5):
        store.insert(_message(n, at=base + n * 0.5), None)
    assert len(store.recent(None, MAX_TASK_LIST_LIMIT)) == MAX_TASK_LIST_LIMIT
    assert len(store.recent(None, 10, before=base + 2.0)) == 4


def test_a_discarded_task_is_not_listed(store: TaskStore) -> None:
    kept, dropped = _queued(store, 1), _queued(store, 2)
    store.discard(dropped.id)
    assert _ids(store.recent(None, 10)) == [kept.id]


def test_tasks_of_another_queue_are_not_listed(store: TaskStore, tmp_path: Path) -> None:
    other: TaskStore
    if isinstance(store, RedisTaskStore):
        other = RedisTaskStore(REDIS_URL, "other", result_ttl_s=60, prefix=store.prefix)
    else:
        assert isinstance(store, SqlTaskStore)
        other = type(store)(SqliteDialect(str(tmp_path / "q.db"), 5.0), "other", result_ttl_s=60)
    mine = _queued(store, 1)
    theirs = _queued(other, 2)
    assert _ids(store.recent(None, 10)) == [mine.id]
    assert _ids(other.recent(None, 10)) == [theirs.id]
    other.close()


def test_an_expired_record_is_never_listed(store: TaskStore, tmp_path: Path) -> None:
    short: TaskStore
    if isinstance(store, RedisTaskStore):
        short = RedisTaskStore(REDIS_URL, "short", result_ttl_s=1, prefix=store.prefix)
    else:
        short = type(store)(  # type: ignore[call-arg]
            SqliteDialect(str(tmp_path / "short.db"), 5.0), "short", result_ttl_s=0.2
        )
    finished, waiting = _queued(short, 1), _queued(short, 2)
    _started(short, finished)
    short.finish(finished.id, TaskState.SUCCESS, result_json="1")
    assert sorted(_ids(short.recent(None, 10))) == sorted([finished.id, waiting.id])
    # Not yet deleted (sqlite: nothing purged), yet never listed once expired.
    _wait(lambda: _ids(short.recent(None, 10)) == [waiting.id])
    assert short.recent([TaskState.SUCCESS], 10) == []
    short.close()


def test_a_hostile_result_never_breaks_a_listing(store: TaskStore) -> None:
    message = _queued(store)
    _started(store, message)
    deep: Any = 1
    for _ in range(950):
        deep = [deep]
    assert store.finish(message.id, TaskState.SUCCESS, result_json=json.dumps(deep))
    _queued(store, 2)
    listed = {t.id: t for t in store.recent(None, 10)}
    assert len(listed) == 2
    result = listed[message.id].result
    assert isinstance(result, RawJson) and result.startswith("[[[")


def test_a_record_that_is_not_a_task_message_is_listed(tmp_path: Path) -> None:
    store = SqlTaskStore(SqliteDialect(str(tmp_path / "q.db"), 5.0), "q", result_ttl_s=60)
    store.insert_raw(b"\x80 not a message", "raw-1")
    [raw] = store.recent(None, 10)
    assert raw.id == "raw-1" and raw.status is TaskState.PENDING and raw.name is None
    store.close()


def test_a_record_begun_without_an_insert_is_listed(
    redis_store: RedisTaskStore, tmp_path: Path
) -> None:
    ledger = SqlLedgerStore(SqliteDialect(str(tmp_path / "q.db"), 5.0), "q", result_ttl_s=60)
    for store in (redis_store, ledger):
        assert isinstance(store, LedgerStore)
        message = _message(5)  # published by the engine's own API: no record yet
        assert store.begin(message, OWNER, 30, 3).started
        [begun] = store.recent(None, 10)
        assert begun.id == message.id and begun.status is TaskState.STARTED
    ledger.close()


# -- the Redis store's listing set -------------------------------------------------------
def test_the_listing_set_follows_inserts_and_discards(redis_store: RedisTaskStore) -> None:
    key = redis_store._tasks_key
    first, second = _queued(redis_store, 1), _queued(redis_store, 2)
    assert redis_store.client.zscore(key, first.id) == first.enqueued_at
    assert redis_store.client.zcard(key) == 2
    redis_store.discard(second.id)
    assert redis_store.client.zrange(key, 0, -1) == [first.id.encode()]


def test_a_listing_prunes_the_ids_of_expired_records(redis_store: RedisTaskStore) -> None:
    key = redis_store._tasks_key
    kept = [_queued(redis_store, n) for n in range(3)]
    gone = [_queued(redis_store, 10 + n) for n in range(3)]
    for message in gone:  # as an expiry would: the record goes, its id stays
        redis_store.client.delete(redis_store.task_key(message.id))
    assert redis_store.client.zcard(key) == 6
    assert sorted(_ids(redis_store.recent([TaskState.FAILURE], 10))) == []
    assert redis_store.client.zcard(key) == 3
    assert sorted(_ids(redis_store.recent(None, 10))) == sorted(m.id for m in kept)


def test_inserts_sweep_expired_ids_out_without_a_listing(redis_store: RedisTaskStore) -> None:
    short = RedisTaskStore(REDIS_URL, "q", result_ttl_s=1, prefix=redis_store.prefix)
    key = redis_store._tasks_key
    expiring = [_queued(short, n) for n in range(20)]
    for message in expiring:
        assert short.cancel(message.id) == (True, TaskState.CANCELLED)
    _wait(lambda: not any(short.client.exists(short.task_key(m.id)) for m in expiring))
    assert short.client.zcard(key) == 20
    live = 0
    while short.client.zcard(key) > live:
        assert live < 60, "the inserts did not sweep the expired ids out"
        _queued(short, 100 + live)
        live += 1
    assert short.client.zcard(key) == live
    short.close()


def test_a_purge_sweeps_the_ids_of_expired_records_out_of_an_idle_queue(
    redis_store: RedisTaskStore,
) -> None:
    key = redis_store._tasks_key
    kept = [_queued(redis_store, n) for n in range(3)]
    gone = [_queued(redis_store, 10 + n) for n in range(1200)]  # more than one sweep step
    pipe = redis_store.client.pipeline(transaction=False)
    for message in gone:  # as an expiry would: the record goes, its id stays
        pipe.delete(redis_store.task_key(message.id))
    pipe.execute()
    assert redis_store.purge_expired() == len(gone)
    assert sorted(redis_store.client.zrange(key, 0, -1)) == sorted(m.id.encode() for m in kept)
    assert redis_store.purge_expired() == 0


def test_a_filtered_listing_reads_in_steps(
    redis_store: RedisTaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store_module, "LIST_BATCH", 3)
    base = time.time() - 100
    tied = [_queued(redis_store, n, at=base + 5) for n in range(8)]  # more ties than a step
    others = [_queued(redis_store, 20 + n, at=base + n) for n in range(6)]
    every = [*tied, *others]
    for message in every[::3]:
        assert redis_store.cancel(message.id)[0]
    for message in every[1::4]:  # gone (expired) between the cancelled ones
        redis_store.client.delete(redis_store.task_key(message.id))
    listed = _ids(redis_store.recent(None, 100))
    alive = [m.id for m in every if redis_store.client.exists(redis_store.task_key(m.id))]
    assert listed == _newest_first(redis_store, alive)
    cancelled = _ids(redis_store.recent([TaskState.CANCELLED], 100))
    expected = [t for t in listed if redis_store.status(t).status is TaskState.CANCELLED]
    assert cancelled == expected and len(expected) >= 3
    assert _ids(redis_store.recent([TaskState.CANCELLED], 2)) == expected[:2]
    assert _ids(redis_store.recent(None, 100, before=base + 5)) == [
        t for t in listed if (redis_store.status(t).created_at or 0.0) < base + 5
    ]


def test_an_insert_stays_one_round_trip(
    redis_store: RedisTaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _queued(redis_store)  # loads the script
    calls: list[Any] = []
    send = redis_store.client.execute_command

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return send(*args, **kwargs)

    monkeypatch.setattr(redis_store.client, "execute_command", counted)
    _queued(redis_store, 1)
    assert redis_store.insert(_message(2), "key").created
    assert calls == ["EVALSHA", "EVALSHA"]


# -- the schema's version 6 --------------------------------------------------------------
_LISTING_SQL = (
    "SELECT id FROM tasks WHERE queue = ? AND (expires_at IS NULL OR expires_at > 0)"
    " ORDER BY created_at DESC, id DESC LIMIT 5"
)


def test_a_version_5_sqlite_database_gets_the_listing_index(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    old = SqlTaskStore(SqliteDialect(path, 5.0), "q", result_ttl_s=60)
    earlier = [_queued(old, n, at=time.time() - 10 + n) for n in range(3)]
    old.close()
    with sqlite3.connect(path) as db:  # the layout of version 5
        db.execute("DROP INDEX tasks_created")
        for column in ("webhook_url", "webhook_events", "webhook_progress", "webhook_progress_at"):
            db.execute(f"ALTER TABLE tasks DROP COLUMN {column}")  # nor the webhook (version 7)
        db.execute("UPDATE schema_version SET version = 5")
    store = SqlTaskStore(SqliteDialect(path, 5.0), "q", result_ttl_s=60)
    try:
        later = _queued(store, 9)
        assert _ids(store.recent(None, 10)) == [later.id, *(m.id for m in reversed(earlier))]
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        [(sql,)] = db.execute("SELECT sql FROM sqlite_master WHERE name = 'tasks_created'")
        assert "(queue, created_at, id)" in sql
        plan = " ".join(
            str(row) for row in db.execute("EXPLAIN QUERY PLAN " + _LISTING_SQL, ("q",))
        )
        assert "tasks_created" in plan and "TEMP B-TREE" not in plan, plan


def test_a_new_sqlite_database_has_the_listing_index(tmp_path: Path) -> None:
    store = SqlTaskStore(SqliteDialect(str(tmp_path / "new.db"), 5.0), "q", result_ttl_s=60)
    store.ensure_schema()
    store.close()
    with sqlite3.connect(tmp_path / "new.db") as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "tasks_created" in names
    assert SCHEMA_VERSION == 7


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    pytest.importorskip("taskserve_postgres")
    from taskserve_postgres.testing import temporary_database

    with temporary_database(POSTGRES_ADMIN_DSN, prefix="tsc_listing") as dsn:
        yield dsn


def _postgres_store(dsn: str, schema: str) -> SqlTaskStore:
    from taskserve_postgres import PostgresAdapterConfig
    from taskserve_postgres.engine import PostgresDialect

    dialect = PostgresDialect(PostgresAdapterConfig(dsn=dsn, schema=schema))
    return SqlTaskStore(dialect, "q", result_ttl_s=60)


def test_a_version_5_postgres_schema_gets_the_listing_index(postgres_database: str) -> None:
    schema = f"tsc_{uuid.uuid4().hex[:12]}"
    old = _postgres_store(postgres_database, schema)
    earlier = [_queued(old, n, at=time.time() - 10 + n) for n in range(3)]
    with old.dialect.connection() as db:  # the layout of version 5
        db.execute(f"DROP INDEX {schema}.tasks_created")
        for column in ("webhook_url", "webhook_events", "webhook_progress", "webhook_progress_at"):
            db.execute(f"ALTER TABLE {schema}.tasks DROP COLUMN {column}")  # nor the webhook (v7)
        db.execute(f"UPDATE {schema}.schema_version SET version = 5")
    old.close()
    store = _postgres_store(postgres_database, schema)
    try:
        later = _queued(store, 9)
        tied = [_queued(store, 20 + n, at=later.enqueued_at + 1) for n in range(2)]
        listed = _ids(store.recent(None, 10))
        assert listed == [
            *sorted((m.id for m in tied), reverse=True),
            later.id,
            *(m.id for m in reversed(earlier)),
        ]
        assert _ids(store.recent([TaskState.PENDING], 2, before=later.enqueued_at)) == [
            earlier[2].id,
            earlier[1].id,
        ]
        with store.dialect.connection() as db:
            rows = db.execute(f"SELECT version FROM {schema}.schema_version").fetchall()
            assert [tuple(row) for row in rows] == [(SCHEMA_VERSION,)]
            rows = db.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = %s"
                " AND indexname = 'tasks_created'",
                (schema,),
            ).fetchall()
            assert len(rows) == 1 and "(queue, created_at, id)" in rows[0][0], rows
    finally:
        store.close()


# -- the adapter ------------------------------------------------------------------------
@pytest.fixture
def config(tmp_path: Path) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name="listing", adapter_config={"path": str(tmp_path / "tasks.db")}
    )


def test_the_adapter_lists_with_every_form_of_its_arguments(config: TaskProcessorConfig) -> None:
    adapter = instantiate_adapter_from_config(config)
    try:
        assert adapter.supports(Capability.TASK_LISTING)
        first, second, third = (adapter.enqueue_task_sync("add", [n]) for n in range(3))
        adapter.cancel_task_sync(second.id)
        assert _ids(adapter.list_tasks_sync()) == [third.id, second.id, first.id]
        assert _ids(adapter.list_tasks_sync(limit=1)) == [third.id]
        assert _ids(adapter.list_tasks_sync("CANCELLED")) == [second.id]
        assert _ids(adapter.list_tasks_sync(" revoked ")) == [second.id]  # Celery's name
        assert _ids(adapter.list_tasks_sync([TaskState.PENDING, "cancelled"])) == _ids(
            adapter.list_tasks_sync()
        )
        assert _ids(adapter.list_tasks_sync(before=third.created_at)) == [second.id, first.id]
        assert second.created_at is not None
        assert _ids(adapter.list_tasks_sync(before=int(second.created_at) - 60)) == []
        aware = datetime.now(UTC) + timedelta(minutes=1)
        assert len(adapter.list_tasks_sync(before=aware)) == 3
        assert asyncio.run(adapter.list_tasks_async(status=TaskState.PENDING, limit=5)) == (
            adapter.list_tasks_sync(TaskState.PENDING)
        )
    finally:
        adapter.shutdown()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"limit": 0}, "limit must be an int from 1 to 1000"),
        ({"limit": 1001}, "limit must be an int from 1 to 1000"),
        ({"status": "sideways"}, "status must be one of PENDING, STARTED"),
        ({"status": ["PENDING", 7]}, "status must be one of"),
        ({"status": ()}, "status must name at least one state"),
        ({"status": b"PENDING"}, "status must be a TaskState"),
        ({"before": float("inf")}, "before must be a finite unix time"),
        ({"before": True}, "before must be a unix time"),
        ({"before": datetime(2026, 1, 1)}, "before must be an aware datetime"),
    ],
)
def test_bad_arguments_are_refused_before_the_store_is_read(
    config: TaskProcessorConfig, arguments: dict[str, Any], message: str
) -> None:
    adapter = instantiate_adapter_from_config(config)
    try:
        with pytest.raises(InvalidArgument, match=message):
            adapter.list_tasks_sync(**arguments)
    finally:
        adapter.shutdown()


def test_an_adapter_built_from_its_typed_config_alone_needs_a_queue(tmp_path: Path) -> None:
    router = SqliteAdapter(SqliteAdapterConfig(path=str(tmp_path / "tasks.db")))
    with pytest.raises(ConfigError, match="listing tasks needs a queue"):
        router.list_tasks_sync()


class RayInterfaceMemory(RayInterfaceAdapter):
    """The smallest adapter written against Ray Serve's interface."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def initialize(self, consumer_concurrency: int = 5) -> None: ...

    def register_task_handle(self, func: Callable[..., Any], name: str | None = None) -> None: ...

    def enqueue_task_sync(
        self, task_name: str, args: Any = None, kwargs: Any = None, **options: Any
    ) -> TaskResult:
        return TaskResult(id=str(uuid.uuid4()), status=TaskState.PENDING)

    def get_task_status_sync(self, task_id: str) -> TaskResult:
        return TaskResult(id=task_id, status=TaskState.PENDING)

    def start_consumer(self, **kwargs: Any) -> None: ...

    def stop_consumer(self, timeout: float = 10.0) -> None: ...

    def cancel_task_sync(self, task_id: str) -> None: ...

    def get_metrics_sync(self) -> dict[str, Any]:
        return {}

    def health_check_sync(self) -> list[dict[str, Any]]:
        return []


def test_an_adapter_written_against_rays_interface_cannot_list() -> None:
    shim_class = resolve_adapter(RayInterfaceMemory)
    assert not shim_class.supports(Capability.TASK_LISTING)
    shim = instantiate_adapter_from_config(
        TaskProcessorConfig(queue_name="memory", adapter=RayInterfaceMemory, adapter_config={})
    )
    with pytest.raises(UnsupportedCapability, match="task_listing") as raised:
        shim.list_tasks_sync()
    assert raised.value.capability == "task_listing"
    with pytest.raises(UnsupportedCapability, match="task_listing"):
        asyncio.run(shim.list_tasks_async())
