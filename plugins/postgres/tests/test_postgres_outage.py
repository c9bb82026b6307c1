"""The database goes away and comes back.

Each test has a database of its own. While it refuses connections, the
health check is unhealthy and enqueueing fails with BrokerUnavailable; once
it is back, the consumer (its pool and its LISTEN connection) reconnects by
itself and every task enqueued before, during the retries, or after ends
SUCCESS. Backends terminated over and over (``pg_terminate_backend``, as a
failover or an administrator does) lose nothing either.

A task that ends while the database is away, and whose lease runs out
before it can be handed back, is delivered again like the task of a crashed
consumer: that delivery counts as an attempt (the retry budget is the
default, 3).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from taskserve import BrokerUnavailable, TaskProcessorConfig, TaskState
from taskserve_postgres import PostgresAdapter, PostgresAdapterConfig
from taskserve_postgres.testing import database_outage, temporary_database, terminate_backends

ADMIN_DSN = os.environ.get(
    "TASKSERVE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def database() -> Iterator[str]:
    with temporary_database(ADMIN_DSN, prefix="tsc_outage") as dsn:
        yield dsn


@pytest.fixture
def adapters(database: str, tmp_path: Path) -> Iterator[tuple[PostgresAdapter, PostgresAdapter]]:
    """(consumer running 'work' with concurrency 2, producer) on the test's database."""
    config = TaskProcessorConfig(
        queue_name="outage",
        adapter_config=PostgresAdapterConfig(dsn=database, connect_timeout_s=1.0),
        lease_s=2.0,
    )
    consumer, producer = PostgresAdapter(config), PostgresAdapter(config)
    consumer.initialize(consumer_concurrency=2)

    def work(n: int) -> int:
        (tmp_path / f"{n}.{time.monotonic_ns()}").touch()
        time.sleep(0.2)
        return n

    consumer.register_task_handle(work, "work")
    consumer.start_consumer()
    yield consumer, producer
    consumer.stop_consumer(timeout=5)
    consumer.shutdown()
    producer.shutdown()


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _all_succeed(producer: PostgresAdapter, sent: dict[str, int], timeout: float) -> None:
    """Every task of ``sent`` (id -> argument) ends SUCCESS with its argument as result."""

    def done() -> bool:
        try:
            states = [producer.get_task_status_sync(i).status for i in sent]
        except BrokerUnavailable:
            # A pooled connection the server terminated fails once, then is replaced.
            return False
        assert TaskState.FAILURE not in states and TaskState.CANCELLED not in states, states
        return all(s is TaskState.SUCCESS for s in states)

    _wait(done, timeout, "not every task succeeded")
    assert {i: producer.get_task_status_sync(i).result for i in sent} == sent


def test_an_outage_is_unhealthy_and_loses_nothing(
    adapters: tuple[PostgresAdapter, PostgresAdapter], database: str
) -> None:
    consumer, producer = adapters
    assert consumer.health_check_sync().healthy
    sent = {producer.enqueue_task_sync("work", [n]).id: n for n in range(8)}
    first = next(iter(sent))
    _wait(
        lambda: producer.get_task_status_sync(first).status is not TaskState.PENDING,
        10,
        "the consumer did not start the first task",
    )
    with database_outage(database, ADMIN_DSN):
        for adapter in (consumer, producer):
            report = adapter.health_check_sync()
            assert not report.healthy and not report.broker_reachable, report
            assert "unreachable" in report.detail
        with pytest.raises(BrokerUnavailable):
            producer.enqueue_task_sync("work", [99])
        time.sleep(1.0)  # running tasks end while their outcome cannot be written
    # Each adapter's pool reconnects on its own backoff: wait until both are back.
    _wait(
        lambda: all(a.health_check_sync().healthy for a in (consumer, producer)),
        20,
        "health did not come back",
    )
    sent |= {producer.enqueue_task_sync("work", [n]).id: n for n in range(8, 12)}
    _all_succeed(producer, sent, 30)
    assert consumer.health_check_sync().consumer_running


def test_terminated_backends_reconnect_and_lose_nothing(
    adapters: tuple[PostgresAdapter, PostgresAdapter], database: str
) -> None:
    consumer, producer = adapters
    name = urlsplit(database).path.lstrip("/")
    stop = threading.Event()
    terminated = []

    def terminate() -> None:
        while not stop.wait(0.15):
            terminated.append(terminate_backends(ADMIN_DSN, name))

    killer = threading.Thread(target=terminate)
    killer.start()
    sent: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            n = len(sent)
            # A BrokerUnavailable: its connection was just terminated; send it again.
            with contextlib.suppress(BrokerUnavailable):
                sent[producer.enqueue_task_sync("work", [n]).id] = n
            time.sleep(0.05)
    finally:
        stop.set()
        killer.join()
    assert sum(terminated) > 0 and len(sent) > 10
    _all_succeed(producer, sent, 60)
    last = producer.enqueue_task_sync("work", [-1]).id
    _all_succeed(producer, {last: -1}, 10)
    assert consumer.health_check_sync().healthy
