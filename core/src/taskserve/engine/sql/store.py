"""A task store that is also the queue, in one SQL database.

A task row is both the queued message and the status record. A row is
deliverable when it is PENDING or RETRY and ``visible_at`` has passed, or
STARTED with a lease (``visible_at`` = its end) that has run out: the task
of a consumer that died. A claim takes expired leases first, then the due
rows, either way the highest ``priority`` first (0 to 9; a task enqueued
without one has 0) and, within a priority, the row due longest, and begins
it in the same statement; a row not due yet waits whatever its priority.
Every rule of the store contract (:mod:`taskserve.engine.store`) is one
statement or one transaction; the statements are written once here, and a
:class:`~taskserve.engine.sql.dialect.SqlDialect` adapts them to an engine
(sqlite, PostgreSQL).

The schema is versioned (:data:`SCHEMA_VERSION`, table ``schema_version``)
and created or migrated under the dialect's schema lock, so replicas that
start at once are safe. JSON is stored as text, so values round-trip
exactly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from taskserve.adapter import listing_limit
from taskserve.engine.progress import stored_progress
from taskserve.engine.sql.dialect import Executor, SqlDialect
from taskserve.engine.store import Begun, Claimed, Inserted, QueueCounts, stored_error
from taskserve.errors import BrokerUnavailable, TaskIdInUse, TaskNotFound
from taskserve.models import DeadLetter, DeadLetterKind, TaskError, TaskResult
from taskserve.serialization import TaskMessage, loads_stored
from taskserve.states import TaskState
from taskserve.webhooks.events import (
    WebhookDelivery,
    dead_letter_data,
    error_data,
    event_id,
    events_text,
    progress_data,
    result_data,
    subscribed,
)
from taskserve.webhooks.settings import WebhookEvent, WebhookSettings

SCHEMA_VERSION = 7
"""Version 1: the layout of taskserve 0.1 (no version table). Version 2: the
``unrecorded`` column and partial indexes of queued and leased rows. Version 3:
the ``workers`` table (consumers alive, :class:`~taskserve.engine.store.WorkerDirectory`).
Version 4: the ``progress`` column (the handler's last report, JSON). Version 5:
the ``priority`` column (0 to 9, higher first; 0 for the rows of older versions),
kept by dead letters too (NULL: none), and the indexes of queued and leased rows
in the claim's order (priority, then ``visible_at``). Version 6: the index of a
queue's rows by creation time (``queue, created_at, id``), which a listing of
recent tasks reads newest first. Version 7: the task's webhook (``webhook_url``,
``webhook_events``, and ``webhook_progress``/``webhook_progress_at``, the count
and due time of its last progress event) and the ``webhook_outbox`` table of
events to deliver."""

_CREATED_INDEX = "CREATE INDEX IF NOT EXISTS {tasks_created} ON {tasks} (queue, created_at, id)"
"""The index of version 6 (in :data:`_SCHEMA` too)."""

_WEBHOOK_OUTBOX = """
CREATE TABLE IF NOT EXISTS {webhook_outbox} (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    task_id TEXT NOT NULL,
    task_name TEXT,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    data TEXT,
    created_at {float} NOT NULL,
    due_at {float} NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS {webhook_outbox_due} ON {webhook_outbox} (queue, due_at)
"""
"""The outbox of version 7 (in :data:`_SCHEMA` too): webhook events to deliver."""

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS {tasks} (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    name TEXT,
    payload {blob} NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at {float} NOT NULL,
    updated_at {float} NOT NULL,
    visible_at {float} NOT NULL,
    lease_owner TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    expires_at {float},
    retried_from TEXT,
    idempotency_key TEXT,
    unrecorded INTEGER NOT NULL DEFAULT 0,
    progress TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    webhook_url TEXT,
    webhook_events TEXT,
    webhook_progress INTEGER NOT NULL DEFAULT 0,
    webhook_progress_at {float}
);
CREATE INDEX IF NOT EXISTS {tasks_expiry} ON {tasks} (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS {tasks_idempotency}
    ON {tasks} (queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS {tasks_created} ON {tasks} (queue, created_at, id);
CREATE TABLE IF NOT EXISTS {dead_letters} (
    seq {serial},
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    source_queue TEXT NOT NULL,
    task_id TEXT,
    task_name TEXT,
    args TEXT,
    kwargs TEXT,
    raw {blob},
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    enqueued_at {float},
    failed_at {float} NOT NULL,
    priority INTEGER
);
CREATE INDEX IF NOT EXISTS {dead_letters_queue} ON {dead_letters} (queue, seq);
CREATE TABLE IF NOT EXISTS {workers} (
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    alive_until {float} NOT NULL,
    stats TEXT NOT NULL,
    PRIMARY KEY (queue, name)
);
"""
    + _WEBHOOK_OUTBOX
)

_MIGRATIONS: dict[int, str] = {
    2: """
ALTER TABLE {tasks} ADD COLUMN unrecorded INTEGER NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS {tasks_deliverable}
""",
    3: """
CREATE TABLE IF NOT EXISTS {workers} (
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    alive_until {float} NOT NULL,
    stats TEXT NOT NULL,
    PRIMARY KEY (queue, name)
)
""",
    4: """
ALTER TABLE {tasks} ADD COLUMN progress TEXT
""",
    5: """
ALTER TABLE {tasks} ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE {dead_letters} ADD COLUMN priority INTEGER;
DROP INDEX IF EXISTS {tasks_queued_v2};
DROP INDEX IF EXISTS {tasks_leased_v2}
""",
    6: _CREATED_INDEX,
    7: """
ALTER TABLE {tasks} ADD COLUMN webhook_url TEXT;
ALTER TABLE {tasks} ADD COLUMN webhook_events TEXT;
ALTER TABLE {tasks} ADD COLUMN webhook_progress INTEGER NOT NULL DEFAULT 0;
ALTER TABLE {tasks} ADD COLUMN webhook_progress_at {float};
"""
    + _WEBHOOK_OUTBOX,
}
"""Statements that take a database from the version before to this one."""

_INDEXES = """
CREATE INDEX IF NOT EXISTS {tasks_queued} ON {tasks} (queue, priority DESC, visible_at)
    WHERE status IN ('PENDING', 'RETRY');
CREATE INDEX IF NOT EXISTS {tasks_leased} ON {tasks} (queue, priority DESC, visible_at)
    WHERE status = 'STARTED'
"""
"""The indexes the claim reads, in its order (priority, then ``visible_at``),
so that it takes the first due entry without sorting."""

_TERMINAL = "('SUCCESS', 'FAILURE', 'CANCELLED')"
_QUEUED = "('PENDING', 'RETRY')"
_RECORD_COLUMNS = (
    "id, queue, name, status, result, error, attempts, created_at, updated_at, retried_from,"
    " visible_at, progress"
)
_DEAD_LETTER_COLUMNS = (
    "id, kind, queue, source_queue, task_id, task_name, args, kwargs, raw, error,"
    " attempts, enqueued_at, failed_at, priority"
)

_HOOK_COLUMNS = "name, webhook_url, webhook_events"
"""What a statement that may announce a webhook event returns of its row (the
task's name, webhook URL and subscribed events), in this order."""

_OUTBOX_COLUMNS = "id, task_id, task_name, event, url, attempt, data, created_at, deliveries"

_T = TypeVar("_T")


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _dead_letter_row(r: Sequence[Any]) -> DeadLetter:
    """A dead-letter row as a record. Arguments that cannot be decoded (nested
    too deep, kept by an older version or written by hand) never break a
    listing: the record comes with ``args`` and ``kwargs`` None and their
    stored JSON in ``raw``, so it can be seen and purged (not redriven)."""
    args: Any = loads_stored(r[6]) if r[6] is not None else None
    kwargs: Any = loads_stored(r[7]) if r[7] is not None else None
    raw = bytes(r[8]) if r[8] is not None else None
    if (args is not None and not isinstance(args, list)) or (
        kwargs is not None and not isinstance(kwargs, dict)
    ):
        raw = f'{{"args":{r[6] or "null"},"kwargs":{r[7] or "null"}}}'.encode(
            "utf-8", "surrogatepass"
        )
        args = kwargs = None
    return DeadLetter(
        id=r[0],
        kind=DeadLetterKind(r[1]),
        queue_name=r[2],
        source_queue=r[3],
        task_id=r[4],
        task_name=r[5],
        args=args,
        kwargs=kwargs,
        raw=raw,
        error=TaskError.model_validate_json(r[9]),
        attempts=r[10],
        enqueued_at=r[11],
        failed_at=r[12],
        priority=r[13],
    )


class SqlTaskStore:
    """The tasks and dead letters of one queue in a SQL database (a QueueStore)."""

    def __init__(self, dialect: SqlDialect, queue_name: str, *, result_ttl_s: float) -> None:
        self.dialect = dialect
        self.queue_name = queue_name
        self.result_ttl_s = result_ttl_s
        self._schema_ready = False
        # Tables, and the index of version 1 that the migration drops.
        names = (
            "tasks",
            "dead_letters",
            "schema_version",
            "workers",
            "tasks_deliverable",
            "webhook_outbox",
        )
        # The indexes of versions 2 to 4 (queue, visible_at), which migration 5
        # drops to create them again in the claim's order.
        replaced = {"tasks_queued_v2": "tasks_queued", "tasks_leased_v2": "tasks_leased"}
        indexes = (
            "tasks_expiry",
            "tasks_idempotency",
            "tasks_queued",
            "tasks_leased",
            "tasks_created",
            "dead_letters_queue",
            "webhook_outbox_due",
        )
        self._slots = (
            {name: dialect.table(name) for name in names}
            | {name: dialect.index(name) for name in indexes}
            | {slot: dialect.table(name) for slot, name in replaced.items()}
            | {
                "blob": dialect.blob_type,
                "float": dialect.float_type,
                "serial": dialect.serial_type,
                "now": dialect.now_sql,
            }
        )
        self._cache: dict[str, str] = {}
        self._webhooks = WebhookSettings()
        self._atomic_events = False
        """Whether single-statement steps run as transactions, so that the webhook
        event they announce is written with them (:meth:`expect_webhooks`)."""

    # -- statements and errors ----------------------------------------------------
    def _sql(self, template: str) -> str:
        sql = self._cache.get(template)
        if sql is None:
            sql = template.format(**self._slots)
            if self.dialect.placeholder != "?":
                sql = sql.replace("?", self.dialect.placeholder)
            self._cache[template] = sql
        return sql

    def _guard(self, action: Callable[[], _T]) -> _T:
        try:
            return action()
        except BrokerUnavailable:
            raise
        except Exception as e:
            if self.dialect.is_unavailable(e):
                raise BrokerUnavailable(
                    f"cannot use the database {self.dialect.describe()}: {type(e).__name__}: {e}"
                ) from e
            raise

    @contextmanager
    def _transaction(self) -> Iterator[Executor]:
        self.ensure_schema()
        with self.dialect.transaction() as db:
            yield db

    def _run(self, template: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement on its own and return its cursor's rows."""
        self.ensure_schema()

        def run() -> Any:
            with self.dialect.connection() as db:
                cursor = db.execute(self._sql(template), params)
                return cursor.fetchall() if cursor.description is not None else []

        return self._guard(run)

    def _write(self, work: Callable[[Executor], _T], *, atomic: bool = True) -> _T:
        """Run ``work`` in one transaction; with ``atomic=False`` its statements
        are each committed on their own (each is atomic, and nothing relies on
        them together), which saves the round trips of BEGIN and COMMIT."""

        def run() -> _T:
            if not atomic:
                self.ensure_schema()
            with self._transaction() if atomic else self.dialect.connection() as db:
                return work(db)

        return self._guard(run)

    # -- connection ---------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create or migrate the tables (idempotent, safe across replicas)."""
        if self._schema_ready:
            return

        def migrate() -> None:
            with self.dialect.transaction() as db:
                self.dialect.lock_schema(db)
                version = self._schema_version(db)
                if version == SCHEMA_VERSION:
                    # Nothing to change. (Even CREATE INDEX IF NOT EXISTS would wait
                    # for every open write transaction on the table, and stall the
                    # writes queued behind it.)
                    return
                if version == 0:
                    self._script(db, _SCHEMA)
                else:
                    for step in range(version + 1, SCHEMA_VERSION + 1):
                        self._script(db, _MIGRATIONS[step])
                self._script(db, _INDEXES)
                db.execute(self._sql("DELETE FROM {schema_version}"))
                db.execute(
                    self._sql("INSERT INTO {schema_version} (version) VALUES (?)"),
                    (SCHEMA_VERSION,),
                )

        self._guard(migrate)
        self._schema_ready = True

    def _schema_version(self, db: Executor) -> int:
        db.execute(
            self._sql("CREATE TABLE IF NOT EXISTS {schema_version} (version INTEGER NOT NULL)")
        )
        rows = db.execute(self._sql("SELECT max(version) FROM {schema_version}")).fetchall()
        if rows and rows[0][0] is not None:
            return int(rows[0][0])
        return 1 if self.dialect.table_exists(db, "tasks") else 0

    def _script(self, db: Executor, script: str) -> None:
        for statement in self.dialect.statements(script.format(**self._slots)):
            db.execute(statement)

    def ping(self) -> None:
        """Raise BrokerUnavailable unless the database answers."""
        self._guard(lambda: self._ping())

    def _ping(self) -> None:
        self.dialect.check_reachable()
        self.ensure_schema()
        with self.dialect.connection() as db:
            db.execute(self._sql("SELECT count(*) FROM {tasks} WHERE 1 = 0")).fetchall()

    def close(self) -> None:
        """Close the dialect's connections."""
        self.dialect.close()

    # -- producer side ------------------------------------------------------------
    def insert(self, message: TaskMessage, idempotency_key: str | None) -> Inserted:
        """Queue ``message`` as PENDING (see the store contract), at its priority
        (0 without one), which the row keeps through retries and hand-backs."""

        def work(db: Executor) -> Inserted | None:
            cursor = db.execute(
                self._sql(
                    "INSERT INTO {tasks} (id, queue, name, payload, status, created_at,"
                    " updated_at, visible_at, retried_from, idempotency_key, priority,"
                    " webhook_url, webhook_events)"
                    " VALUES (?, ?, ?, ?, 'PENDING', ?, {now},"
                    " CASE WHEN ? > {now} THEN ? ELSE {now} END, ?, ?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING"
                ),
                (
                    message.id,
                    self.queue_name,
                    message.name,
                    message.with_seq(None).to_bytes(),
                    message.enqueued_at,
                    message.not_before or 0.0,
                    message.not_before or 0.0,
                    message.retried_from,
                    idempotency_key,
                    message.priority or 0,
                    message.webhook_url,
                    events_text(message.webhook_events or ()) if message.webhook_url else None,
                ),
            )
            if cursor.rowcount == 1:
                self.dialect.after_queueing(db, self.queue_name)
                seq, scheduled = self._entered(db, message)
                return Inserted(
                    TaskResult(
                        id=message.id,
                        status=TaskState.PENDING,
                        created_at=message.enqueued_at,
                        name=message.name,
                        queue_name=self.queue_name,
                        updated_at=message.enqueued_at,
                        retried_from=message.retried_from,
                        due_at=message.not_before
                        if message.not_before and message.not_before > time.time()
                        else None,
                    ),
                    created=True,
                    seq=seq,
                    scheduled=scheduled,
                )
            if idempotency_key is None:
                return None
            rows = db.execute(
                self._sql(
                    "SELECT id, expires_at <= {now} FROM {tasks}"
                    " WHERE queue = ? AND idempotency_key = ?"
                ),
                (self.queue_name, idempotency_key),
            ).fetchall()
            if not rows:
                return None
            row = rows[0]
            if row[1]:  # its task expired: the key is free again
                db.execute(self._sql("DELETE FROM {tasks} WHERE id = ?"), (row[0],))
                return work(db)
            return Inserted(self._status(db, str(row[0])), created=False)

        inserted = self._write(work)
        if inserted is None:
            raise TaskIdInUse(message.id)
        return inserted

    def _entered(self, db: Executor, message: TaskMessage) -> tuple[int | None, bool]:
        """Called in the transaction that inserted ``message``: a subclass that keeps
        a ledger enters it there; returns (publish number, kept back until due)."""
        return None, False

    def insert_raw(self, payload: bytes, task_id: str) -> None:
        """Queue bytes that are not a task message (undecodable-message tests)."""
        self._write(
            lambda db: db.execute(
                self._sql(
                    "INSERT INTO {tasks} (id, queue, payload, status, created_at, updated_at,"
                    " visible_at) VALUES (?, ?, ?, 'PENDING', {now}, {now}, {now})"
                ),
                (task_id, self.queue_name, payload),
            )
        )

    def discard(self, task_id: str) -> None:
        """Delete a task's row (a queue store publishes nothing, so nothing calls
        this but a caller undoing its own insert)."""
        self._write(
            lambda db: db.execute(self._sql("DELETE FROM {tasks} WHERE id = ?"), (task_id,))
        )

    def _status(self, db: Executor, task_id: str) -> TaskResult:
        rows = db.execute(
            self._sql(
                f"SELECT {_RECORD_COLUMNS} FROM {{tasks}} WHERE id = ?"
                " AND (expires_at IS NULL OR expires_at > {now})"
            ),
            (task_id,),
        ).fetchall()
        if not rows:
            raise TaskNotFound(task_id)
        return self._result(rows[0])

    @staticmethod
    def _result(row: Sequence[Any]) -> TaskResult:
        """A row of :data:`_RECORD_COLUMNS` as the task's record."""
        return TaskResult(
            id=row[0],
            queue_name=row[1],
            name=row[2],
            status=TaskState(row[3]),
            result=loads_stored(row[4]) if row[4] is not None else None,
            error=stored_error(row[5]) if row[5] else None,
            attempts=row[6],
            created_at=row[7],
            updated_at=row[8],
            retried_from=row[9],
            # Kept back: every write that queues a task for later moves visible_at
            # past the updated_at it writes; one deliverable at once leaves them equal.
            due_at=row[10] if row[3] in ("PENDING", "RETRY") and row[10] > row[8] else None,
            progress=stored_progress(row[11]),
        )

    def status(self, task_id: str) -> TaskResult:
        """The task's record; TaskNotFound when unknown or expired."""
        self.ensure_schema()

        def read() -> TaskResult:
            with self.dialect.connection() as db:
                return self._status(db, task_id)

        return self._guard(read)

    def recent(
        self, statuses: Collection[TaskState] | None, limit: int, before: float | None = None
    ) -> list[TaskResult]:
        """The queue's live rows newest first (``created_at``, then id, both
        descending), in ``statuses`` (all when None), created strictly before
        ``before``, at most ``limit``: one statement on the index of version 6."""
        limit = listing_limit(limit)
        sql = (
            f"SELECT {_RECORD_COLUMNS} FROM {{tasks}} WHERE queue = ?"
            " AND (expires_at IS NULL OR expires_at > {now})"
        )
        params: list[Any] = [self.queue_name]
        if statuses is not None:
            wanted = sorted({TaskState(s).value for s in statuses})
            if not wanted:
                return []
            sql += f" AND status IN ({','.join('?' * len(wanted))})"
            params += wanted
        if before is not None:
            sql += " AND created_at < ?"
            params.append(float(before))
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        params.append(limit)
        return [self._result(row) for row in self._run(sql, params)]

    def message(self, task_id: str) -> TaskMessage:
        """The task's message as enqueued; TaskNotFound when unknown or expired."""
        rows = self._run(
            "SELECT payload FROM {tasks} WHERE id = ? AND (expires_at IS NULL OR expires_at > {now})",
            (task_id,),
        )
        if not rows:
            raise TaskNotFound(task_id)
        return TaskMessage.from_bytes(bytes(rows[0][0]))

    def cancel(self, task_id: str) -> tuple[bool, TaskState]:
        """Cancel a live task: queued ones at once, running ones by request."""
        live = " AND (expires_at IS NULL OR expires_at > {now})"

        def work(db: Executor) -> tuple[bool, TaskState]:
            cancelled = db.execute(
                self._sql(
                    "UPDATE {tasks} SET status = 'CANCELLED', lease_owner = NULL,"
                    " updated_at = {now}, expires_at = {now} + ?"
                    f" WHERE id = ? AND status IN {_QUEUED}"
                    + live
                    + f" RETURNING attempts, {_HOOK_COLUMNS}"
                ),
                (self.result_ttl_s, task_id),
            ).fetchall()
            if cancelled:
                row = cancelled[0]
                self._event(db, task_id, row[1:], WebhookEvent.CANCELLED, int(row[0]))
                return True, TaskState.CANCELLED
            if db.execute(
                self._sql(
                    "UPDATE {tasks} SET cancel_requested = 1, updated_at = {now}"
                    " WHERE id = ? AND status = 'STARTED' RETURNING id"
                ),
                (task_id,),
            ).fetchall():
                return True, TaskState.STARTED
            rows = db.execute(
                self._sql("SELECT status FROM {tasks} WHERE id = ?" + live), (task_id,)
            ).fetchall()
            if not rows:
                raise TaskNotFound(task_id)
            return False, TaskState(rows[0][0])

        return self._write(work)

    # -- consumer side ------------------------------------------------------------
    def claim(self, owner: str, lease_s: float, max_attempts: int) -> Claimed | None:
        """Take the next deliverable row (expired leases first; the highest
        priority first, then the row due longest) and begin it."""
        # Only rows due now are candidates: a row kept back until later (a
        # delayed task, a retry in its backoff) waits whatever its priority.
        due = (
            "(SELECT id FROM {tasks} WHERE queue = ? AND %s AND visible_at <= {now}"
            " ORDER BY priority DESC, visible_at LIMIT 1" + self.dialect.skip_locked + ")"
        )
        leased = due.replace("%s", "status = 'STARTED'")
        queued = due.replace("%s", f"status IN {_QUEUED}")
        # Expired leases first: a crashed consumer's task runs again within its
        # lease, however long the queue behind it. COALESCE looks at the queued
        # rows only when no lease has run out; one statement, one round trip.
        statement = self._sql(
            "UPDATE {tasks} SET"
            " status = CASE WHEN attempts + 1 > ? THEN status"
            "   WHEN cancel_requested = 1 THEN 'CANCELLED' ELSE 'STARTED' END,"
            " expires_at = CASE WHEN attempts + 1 <= ? AND cancel_requested = 1"
            "   THEN {now} + ? ELSE expires_at END,"
            " attempts = attempts + 1, lease_owner = ?, visible_at = {now} + ?,"
            f" updated_at = {{now}} WHERE id = COALESCE({leased}, {queued})"
            f" RETURNING id, payload, attempts, status, {_HOOK_COLUMNS}"
        )

        def work(db: Executor) -> Claimed | None:
            rows = db.execute(
                statement,
                (max_attempts, max_attempts, self.result_ttl_s, owner, lease_s)
                + (self.queue_name,) * 2,
            ).fetchall()
            if not rows:
                return None
            row = rows[0]
            task_id, attempt = str(row[0]), int(row[2])
            started = row[3] == TaskState.STARTED.value and attempt <= max_attempts
            if started:
                self._event(db, task_id, row[4:], WebhookEvent.STARTED, attempt)
            elif row[3] == TaskState.CANCELLED.value:
                self._event(db, task_id, row[4:], WebhookEvent.CANCELLED, attempt)
            return Claimed(
                task_id=task_id,
                payload=bytes(row[1]),
                begun=Begun(attempt=attempt, started=started),
            )

        return self._write(work, atomic=self._atomic_events)

    def begin(self, message: TaskMessage, owner: str, lease_s: float, max_attempts: int) -> Begun:
        """Begin a delivery of ``message`` that was not claimed from this store
        (a queue store's deliveries come from :meth:`claim`)."""

        def work(db: Executor) -> Begun:
            rows = db.execute(
                self._sql(
                    "UPDATE {tasks} SET status = 'STARTED', attempts = attempts + 1,"
                    " lease_owner = ?, visible_at = {now} + ?, updated_at = {now}"
                    f" WHERE id = ? AND (status IN {_QUEUED}"
                    " OR (status = 'STARTED' AND visible_at <= {now}))"
                    f" RETURNING attempts, {_HOOK_COLUMNS}"
                ),
                (owner, lease_s, message.id),
            ).fetchall()
            if not rows:
                return Begun(attempt=0, started=False)
            attempt = int(rows[0][0])
            if attempt <= max_attempts:
                self._event(db, message.id, rows[0][1:], WebhookEvent.STARTED, attempt)
            return Begun(attempt=attempt, started=attempt <= max_attempts)

        return self._write(work, atomic=self._atomic_events)

    def finish(
        self,
        task_id: str,
        status: TaskState,
        *,
        result_json: str | None = None,
        error: TaskError | None = None,
        dead_letter: DeadLetter | None = None,
        attempts: int | None = None,
    ) -> bool:
        """Move a live row to terminal ``status``, writing ``dead_letter`` in the
        same transaction; a pending cancel makes it CANCELLED instead."""

        def work(db: Executor) -> bool:
            rows = db.execute(
                self._sql(
                    "UPDATE {tasks} SET"
                    " status = CASE WHEN cancel_requested = 1 THEN 'CANCELLED' ELSE ? END,"
                    " result = CASE WHEN cancel_requested = 1 THEN NULL ELSE ? END,"
                    " error = COALESCE(?, error), attempts = COALESCE(?, attempts),"
                    " lease_owner = NULL, updated_at = {now}, expires_at = {now} + ?"
                    f" WHERE id = ? AND status NOT IN {_TERMINAL}"
                    f" RETURNING cancel_requested, attempts, {_HOOK_COLUMNS}"
                ),
                (
                    status.value,
                    result_json,
                    error.model_dump_json() if error else None,
                    attempts,
                    self.result_ttl_s,
                    task_id,
                ),
            ).fetchall()
            if not rows:
                return False
            cancelled, attempt, hook = bool(rows[0][0]), int(rows[0][1]), rows[0][2:]
            if dead_letter is not None and not cancelled:
                self._insert_dead_letter(db, dead_letter)
            if cancelled or status is TaskState.CANCELLED:
                self._event(db, task_id, hook, WebhookEvent.CANCELLED, attempt)
            elif status is TaskState.SUCCESS:
                data = result_data(result_json, self._webhooks.max_result_bytes)
                self._event(db, task_id, hook, WebhookEvent.SUCCEEDED, attempt, data)
            else:
                self._event(db, task_id, hook, WebhookEvent.FAILED, attempt, error_data(error))
                if dead_letter is not None:
                    data = dead_letter_data(error, dead_letter.queue_name)
                    self._event(db, task_id, hook, WebhookEvent.DEAD_LETTERED, attempt, data)
            return True

        # Without a dead letter (or webhooks) it is one statement, committed on its own.
        return self._write(work, atomic=dead_letter is not None or self._atomic_events)

    def schedule_retry(self, task_id: str, error: TaskError, delay_s: float) -> bool:
        """Set RETRY, deliverable after ``delay_s``; a pending cancel wins."""

        def work(db: Executor) -> bool:
            rows = db.execute(
                self._sql(
                    "UPDATE {tasks} SET error = ?, lease_owner = NULL, updated_at = {now},"
                    " visible_at = {now} + ?, unrecorded = 0,"
                    " status = CASE WHEN cancel_requested = 1 THEN 'CANCELLED' ELSE 'RETRY' END,"
                    " expires_at = CASE WHEN cancel_requested = 1 THEN {now} + ?"
                    "   ELSE expires_at END"
                    f" WHERE id = ? AND status NOT IN {_TERMINAL}"
                    f" RETURNING status, attempts, {_HOOK_COLUMNS}"
                ),
                (error.model_dump_json(), delay_s, self.result_ttl_s, task_id),
            ).fetchall()
            if not rows:
                return False
            if rows[0][0] == TaskState.CANCELLED.value:
                self._event(db, task_id, rows[0][2:], WebhookEvent.CANCELLED, int(rows[0][1]))
            self.dialect.after_queueing(db, self.queue_name)
            return True

        return self._write(work)

    def _release(
        self, db: Executor, task_ids: Sequence[str], owner: str, uncount: bool, delay_s: float
    ) -> None:
        marks = ",".join("?" * len(task_ids))
        db.execute(
            self._sql(
                "UPDATE {tasks} SET status = 'PENDING', visible_at = {now} + ?,"
                " lease_owner = NULL, updated_at = {now}, attempts = attempts - ?"
                f" WHERE id IN ({marks}) AND lease_owner = ? AND status = 'STARTED'"
            ),
            (delay_s, 1 if uncount else 0, *task_ids, owner),
        )
        self.dialect.after_queueing(db, self.queue_name)

    def release(
        self, task_ids: Sequence[str], owner: str, *, uncount: bool, delay_s: float = 0.0
    ) -> None:
        """Hand leased rows back to the queue, deliverable after ``delay_s``."""
        if task_ids:
            self._write(lambda db: self._release(db, task_ids, owner, uncount, delay_s))

    def note_unrecorded(self, task_id: str, owner: str, delay_s: float) -> int:
        """Release an unrecordable delivery, uncounted; return how many in a row."""

        def work(db: Executor) -> int:
            rows = db.execute(
                self._sql(
                    "UPDATE {tasks} SET unrecorded = unrecorded + 1"
                    " WHERE id = ? AND lease_owner = ? AND status = 'STARTED'"
                    " RETURNING unrecorded"
                ),
                (task_id, owner),
            ).fetchall()
            self._release(db, [task_id], owner, True, delay_s)
            return int(rows[0][0]) if rows else 0

        return self._write(work)

    def extend_leases(self, task_ids: Sequence[str], owner: str, lease_s: float) -> None:
        """Push the lease of running rows ``lease_s`` into the future."""
        if not task_ids:
            return
        marks = ",".join("?" * len(task_ids))
        self._run(
            "UPDATE {tasks} SET visible_at = {now} + ?"
            f" WHERE id IN ({marks}) AND lease_owner = ? AND status = 'STARTED' RETURNING id",
            (lease_s, *task_ids, owner),
        )

    def write_progress(self, task_id: str, owner: str, progress_json: str) -> bool:
        """Make ``progress_json`` the row's progress if it is STARTED under
        ``owner``'s lease (one statement: checked and written together)."""

        def work(db: Executor) -> bool:
            rows = db.execute(
                self._sql(
                    "UPDATE {tasks} SET progress = ?"
                    " WHERE id = ? AND status = 'STARTED' AND lease_owner = ?"
                    f" RETURNING attempts, webhook_progress, {_HOOK_COLUMNS}"
                ),
                (progress_json, task_id, owner),
            ).fetchall()
            if not rows:
                return False
            attempt, count, hook = int(rows[0][0]), int(rows[0][1] or 0), rows[0][2:]
            if hook[1] is not None and subscribed(hook[2], WebhookEvent.PROGRESS):
                self._progress_event(
                    db, task_id, hook, attempt, count, progress_data(progress_json)
                )
            return True

        return self._write(work, atomic=self._atomic_events)

    def cancel_requested(self, task_ids: Sequence[str]) -> list[str]:
        """Which of ``task_ids`` have a pending cancel request."""
        if not task_ids:
            return []
        marks = ",".join("?" * len(task_ids))
        rows = self._run(
            f"SELECT id FROM {{tasks}} WHERE id IN ({marks}) AND cancel_requested = 1",
            tuple(task_ids),
        )
        return [str(r[0]) for r in rows]

    def purge_expired(self) -> int:
        """Delete finished rows whose result TTL has passed."""
        return self._write(
            lambda db: (
                db.execute(
                    self._sql(
                        "DELETE FROM {tasks} WHERE expires_at IS NOT NULL AND expires_at <= {now}"
                    )
                ).rowcount
            )
        )

    def counts(self) -> QueueCounts:
        """Queued (PENDING, RETRY) and running (STARTED, live lease) rows."""
        rows = self._run(
            "SELECT status, count(*) FROM {tasks} WHERE queue = ?"
            " AND (status IN ('PENDING', 'RETRY') OR (status = 'STARTED' AND visible_at > {now}))"
            " GROUP BY status",
            (self.queue_name,),
        )
        by_status = {str(r[0]): int(r[1]) for r in rows}
        return QueueCounts(
            queued=by_status.get("PENDING", 0) + by_status.get("RETRY", 0),
            in_flight=by_status.get("STARTED", 0),
        )

    # -- webhook events (WebhookOutbox) -------------------------------------------------
    def expect_webhooks(self, settings: WebhookSettings) -> None:
        """Tasks of this queue may ask for webhooks: from now on every step that
        announces an event is one transaction with the event's entry."""
        self._webhooks = settings
        self._atomic_events = True

    def _event(
        self,
        db: Executor,
        task_id: str,
        hook: Sequence[Any],
        event: WebhookEvent,
        attempt: int,
        data: str | None = None,
    ) -> None:
        """Write the outbox entry of ``event`` if the task (``hook``: its name,
        webhook URL and events) asked for it; an entry of the same id is kept."""
        name, url, events = hook
        if url is None or not subscribed(events, event):
            return
        number = attempt if event is WebhookEvent.STARTED else None
        self._add_event(
            db, event_id(task_id, event, number), task_id, name, url, event, attempt, data
        )

    def _add_event(
        self,
        db: Executor,
        entry_id: str,
        task_id: str,
        name: Any,
        url: str,
        event: WebhookEvent,
        attempt: int,
        data: str | None,
        due_at: float | None = None,
    ) -> None:
        db.execute(
            self._sql(
                "INSERT INTO {webhook_outbox} (id, queue, task_id, task_name, event, url,"
                " attempt, data, created_at, due_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, {now}, COALESCE(?, {now}))"
                " ON CONFLICT (id) DO NOTHING"
            ),
            (entry_id, self.queue_name, task_id, name, event.value, url, attempt, data, due_at),
        )

    def _progress_event(
        self, db: Executor, task_id: str, hook: Sequence[Any], attempt: int, count: int, data: str
    ) -> None:
        """A report coalesces into the task's last progress entry while that one
        was never tried; else it makes the next one, due one interval after the
        last at the earliest."""
        if (
            count
            and db.execute(
                self._sql(
                    "UPDATE {webhook_outbox} SET data = ?, attempt = ?, created_at = {now}"
                    " WHERE id = ? AND deliveries = 0 RETURNING id"
                ),
                (data, attempt, event_id(task_id, WebhookEvent.PROGRESS, count)),
            ).fetchall()
        ):
            return
        interval = self._webhooks.progress_interval_s
        rows = db.execute(
            self._sql(
                "UPDATE {tasks} SET webhook_progress = webhook_progress + 1,"
                " webhook_progress_at = CASE WHEN webhook_progress_at IS NULL"
                "   OR webhook_progress_at + ? <= {now} THEN {now}"
                "   ELSE webhook_progress_at + ? END"
                " WHERE id = ? RETURNING webhook_progress, webhook_progress_at"
            ),
            (interval, interval, task_id),
        ).fetchall()
        number, due_at = int(rows[0][0]), float(rows[0][1])
        entry_id = event_id(task_id, WebhookEvent.PROGRESS, number)
        name, url, _ = hook
        self._add_event(
            db, entry_id, task_id, name, url, WebhookEvent.PROGRESS, attempt, data, due_at
        )

    def claim_webhooks(self, owner: str, lease_s: float, limit: int) -> list[WebhookDelivery]:
        """Lease up to ``limit`` due entries of the queue to ``owner``."""
        rows = self._run(
            "UPDATE {webhook_outbox} SET lease_owner = ?, due_at = {now} + ?,"
            " deliveries = deliveries + 1 WHERE id IN (SELECT id FROM {webhook_outbox}"
            " WHERE queue = ? AND due_at <= {now} ORDER BY due_at LIMIT ?"
            + self.dialect.skip_locked
            + f") RETURNING {_OUTBOX_COLUMNS}",
            (owner, lease_s, self.queue_name, limit),
        )
        known = {e.value for e in WebhookEvent}
        return [
            WebhookDelivery(
                id=str(r[0]),
                task_id=str(r[1]),
                task_name=r[2],
                queue_name=self.queue_name,
                event=WebhookEvent(r[3]),
                url=str(r[4]),
                attempt=int(r[5]),
                data=r[6],
                created_at=float(r[7]),
                deliveries=int(r[8]),
            )
            for r in rows
            if r[3] in known  # an event of a later version waits for a sender that knows it
        ]

    def finish_webhook(self, event_id: str) -> None:
        """Delete an entry (delivered or given up)."""
        self._run("DELETE FROM {webhook_outbox} WHERE id = ? RETURNING id", (event_id,))

    def retry_webhook(self, event_id: str, owner: str, delay_s: float, error: str) -> None:
        """Make an entry leased by ``owner`` due again after ``delay_s``."""
        self._run(
            "UPDATE {webhook_outbox} SET due_at = {now} + ?, lease_owner = NULL, last_error = ?"
            " WHERE id = ? AND lease_owner = ? RETURNING id",
            (delay_s, error[:2000], event_id, owner),
        )

    def pending_webhooks(self) -> int:
        """Entries of the queue not delivered yet."""
        rows = self._run(
            "SELECT count(*) FROM {webhook_outbox} WHERE queue = ?", (self.queue_name,)
        )
        return int(rows[0][0])

    # -- consumers alive (WorkerDirectory) ---------------------------------------------
    def beat(self, name: str, stats: Mapping[str, Any], ttl_s: float) -> None:
        """Record consumer ``name`` alive for ``ttl_s`` seconds, with ``stats``."""
        entry = json.dumps(dict(stats), default=str)

        def work(db: Executor) -> None:
            db.execute(
                self._sql("DELETE FROM {workers} WHERE queue = ? AND alive_until <= {now}"),
                (self.queue_name,),
            )
            db.execute(
                self._sql(
                    "INSERT INTO {workers} (queue, name, alive_until, stats)"
                    " VALUES (?, ?, {now} + ?, ?) ON CONFLICT (queue, name) DO UPDATE"
                    " SET alive_until = excluded.alive_until, stats = excluded.stats"
                ),
                (self.queue_name, name, ttl_s, entry),
            )

        self._write(work)

    def forget(self, name: str) -> None:
        """Remove consumer ``name``."""
        self._write(
            lambda db: db.execute(
                self._sql("DELETE FROM {workers} WHERE queue = ? AND name = ?"),
                (self.queue_name, name),
            )
        )

    def workers(self) -> dict[str, dict[str, Any]]:
        """Name -> statistics of every consumer of the queue alive now."""
        rows = self._run(
            "SELECT name, stats FROM {workers} WHERE queue = ? AND alive_until > {now}"
            " ORDER BY name",
            (self.queue_name,),
        )
        return {str(r[0]): dict(json.loads(r[1])) for r in rows}

    # -- dead letters ----------------------------------------------------------------
    def _insert_dead_letter(self, db: Executor, record: DeadLetter) -> None:
        db.execute(
            self._sql(
                f"INSERT INTO {{dead_letters}} ({_DEAD_LETTER_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                record.id,
                record.kind.value,
                record.queue_name,
                record.source_queue,
                record.task_id,
                record.task_name,
                _json_or_none(record.args),
                _json_or_none(record.kwargs),
                record.raw,
                record.error.model_dump_json(),
                record.attempts,
                record.enqueued_at,
                record.failed_at,
                record.priority,
            ),
        )

    def add_dead_letter(self, record: DeadLetter) -> None:
        """Keep a dead letter that belongs to no task row."""
        self._write(lambda db: self._insert_dead_letter(db, record))

    def dead_letters(
        self, queue: str, limit: int | None, ids: Sequence[str] | None
    ) -> list[DeadLetter]:
        """Records of ``queue``, oldest first."""
        sql = f"SELECT {_DEAD_LETTER_COLUMNS} FROM {{dead_letters}} WHERE queue = ?"
        params: list[Any] = [queue]
        if ids is not None:
            if not ids:
                return []
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            params += list(ids)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_dead_letter_row(r) for r in self._run(sql, params)]

    def delete_dead_letters(self, queue: str, ids: Sequence[str] | None) -> int:
        """Delete records of ``queue`` (all when ``ids`` is None)."""

        def work(db: Executor) -> int:
            if ids is None:
                return db.execute(
                    self._sql("DELETE FROM {dead_letters} WHERE queue = ?"), (queue,)
                ).rowcount
            if not ids:
                return 0
            marks = ",".join("?" * len(ids))
            return db.execute(
                self._sql(f"DELETE FROM {{dead_letters}} WHERE queue = ? AND id IN ({marks})"),
                (queue, *ids),
            ).rowcount

        return self._write(work)

    def count_dead_letters(self, queue: str | None) -> int | None:
        """How many records ``queue`` holds (None when no queue is configured)."""
        if queue is None:
            return None
        rows = self._run("SELECT count(*) FROM {dead_letters} WHERE queue = ?", (queue,))
        return int(rows[0][0])
