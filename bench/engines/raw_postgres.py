"""Raw PostgreSQL: a hand-written job table and a ``FOR UPDATE SKIP LOCKED`` consumer.

No taskserve: one table of jobs in a schema of the run's own; the producer
inserts a row and sends a ``NOTIFY`` in one statement; the consumer process
runs ``concurrency`` threads, each with one connection that, in one
transaction, locks the oldest queued row with ``SELECT ... FOR UPDATE SKIP
LOCKED``, runs the task while holding the lock and marks the row done. An
idle thread waits for a notification on its connection (``LISTEN``), up to
50 ms. The settings match taskserve-postgres's consumer: the same database,
the run's concurrency, JSON arguments, a NOTIFY wake-up with a polling
fallback. What it does not do (leases, retries, cancel, results that
expire) is what taskserve adds.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

from bench.brokers import POSTGRES_DSN
from bench.engines.base import (
    READY_LINE,
    ConsumerCommand,
    TaskFailed,
    Trial,
    TrialOptions,
    bench_consumer,
)
from bench.tasks import HANDLERS

IDLE_WAIT_S = 0.05
"""Longest wait of an idle consumer thread for a notification."""


def _connect() -> Any:
    import psycopg

    return psycopg.connect(POSTGRES_DSN, autocommit=True)


class RawPostgresTrial(Trial):
    """A job table of its own, in schema ``bench_raw_<run id>``."""

    def __init__(self, options: TrialOptions) -> None:
        self.schema = f"bench_raw_{options.run_id}"
        self.concurrency = options.concurrency
        self.conn = _connect()
        self.conn.execute(f"CREATE SCHEMA {self.schema}")
        self.conn.execute(
            f"CREATE TABLE {self.schema}.jobs (id BIGINT GENERATED ALWAYS AS IDENTITY"
            " PRIMARY KEY, task TEXT NOT NULL, args TEXT NOT NULL,"
            " status TEXT NOT NULL DEFAULT 'queued', result TEXT)"
        )
        self.conn.execute(f"CREATE INDEX ON {self.schema}.jobs (id) WHERE status = 'queued'")

    def enqueue(self, task: str, args: Sequence[Any] = ()) -> str:
        row = self.conn.execute(
            f"WITH job AS (INSERT INTO {self.schema}.jobs (task, args) VALUES (%s, %s)"
            " RETURNING id) SELECT id, pg_notify(%s, '') FROM job",
            (task, json.dumps(list(args)), self.schema),
        ).fetchone()
        return str(row[0])

    def succeeded(self, task_id: str) -> bool:
        row = self.conn.execute(
            f"SELECT status, result FROM {self.schema}.jobs WHERE id = %s", (int(task_id),)
        ).fetchone()
        if row[0] == "failed":
            raise TaskFailed(f"job {task_id} failed: {row[1]}")
        return bool(row[0] == "done")

    def consumer(self) -> ConsumerCommand:
        return bench_consumer("raw_postgres", schema=self.schema, concurrency=self.concurrency)

    def close(self) -> None:
        try:
            self.conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        finally:
            self.conn.close()


def _work(schema: str, stop: threading.Event) -> None:
    """One consumer thread: claim, run and finish jobs until ``stop``."""
    conn = _connect()
    conn.execute(f'LISTEN "{schema}"')
    while not stop.is_set():
        with conn.transaction():
            row = conn.execute(
                f"SELECT id, task, args FROM {schema}.jobs WHERE status = 'queued'"
                " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
            ).fetchone()
            if row is not None:
                try:
                    result, status = json.dumps(HANDLERS[row[1]](*json.loads(row[2]))), "done"
                except Exception as e:
                    result, status = repr(e), "failed"
                conn.execute(
                    f"UPDATE {schema}.jobs SET status = %s, result = %s WHERE id = %s",
                    (status, result, row[0]),
                )
        if row is None:
            for _ in conn.notifies(timeout=IDLE_WAIT_S, stop_after=1):
                pass
    conn.close()


def consume(schema: str, concurrency: int) -> None:
    """The consumer process: ``concurrency`` threads until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [threading.Thread(target=_work, args=(schema, stop)) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    os.write(1, f"{READY_LINE}\n".encode())
    while not stop.wait(0.5):
        pass
    for thread in threads:
        thread.join()
