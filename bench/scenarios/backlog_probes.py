"""How a system's backlog is read: a task's status, the queue's length, the bytes it takes.

Every system is read through its own calls:

- taskserve's adapters: ``get_task_status_sync``; ``get_metrics_sync()`` (its
  ``queue_depth`` is the length);
- raw Celery: ``AsyncResult(id).state``; a passive ``queue_declare``, whose
  message count is kombu's queue length on both brokers (on one connection
  kept open);
- raw RQ: ``Job.fetch(id).get_status()``; ``Queue.count``;
- raw Dramatiq: no status read (its results backend holds results, not
  states); the broker's queue size (``do_qsize`` on Redis,
  ``get_queue_message_counts`` on RabbitMQ);
- raw PostgreSQL: the job row's status; ``count(*)`` of its queued rows.

Bytes are what the store holds: on Redis, the private server's
``used_memory`` (``INFO memory``; broker and state store alike, so this reads
only a private server, :mod:`bench.redis_private`); on RabbitMQ only
taskserve's Redis state store is counted (the broker's memory is not read,
and a raw engine keeps nothing in Redis until a task runs); sqlite, the
database file and its write-ahead log after a checkpoint; PostgreSQL,
``pg_total_relation_size`` of every table of the run's schema (indexes and
TOAST included).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.brokers import POSTGRES_DSN, RABBITMQ, REDIS
from bench.engines.adapters import AdapterTrial
from bench.engines.base import Trial
from bench.engines.raw_celery import RawCeleryTrial
from bench.engines.raw_dramatiq import RawDramatiqTrial
from bench.engines.raw_postgres import RawPostgresTrial
from bench.engines.raw_rq import RawRQTrial
from bench.redis_counts import private_client

REDIS_MEMORY = "Redis memory"
REDIS_STATE_ONLY = "Redis state store only"
SQLITE_FILE_SIZE = "database file"
POSTGRES_TABLES = "PostgreSQL tables"
NOT_COUNTED = "not counted"


@dataclass
class Probes:
    """The calls that read one system's backlog; None where it has no such call.

    ``status(task_id)`` reads a task's state, ``length()`` the queue's length,
    ``store_bytes()`` the bytes its store holds now (what ``store`` names).
    """

    status: Callable[[str], object] | None
    length: Callable[[], int] | None
    store_bytes: Callable[[], int] | None
    store: str
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Release what the probes hold open."""
        for closer in self._closers:
            with contextlib.suppress(Exception):
                closer()


def _redis_bytes() -> int:
    return int(private_client().info("memory")["used_memory"])


def _sqlite_bytes(path: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(
        os.path.getsize(path + suffix) for suffix in ("", "-wal") if os.path.exists(path + suffix)
    )


def _postgres_bytes(schema: str) -> Callable[[], int]:
    import psycopg

    def count() -> int:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'm')",
                (schema,),
            ).fetchone()
        return int(row[0]) if row is not None else 0

    return count


def _taskserve(trial: AdapterTrial, broker: str) -> Probes:
    from taskserve import Capability

    producer = trial.producer
    length = None
    if producer.supports(Capability.QUEUE_METRICS):

        def length() -> int:
            return int(producer.get_metrics_sync().queue_depth)

    config = trial.config.adapter_config
    if trial.adapter_name == "sqlite":
        path = config.path
        return Probes(
            producer.get_task_status_sync, length, lambda: _sqlite_bytes(path), SQLITE_FILE_SIZE
        )
    if trial.adapter_name == "postgres":
        return Probes(
            producer.get_task_status_sync,
            length,
            _postgres_bytes(config.schema_name),
            POSTGRES_TABLES,
        )
    store = REDIS_STATE_ONLY if broker == RABBITMQ else REDIS_MEMORY
    return Probes(producer.get_task_status_sync, length, _redis_bytes, store)


def _raw_celery(trial: RawCeleryTrial, broker: str) -> Probes:
    connection = trial.app.connection_for_write()
    channel = connection.default_channel

    def length() -> int:
        return int(channel.queue_declare(queue=trial.queue, passive=True).message_count)

    def status(task_id: str) -> object:
        return trial.app.AsyncResult(task_id).state

    if broker == REDIS:
        return Probes(status, length, _redis_bytes, REDIS_MEMORY, [connection.release])
    return Probes(status, length, None, NOT_COUNTED, [connection.release])


def _raw_rq(trial: RawRQTrial) -> Probes:
    from rq.job import Job

    queue = trial.queue

    def status(task_id: str) -> object:
        return Job.fetch(
            task_id, connection=queue.connection, serializer=queue.serializer
        ).get_status()

    return Probes(status, lambda: int(queue.count), _redis_bytes, REDIS_MEMORY)


def _raw_dramatiq(trial: RawDramatiqTrial, broker: str) -> Probes:
    broker_object: Any = trial.broker
    if broker == REDIS:
        return Probes(
            None, lambda: int(broker_object.do_qsize(trial.queue)), _redis_bytes, REDIS_MEMORY
        )
    return Probes(
        None,
        lambda: int(broker_object.get_queue_message_counts(trial.queue)[0]),
        None,
        NOT_COUNTED,
    )


def _raw_postgres(trial: RawPostgresTrial) -> Probes:
    conn = trial.conn
    jobs = f"{trial.schema}.jobs"

    def status(task_id: str) -> object:
        row = conn.execute(f"SELECT status FROM {jobs} WHERE id = %s", (int(task_id),)).fetchone()
        return None if row is None else row[0]

    def length() -> int:
        row = conn.execute(f"SELECT count(*) FROM {jobs} WHERE status = 'queued'").fetchone()
        return int(row[0]) if row is not None else 0

    return Probes(status, length, _postgres_bytes(trial.schema), POSTGRES_TABLES)


@contextlib.contextmanager
def probes_of(trial: Trial, broker: str) -> Iterator[Probes]:
    """The probes of ``trial`` (a system on ``broker``), released on exit."""
    if isinstance(trial, AdapterTrial):
        found = _taskserve(trial, broker)
    elif isinstance(trial, RawCeleryTrial):
        found = _raw_celery(trial, broker)
    elif isinstance(trial, RawRQTrial):
        found = _raw_rq(trial)
    elif isinstance(trial, RawDramatiqTrial):
        found = _raw_dramatiq(trial, broker)
    elif isinstance(trial, RawPostgresTrial):
        found = _raw_postgres(trial)
    else:
        raise TypeError(f"no backlog probes for {type(trial).__name__}")
    try:
        yield found
    finally:
        found.close()
