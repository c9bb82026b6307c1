"""The PostgreSQL dialect of the kit's SQL task store, and the LISTEN wake-up.

Statements run on connections of a ``psycopg_pool`` pool, each in autocommit
unless the store asks for a transaction. Tables live in their own schema,
created on first use under a transaction-scoped advisory lock, so replicas
that start at once do not race. Claims lock their row with ``FOR UPDATE SKIP
LOCKED``: concurrent consumers take different tasks without waiting on each
other. Every transaction that makes a task deliverable sends a ``NOTIFY`` on
its queue's channel; an idle consumer waits on a ``LISTEN`` connection of its
own (:class:`Listener`) and claims as soon as one arrives, polling only as a
fallback (a retry whose backoff ends, a lease that runs out, a lost LISTEN
connection).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg_pool import ConnectionPool

from taskserve.kit import Executor, SqlDialect, redact_url, secret_value
from taskserve_postgres.config import PostgresAdapterConfig


def _digest(text: str, size: int) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=size).digest()


def _ended(conn: psycopg.Connection) -> bool:
    """Whether the server ended this idle connection (a restart,
    ``pg_terminate_backend``): an idle connection has nothing to read
    otherwise. Checked without a round trip."""
    if not conn.closed:
        poller = select.poll()  # not select(): it refuses descriptors past 1023
        poller.register(conn.fileno(), select.POLLIN)
        if poller.poll(0):
            conn.close()
    return conn.closed


class PostgresDialect(SqlDialect):
    """psycopg 3, with a connection pool per dialect (reopened after ``close``)."""

    placeholder = "%s"
    blob_type = "BYTEA"
    float_type = "DOUBLE PRECISION"
    serial_type = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    now_sql = "date_part('epoch', statement_timestamp())"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, settings: PostgresAdapterConfig) -> None:
        self.settings = settings
        self.dsn = secret_value(settings.dsn)
        self.schema = settings.schema_name
        self.table_prefix = settings.table_prefix
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    def table(self, name: str) -> str:
        return f'"{self.schema}".{self.index(name)}'

    def index(self, name: str) -> str:
        return f'"{super().table(name)}"'  # an index lives in its table's schema

    def describe(self) -> str:
        return f"PostgreSQL '{redact_url(self.dsn)}' (schema '{self.schema}')"

    def channel(self, queue: str) -> str:
        """The NOTIFY channel of ``queue`` (at most 63 bytes, unique per schema
        and prefix: a notification reaches every listener of the database)."""
        return "taskserve_" + _digest(f"{self.table('')}\0{queue}", 16).hex()

    def connect_kwargs(self) -> dict[str, Any]:
        """Options of every connection: autocommit, the connect timeout."""
        return {"autocommit": True, "connect_timeout": math.ceil(self.settings.connect_timeout_s)}

    # -- connections -----------------------------------------------------------
    def _connections(self) -> ConnectionPool:
        settings = self.settings
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.dsn,
                    kwargs=self.connect_kwargs(),
                    min_size=settings.pool_min_size,
                    max_size=settings.pool_max_size,
                    open=False,
                    timeout=settings.connect_timeout_s,
                    # Give up on a failing slot soon, so that the pool tries again
                    # at once when the database is back instead of after a backoff.
                    reconnect_timeout=max(10.0, 2 * settings.connect_timeout_s),
                    name=f"taskserve {self.schema}",
                )
                self._pool.open(wait=False)
            return self._pool

    @contextlib.contextmanager
    def connection(self) -> Iterator[Executor]:
        pool = self._connections()
        conn = pool.getconn()
        while _ended(conn):  # the pool replaces it; no statement is lost on it
            pool.putconn(conn)
            conn = pool.getconn()
        try:
            yield conn
        finally:
            pool.putconn(conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Executor]:
        with self.connection() as conn:
            assert isinstance(conn, psycopg.Connection)
            with conn.transaction():
                yield conn

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # -- errors ------------------------------------------------------------------
    def is_unavailable(self, error: BaseException) -> bool:
        # OperationalError: cannot connect, connection lost, admin shutdown, no
        # pooled connection in time (PoolTimeout); plus a read-only server.
        return isinstance(error, psycopg.OperationalError | psycopg.errors.ReadOnlySqlTransaction)

    def is_unique_violation(self, error: BaseException) -> bool:
        return isinstance(error, psycopg.errors.UniqueViolation)

    # -- schema ------------------------------------------------------------------
    def table_exists(self, db: Executor, name: str) -> bool:
        rows = db.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s",
            (self.schema, super().table(name)),
        ).fetchall()
        return bool(rows)

    def lock_schema(self, db: Executor) -> None:
        key = int.from_bytes(_digest(f"taskserve schema {self.schema}", 8), "big", signed=True)
        db.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        found = db.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
        if not found.fetchall():
            db.execute(f'CREATE SCHEMA "{self.schema}"')

    def after_queueing(self, db: Executor, queue: str) -> None:
        db.execute("SELECT pg_notify(%s, '')", (self.channel(queue),))


class Listener:
    """One ``LISTEN`` connection of a consumer: :meth:`wait` is the consumer's
    ``wait_for_work`` and :meth:`close` its ``stop_waiting``.

    The connection is opened on the first wait and again after it is lost;
    while the database is away, a wait is a plain pause (the consumer polls).
    """

    def __init__(self, dialect: PostgresDialect, queue: str) -> None:
        self._dialect = dialect
        self._listen = sql.SQL("LISTEN {}").format(sql.Identifier(dialect.channel(queue)))
        self._conn: psycopg.Connection | None = None
        self._wake, self._waker = socket.socketpair()
        self._closed = False
        self._lock = threading.Lock()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; True when a task may have been queued."""
        with self._lock:
            if self._closed:
                return False
            try:
                if self._conn is None:
                    conn = psycopg.connect(self._dialect.dsn, **self._dialect.connect_kwargs())
                    conn.execute(self._listen)
                    self._conn = conn
                    return True  # listening now: what was queued before needs a claim
                wake = self._wake.fileno()
                ready, _, _ = select.select([self._conn.fileno(), wake], [], [], timeout)
                if wake in ready:
                    return False
                return any(True for _ in self._conn.notifies(timeout=0))
            except psycopg.Error:
                self._drop()
                select.select([self._wake], [], [], timeout)
                return False

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        """End a wait in progress and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._waker.send(b"x")
        with self._lock:
            self._drop()
            self._wake.close()
            self._waker.close()
