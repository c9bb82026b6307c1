"""The kit's SQL store on PostgreSQL: what the dialect adds to the store contract.

Concurrent claims take different rows without waiting (``SKIP LOCKED``), a
claim takes the highest ready priority first, a ``NOTIFY`` wakes an idle
consumer at once and a stop ends its wait, replicas creating the schema at
once are safe, a schema of version 4 gets the priority column, and JSON comes
back exactly as it went in. The module has a database of its own, each test a schema in it.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
import pytest

from taskserve import TaskProcessorConfig, TaskState
from taskserve.kit import SCHEMA_VERSION, Executor, SqlTaskStore, TaskMessage, result_json
from taskserve.serialization import build_message
from taskserve_conformance.waiting import wait_until
from taskserve_postgres import PostgresAdapter, PostgresAdapterConfig
from taskserve_postgres.engine import Listener, PostgresDialect
from taskserve_postgres.testing import temporary_database

ADMIN_DSN = os.environ.get(
    "TASKSERVE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
OWNER = "consumer-a"

StoreFactory = Callable[..., SqlTaskStore]


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with temporary_database(ADMIN_DSN, prefix="tsc_store") as dsn:
        yield dsn


@pytest.fixture
def schema() -> str:
    return f"tsc_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_store(database: str, schema: str) -> Iterator[StoreFactory]:
    """Stores of queue 'q' in the test's schema, each with its own pool."""
    made: list[SqlTaskStore] = []

    def make(dialect_class: type[PostgresDialect] = PostgresDialect) -> SqlTaskStore:
        settings = PostgresAdapterConfig(dsn=database, schema=schema)
        store = SqlTaskStore(dialect_class(settings), "q", result_ttl_s=60)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def _message(*args: Any, **kwargs: Any) -> TaskMessage:
    return build_message(
        task_name="t", args=list(args), kwargs=kwargs, queue_name="q", max_payload_bytes=100_000
    )


class HeldClaims(PostgresDialect):
    """Once ``armed``, runs each statement in a transaction kept open, with its
    row locks, until ``release`` is set: a claim that takes its time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.armed = False
        self.holding = threading.Event()
        self.release = threading.Event()

    def connection(self) -> AbstractContextManager[Executor]:
        if not self.armed:
            return super().connection()

        @contextmanager
        def held() -> Iterator[Executor]:
            with super(HeldClaims, self).connection() as db:
                assert isinstance(db, psycopg.Connection)
                with db.transaction():
                    yield db
                    self.holding.set()
                    assert self.release.wait(30)

        return held()


def test_a_claim_skips_a_row_another_claim_holds(make_store: StoreFactory) -> None:
    producer = make_store()
    first, second = _message(1), _message(2)
    producer.insert(first, None)
    producer.insert(second, None)
    holder = make_store(HeldClaims)
    holder.ensure_schema()
    assert isinstance(holder.dialect, HeldClaims)
    holder.dialect.armed = True
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(holder.claim, "holder", 30.0, 3)
        assert holder.dialect.holding.wait(10), "the first claim did not run"
        started = time.monotonic()
        other = make_store().claim(OWNER, 30.0, 3)
        waited = time.monotonic() - started
        holder.dialect.release.set()
        claimed = held.result(10)
    assert claimed is not None and other is not None
    assert {claimed.task_id, other.task_id} == {first.id, second.id}
    assert waited < 2.0, f"the second claim waited {waited:.2f}s on the first one's lock"


def test_concurrent_claimers_take_every_task_once(make_store: StoreFactory) -> None:
    producer = make_store()
    sent = {producer.insert(_message(i), None).result.id for i in range(40)}
    claimers = [make_store() for _ in range(4)]
    start = threading.Barrier(len(claimers))

    def drain(store: SqlTaskStore) -> list[str]:
        start.wait()
        taken = []
        while (claimed := store.claim(OWNER, 30.0, 3)) is not None:
            taken.append(claimed.task_id)
        return taken

    with ThreadPoolExecutor(len(claimers)) as pool:
        taken = [task for found in pool.map(drain, claimers) for task in found]
    assert sorted(taken) == sorted(sent)
    assert producer.counts().in_flight == len(sent)


def _queued_at(store: SqlTaskStore, priority: int | None, **fields: Any) -> TaskMessage:
    message = dataclasses.replace(_message(priority), priority=priority, **fields)
    assert store.insert(message, None).created
    return message


def _claim_all(store: SqlTaskStore) -> list[str]:
    taken = []
    while (claimed := store.claim(OWNER, 30.0, 3)) is not None:
        taken.append(claimed.task_id)
    return taken


def test_a_claim_takes_the_highest_ready_priority_first(make_store: StoreFactory) -> None:
    store = make_store()
    store.ensure_schema()
    delay_s = 3.0  # far past a stall of the machine between the inserts and the claims
    delayed = _queued_at(store, 9, not_before=time.time() + delay_s)
    sent = [_queued_at(store, p) for p in (None, 5, 8, 0, 8, None, 1)]
    priority_of = {m.id: m.priority or 0 for m in sent}
    order = [priority_of[task_id] for task_id in _claim_all(store)]
    assert order == [8, 8, 5, 1, 0, 0, 0], "the delayed task was claimed before it was due"
    due = wait_until(lambda: _claim_all(store), delay_s + 10.0, "the due task was not claimed")
    assert due == [delayed.id]


def test_a_version_4_schema_gets_the_priority_column(make_store: StoreFactory, schema: str) -> None:
    old = make_store()
    waiting = [_message(i) for i in range(2)]
    for message in waiting:
        old.insert(message, None)
    with old.dialect.connection() as db:  # the layout of version 4
        db.execute(f"ALTER TABLE {schema}.tasks DROP COLUMN priority")  # and its indexes
        db.execute(f"ALTER TABLE {schema}.dead_letters DROP COLUMN priority")
        db.execute(
            f"CREATE INDEX tasks_queued ON {schema}.tasks (queue, visible_at)"
            " WHERE status IN ('PENDING', 'RETRY')"
        )
        db.execute(
            f"CREATE INDEX tasks_leased ON {schema}.tasks (queue, visible_at)"
            " WHERE status = 'STARTED'"
        )
        for column in ("webhook_url", "webhook_events", "webhook_progress", "webhook_progress_at"):
            db.execute(f"ALTER TABLE {schema}.tasks DROP COLUMN {column}")  # nor the webhook (v7)
        db.execute(f"UPDATE {schema}.schema_version SET version = 4")
    store = make_store()
    urgent = _queued_at(store, 3)
    assert _claim_all(store)[0] == urgent.id  # the rows of version 4 have priority 0
    with store.dialect.connection() as db:
        rows = db.execute(f"SELECT version FROM {schema}.schema_version").fetchall()
        assert [tuple(row) for row in rows] == [(SCHEMA_VERSION,)]
        rows = db.execute(f"SELECT id, priority FROM {schema}.tasks").fetchall()
        assert sorted(map(tuple, rows)) == sorted([*((m.id, 0) for m in waiting), (urgent.id, 3)])
        rows = db.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s"
            " AND indexname IN ('tasks_queued', 'tasks_leased')",
            (schema,),
        ).fetchall()
        assert len(rows) == 2
        assert all("(queue, priority DESC, visible_at)" in row[0] for row in rows), rows


def test_schema_creation_from_many_replicas_at_once_is_safe(
    make_store: StoreFactory, database: str, schema: str
) -> None:
    stores = [make_store() for _ in range(8)]
    start = threading.Barrier(len(stores))

    def create(store: SqlTaskStore) -> None:
        start.wait()
        store.ensure_schema()

    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(create, stores))  # raises what any of them raised
    with stores[0].dialect.connection() as db:
        rows = db.execute(f"SELECT version FROM {schema}.schema_version").fetchall()
    assert [tuple(row) for row in rows] == [(SCHEMA_VERSION,)]
    message = _message("after")
    stores[1].insert(message, None)
    assert stores[2].message(message.id) == message


def test_json_round_trips_exactly(make_store: StoreFactory) -> None:
    store = make_store()
    value = {
        "float": 0.1,
        "negative zero": -0.0,
        "huge": 2**70 + 1,
        "text": "nul \x00, quote ', unicode \u00fc\u2603\U0001f600",
        "nested": [None, True, {"": [1.5e300, -7]}],
    }
    message = _message(value, "x", k=[value])
    store.insert(message, None)
    claimed = store.claim(OWNER, 30.0, 3)
    assert claimed is not None and TaskMessage.from_bytes(claimed.payload) == message
    assert store.message(message.id).args == [value, "x"]
    assert store.finish(message.id, TaskState.SUCCESS, result_json=result_json(value))
    done = store.status(message.id)
    assert done.result == value
    assert repr(done.result) == repr(value)  # -0.0 and the big int unchanged


def test_notify_wakes_a_waiting_listener_at_once(make_store: StoreFactory) -> None:
    store = make_store()
    store.ensure_schema()
    assert isinstance(store.dialect, PostgresDialect)
    listener = Listener(store.dialect, "q")
    try:
        assert listener.wait(1.0), "the first wait, which starts listening, returns at once"
        assert not listener.wait(0.2), "no task was queued"
        with ThreadPoolExecutor(1) as pool:
            woken = pool.submit(lambda: (listener.wait(20.0), time.monotonic()))
            time.sleep(0.3)
            sent = time.monotonic()
            store.insert(_message(), None)
            notified, returned = woken.result(20)
        assert notified and returned - sent < 1.0, f"woken after {returned - sent:.2f}s"
        other_queue = SqlTaskStore(store.dialect, "other", result_ttl_s=60)
        other_queue.insert(_message(), None)
        assert not listener.wait(0.5), "a task of another queue woke the listener"
    finally:
        listener.close()


def test_closing_a_listener_ends_its_wait_at_once(make_store: StoreFactory) -> None:
    store = make_store()
    store.ensure_schema()
    assert isinstance(store.dialect, PostgresDialect)
    listener = Listener(store.dialect, "q")
    assert listener.wait(1.0)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(listener.wait, 30.0)
        time.sleep(0.3)
        started = time.monotonic()
        listener.close()
        assert waiting.result(5) is False
    assert time.monotonic() - started < 1.0
    assert listener.wait(5.0) is False, "a closed listener does not wait"


def test_an_idle_consumer_starts_a_new_task_at_once_and_stops_at_once(
    database: str, schema: str
) -> None:
    """With a 30 s poll, only the NOTIFY can explain a prompt start."""
    config = TaskProcessorConfig(
        queue_name="q",
        adapter_config=PostgresAdapterConfig(dsn=database, schema=schema, poll_interval_s=30),
    )
    consumer, producer = PostgresAdapter(config), PostgresAdapter(config)
    consumer.initialize(consumer_concurrency=2)
    consumer.register_task_handle(lambda: time.time(), "now")
    consumer.start_consumer()
    try:
        for _ in range(2):
            time.sleep(4.5)  # idle long enough for the poll to back off past 2 s
            sent = time.time()
            task = producer.enqueue_task_sync("now")
            deadline = time.monotonic() + 10
            while (done := producer.get_task_status_sync(task.id)).status is not TaskState.SUCCESS:
                assert time.monotonic() < deadline, done
                time.sleep(0.01)
            assert done.result - sent < 1.0, f"started {done.result - sent:.2f}s after enqueue"
    finally:
        started = time.monotonic()
        consumer.stop_consumer(timeout=5)
        stopped = time.monotonic() - started
        consumer.shutdown()
        producer.shutdown()
    assert stopped < 2.0, f"stopping took {stopped:.2f}s"
