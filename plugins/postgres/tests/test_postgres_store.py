"""The kit's SQL store on PostgreSQL: what the dialect adds to the store contract.

Concurrent claims take different rows without waiting (``SKIP LOCKED``), a
``NOTIFY`` wakes an idle consumer at once and a stop ends its wait, replicas
creating the schema at once are safe, and JSON comes back exactly as it
went in. The module has a database of its own, each test a schema in it.
"""

from __future__ import annotations

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
