"""The sqlite dialect of the SQL task store: one database file, shared by
every producer and consumer process of its queues.

Each thread has its own connection (WAL journal, so readers never wait for
the writer); write transactions take the database's write lock up front
(``BEGIN IMMEDIATE``), which serializes them across processes. A database
locked past the busy timeout, or a file that cannot be opened, counts as
the store being unreachable.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from taskserve.engine.sql.dialect import Executor, SqlDialect
from taskserve.errors import BrokerUnavailable

PROBE_TIMEOUT_S = 2.0
"""Longest the health check waits for the write lock: a database another
process keeps locked longer is reported unavailable, as writes would be."""


class SqliteDialect(SqlDialect):
    """sqlite3 from the standard library."""

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"sqlite file '{self.path}'"

    def check_reachable(self) -> None:
        # A connection keeps working on a file that was moved or deleted.
        if not Path(self.path).exists():
            raise BrokerUnavailable(f"sqlite database '{self.path}' does not exist")
        # Readers never wait in WAL mode, so a locked database answers reads:
        # the health check takes the write lock, as a submit would.
        conn = self._connection()
        probe_ms = int(min(self._busy_timeout_s, PROBE_TIMEOUT_S) * 1000)
        try:
            conn.execute(f"PRAGMA busy_timeout = {probe_ms}")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.Error as e:
            raise BrokerUnavailable(
                f"sqlite database '{self.path}' cannot be written: {type(e).__name__}: {e}"
            ) from e
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout_s,
                    isolation_level=None,
                    check_same_thread=False,
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except (sqlite3.Error, OSError) as e:
                raise BrokerUnavailable(f"cannot open sqlite database '{self.path}': {e}") from e
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def connection(self) -> Iterator[Executor]:
        yield self._connection()

    @contextmanager
    def transaction(self) -> Iterator[Executor]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def is_unavailable(self, error: BaseException) -> bool:
        # OperationalError: locked past the busy timeout, cannot open, read-only,
        # disk I/O errors (the statements themselves are fixed and valid).
        # "file is not a database" is a bare DatabaseError.
        return isinstance(error, sqlite3.OperationalError) or type(error) is sqlite3.DatabaseError

    def is_unique_violation(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.IntegrityError)

    def table_exists(self, db: Executor, name: str) -> bool:
        rows = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table(name),)
        ).fetchall()
        return bool(rows)
