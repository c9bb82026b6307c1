"""SQL access for the sqlite adapter: one table of tasks, one of dead letters.

A task row is both the queued message and the status record. A row is
deliverable when its status is PENDING, RETRY or STARTED and ``visible_at``
has passed: for a STARTED row ``visible_at`` is the end of its lease, so a
task whose consumer died becomes deliverable again once the lease runs out.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskserve.errors import BrokerUnavailable, TaskNotFound
from taskserve.models import DeadLetter, DeadLetterKind, TaskError, TaskResult
from taskserve.serialization import TaskMessage
from taskserve.states import TaskState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    name TEXT,
    payload BLOB NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    lease_owner TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    expires_at REAL,
    retried_from TEXT,
    idempotency_key TEXT
);
CREATE INDEX IF NOT EXISTS tasks_deliverable ON tasks (queue, status, visible_at);
CREATE INDEX IF NOT EXISTS tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS tasks_idempotency
    ON tasks (queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    source_queue TEXT NOT NULL,
    task_id TEXT,
    task_name TEXT,
    args TEXT,
    kwargs TEXT,
    raw BLOB,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    enqueued_at REAL,
    failed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, seq);
"""

_TERMINAL_SQL = "('SUCCESS', 'FAILURE', 'CANCELLED')"
_LIVE_SQL = "('PENDING', 'RETRY', 'STARTED')"


@dataclass(frozen=True)
class Claimed:
    """A row fetched by a consumer, with its lease taken."""

    row_id: str
    payload: bytes
    attempt: int


class SqliteStore:
    """Thread-safe access to one database file (one connection per thread)."""

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._schema_ready = False

    # -- connections -----------------------------------------------------
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
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's write lock."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def ensure_schema(self) -> None:
        """Create the tables if they do not exist."""
        if self._schema_ready:
            return
        conn = self._connection()
        try:
            conn.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise BrokerUnavailable(f"cannot create tables in '{self.path}': {e}") from e
        self._schema_ready = True

    def ping(self) -> None:
        """Raise BrokerUnavailable if the database cannot be read."""
        if not Path(self.path).exists():
            raise BrokerUnavailable(f"sqlite database '{self.path}' does not exist")
        try:
            self._connection().execute("SELECT count(*) FROM tasks WHERE 0").fetchone()
        except sqlite3.Error as e:
            raise BrokerUnavailable(f"sqlite database '{self.path}': {e}") from e

    def close(self) -> None:
        """Close every connection opened by this store."""
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- producer --------------------------------------------------------
    def insert(self, message: TaskMessage, idempotency_key: str | None) -> TaskResult:
        """Queue ``message`` as PENDING; an existing idempotency key returns that task."""
        now = time.time()
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO tasks (id, queue, name, payload, status, created_at, updated_at,"
                " visible_at, retried_from, idempotency_key)"
                " VALUES (?, ?, ?, ?, 'PENDING', ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    message.id,
                    message.queue_name,
                    message.name,
                    message.to_bytes(),
                    message.enqueued_at,
                    now,
                    now,
                    message.retried_from,
                    idempotency_key,
                ),
            )
            if cur.rowcount == 1:
                return TaskResult(
                    id=message.id,
                    status=TaskState.PENDING,
                    created_at=message.enqueued_at,
                    name=message.name,
                    queue_name=message.queue_name,
                    updated_at=now,
                    retried_from=message.retried_from,
                )
            row = conn.execute(
                "SELECT id FROM tasks WHERE queue = ? AND idempotency_key = ?",
                (message.queue_name, idempotency_key),
            ).fetchone()
        if row is None:
            raise ValueError(f"task id '{message.id}' is already in use")
        return self.status(row[0])

    def insert_raw(self, queue: str, payload: bytes, row_id: str) -> None:
        """Queue bytes that are not a task message (used to test unprocessable handling)."""
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO tasks (id, queue, payload, status, created_at, updated_at, visible_at)"
                " VALUES (?, ?, ?, 'PENDING', ?, ?, ?)",
                (row_id, queue, payload, now, now, now),
            )

    def status(self, task_id: str) -> TaskResult:
        """The task's record; TaskNotFound when unknown or expired."""
        row = (
            self._connection()
            .execute(
                "SELECT id, queue, name, status, result, error, attempts, created_at, updated_at,"
                " retried_from, expires_at FROM tasks WHERE id = ?",
                (task_id,),
            )
            .fetchone()
        )
        if row is None or (row[10] is not None and row[10] <= time.time()):
            raise TaskNotFound(task_id)
        return TaskResult(
            id=row[0],
            queue_name=row[1],
            name=row[2],
            status=TaskState(row[3]),
            result=json.loads(row[4]) if row[4] is not None else None,
            error=TaskError.model_validate_json(row[5]) if row[5] else None,
            attempts=row[6],
            created_at=row[7],
            updated_at=row[8],
            retried_from=row[9],
        )

    def message(self, task_id: str) -> TaskMessage:
        """The task's message as enqueued; TaskNotFound when unknown or expired."""
        row = (
            self._connection()
            .execute("SELECT payload, expires_at FROM tasks WHERE id = ?", (task_id,))
            .fetchone()
        )
        if row is None or (row[1] is not None and row[1] <= time.time()):
            raise TaskNotFound(task_id)
        return TaskMessage.from_bytes(row[0])

    def cancel(self, task_id: str, result_ttl_s: float) -> tuple[bool, TaskState]:
        """Cancel a live task: queued ones at once, running ones by request.

        Returns (changed, status after the call).
        """
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT status, expires_at FROM tasks WHERE id = ?", (task_id,)
            ).fetchone()
            if row is None or (row[1] is not None and row[1] <= now):
                raise TaskNotFound(task_id)
            status = TaskState(row[0])
            if status in (TaskState.PENDING, TaskState.RETRY):
                conn.execute(
                    "UPDATE tasks SET status = 'CANCELLED', lease_owner = NULL, updated_at = ?,"
                    " expires_at = ? WHERE id = ?",
                    (now, now + result_ttl_s, task_id),
                )
                return True, TaskState.CANCELLED
            if status is TaskState.STARTED:
                conn.execute(
                    "UPDATE tasks SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    (now, task_id),
                )
                return True, TaskState.STARTED
            return False, status

    # -- consumer --------------------------------------------------------
    def claim(self, queue: str, owner: str, lease_s: float) -> Claimed | None:
        """Take the oldest deliverable row of ``queue`` with a lease, or None."""
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute(
                f"SELECT id, payload, attempts FROM tasks WHERE queue = ? AND status IN {_LIVE_SQL}"
                " AND visible_at <= ? ORDER BY visible_at LIMIT 1",
                (queue, now),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE tasks SET status = 'STARTED', attempts = attempts + 1, lease_owner = ?,"
                " visible_at = ?, updated_at = ? WHERE id = ?",
                (owner, now + lease_s, now, row[0]),
            )
        return Claimed(row_id=row[0], payload=bytes(row[1]), attempt=row[2] + 1)

    def start(self, row_id: str, result_ttl_s: float) -> bool:
        """Confirm a claimed row may run; a cancel requested meanwhile ends it CANCELLED."""
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT status, cancel_requested FROM tasks WHERE id = ?", (row_id,)
            ).fetchone()
            if row is None or row[0] != TaskState.STARTED.value:
                return False
            if row[1]:
                conn.execute(
                    "UPDATE tasks SET status = 'CANCELLED', lease_owner = NULL, updated_at = ?,"
                    " expires_at = ? WHERE id = ?",
                    (now, now + result_ttl_s, row_id),
                )
                return False
        return True

    def finish(
        self,
        row_id: str,
        status: TaskState,
        result_ttl_s: float,
        *,
        result: str | None = None,
        error: TaskError | None = None,
        dead_letter: DeadLetter | None = None,
        attempts: int | None = None,
    ) -> None:
        """Move a live row to a terminal ``status``, writing ``dead_letter`` in the
        same transaction; ``attempts``, if given, replaces the delivery count.

        A terminal row is left as it is (and no dead letter is written). A row
        whose cancel was requested while it ran ends CANCELLED instead, its
        result and dead letter discarded.
        """
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT status, cancel_requested FROM tasks WHERE id = ?", (row_id,)
            ).fetchone()
            if row is None or TaskState(row[0]).is_terminal:
                return
            if row[1]:
                status, result, dead_letter = TaskState.CANCELLED, None, None
            conn.execute(
                "UPDATE tasks SET status = ?, result = ?, error = COALESCE(?, error),"
                " attempts = COALESCE(?, attempts), lease_owner = NULL, updated_at = ?,"
                " expires_at = ? WHERE id = ?",
                (
                    status.value,
                    result,
                    error.model_dump_json() if error else None,
                    attempts,
                    now,
                    now + result_ttl_s,
                    row_id,
                ),
            )
            if dead_letter is not None:
                self._insert_dead_letter(conn, dead_letter)

    def schedule_retry(
        self, row_id: str, error: TaskError, delay_s: float, result_ttl_s: float
    ) -> None:
        """Set RETRY and make the row deliverable after ``delay_s``; a row whose
        cancel was requested while it ran becomes CANCELLED instead."""
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE tasks SET error = ?, lease_owner = NULL, updated_at = ?, visible_at = ?,"
                " status = CASE WHEN cancel_requested = 1 THEN 'CANCELLED' ELSE 'RETRY' END,"
                " expires_at = CASE WHEN cancel_requested = 1 THEN ? ELSE expires_at END"
                f" WHERE id = ? AND status NOT IN {_TERMINAL_SQL}",
                (error.model_dump_json(), now, now + delay_s, now + result_ttl_s, row_id),
            )

    def release(self, row_ids: list[str], owner: str, delay_s: float, uncount: bool) -> None:
        """Hand leased rows back to the queue after ``delay_s``; with ``uncount``
        the delivery does not count as an attempt."""
        if not row_ids:
            return
        now = time.time()
        marks = ",".join("?" * len(row_ids))
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE tasks SET visible_at = ?, lease_owner = NULL,"
                f" attempts = attempts - ? WHERE id IN ({marks}) AND lease_owner = ?"
                " AND status = 'STARTED'",
                (now + delay_s, 1 if uncount else 0, *row_ids, owner),
            )

    def extend_leases(self, row_ids: list[str], owner: str, lease_s: float) -> None:
        """Push the lease of running rows ``lease_s`` into the future."""
        if not row_ids:
            return
        marks = ",".join("?" * len(row_ids))
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE tasks SET visible_at = ? WHERE id IN ({marks}) AND lease_owner = ?"
                " AND status = 'STARTED'",
                (time.time() + lease_s, *row_ids, owner),
            )

    def cancel_requested(self, row_ids: list[str]) -> list[str]:
        """Which of ``row_ids`` have a pending cancel request."""
        if not row_ids:
            return []
        marks = ",".join("?" * len(row_ids))
        rows = (
            self._connection()
            .execute(
                f"SELECT id FROM tasks WHERE id IN ({marks}) AND cancel_requested = 1", row_ids
            )
            .fetchall()
        )
        return [r[0] for r in rows]

    def purge_expired(self) -> int:
        """Delete finished rows whose result TTL has passed."""
        with self.transaction() as conn:
            return conn.execute(
                "DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?", (time.time(),)
            ).rowcount

    def counts(self, queue: str) -> dict[str, int]:
        """Number of rows of ``queue`` per status."""
        rows = (
            self._connection()
            .execute("SELECT status, count(*) FROM tasks WHERE queue = ? GROUP BY status", (queue,))
            .fetchall()
        )
        return {r[0]: r[1] for r in rows}

    # -- dead letters ----------------------------------------------------
    @staticmethod
    def _insert_dead_letter(conn: sqlite3.Connection, record: DeadLetter) -> None:
        conn.execute(
            "INSERT INTO dead_letters (id, queue, kind, source_queue, task_id, task_name, args,"
            " kwargs, raw, error, attempts, enqueued_at, failed_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.queue_name,
                record.kind.value,
                record.source_queue,
                record.task_id,
                record.task_name,
                json.dumps(record.args) if record.args is not None else None,
                json.dumps(record.kwargs) if record.kwargs is not None else None,
                record.raw,
                record.error.model_dump_json(),
                record.attempts,
                record.enqueued_at,
                record.failed_at,
            ),
        )

    def dead_letters(
        self, queue: str, limit: int | None, ids: list[str] | None
    ) -> list[DeadLetter]:
        """Records of ``queue``, oldest first."""
        sql = (
            "SELECT id, kind, queue, source_queue, task_id, task_name, args, kwargs, raw, error,"
            " attempts, enqueued_at, failed_at FROM dead_letters WHERE queue = ?"
        )
        params: list[Any] = [queue]
        if ids is not None:
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            params += ids
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [
            DeadLetter(
                id=r[0],
                kind=DeadLetterKind(r[1]),
                queue_name=r[2],
                source_queue=r[3],
                task_id=r[4],
                task_name=r[5],
                args=json.loads(r[6]) if r[6] is not None else None,
                kwargs=json.loads(r[7]) if r[7] is not None else None,
                raw=bytes(r[8]) if r[8] is not None else None,
                error=TaskError.model_validate_json(r[9]),
                attempts=r[10],
                enqueued_at=r[11],
                failed_at=r[12],
            )
            for r in self._connection().execute(sql, params).fetchall()
        ]

    def delete_dead_letters(self, queue: str, ids: list[str] | None) -> int:
        """Delete records of ``queue`` (all when ``ids`` is None)."""
        with self.transaction() as conn:
            if ids is None:
                return conn.execute("DELETE FROM dead_letters WHERE queue = ?", (queue,)).rowcount
            marks = ",".join("?" * len(ids))
            return conn.execute(
                f"DELETE FROM dead_letters WHERE queue = ? AND id IN ({marks})", (queue, *ids)
            ).rowcount

    def count_dead_letters(self, queue: str | None) -> int | None:
        """How many records ``queue`` holds (None when no queue is configured)."""
        if queue is None:
            return None
        row = (
            self._connection()
            .execute("SELECT count(*) FROM dead_letters WHERE queue = ?", (queue,))
            .fetchone()
        )
        return int(row[0])
