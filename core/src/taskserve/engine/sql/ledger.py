"""The SQL task store as the ledger of a message engine (a LedgerStore).

:class:`SqlLedgerStore` keeps the state of a queue whose messages travel
through an engine (Celery on its filesystem broker, say) in one SQL database,
as :class:`~taskserve.engine.redis.store.RedisTaskStore` does in Redis: every
rule of the store contract holds, and the store knows which tasks still need
a message, so the consumers' reconciler publishes again what the engine lost.

The ledger, in SQL. A task whose message was published and not yet begun has
a row in ``ledger`` with its publish number (``seq``, from a per-queue
sequence in ``ledger_state``). A task PENDING or RETRY *without* such a row is
kept back until its ``visible_at`` (a retry in its backoff, a task handed
back, a delayed enqueue): once due, the reconciler publishes it. The
reconciler also publishes a task STARTED whose lease ran out more than a
grace period ago (its consumer died), and a task whose number was passed by
the highest number begun (``seen``) more than ``claim_bound_s`` ago - its
message was lost - using samples of (seen, seq) taken each reconcile.

Every operation is one write transaction; the store is meant for sqlite,
whose write transactions are serialized (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import uuid
from typing import Any

from taskserve.engine.sql.dialect import Executor, SqlDialect
from taskserve.engine.sql.store import SqlTaskStore
from taskserve.engine.store import Begun, QueueCounts, Republish
from taskserve.serialization import TaskMessage
from taskserve.webhooks.settings import WebhookEvent

RECONCILE_BATCH = 500
"""Most tasks one reconcile step publishes per reason."""

_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS {ledger} (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS {ledger_queue_seq} ON {ledger} (queue, seq);
CREATE TABLE IF NOT EXISTS {ledger_state} (
    queue TEXT PRIMARY KEY,
    seq INTEGER NOT NULL DEFAULT 0,
    seen INTEGER NOT NULL DEFAULT 0,
    republished_lost INTEGER NOT NULL DEFAULT 0,
    republished_lease INTEGER NOT NULL DEFAULT 0,
    lock_until {float} NOT NULL DEFAULT 0,
    lock_token TEXT
);
CREATE TABLE IF NOT EXISTS {ledger_samples} (
    queue TEXT NOT NULL,
    at {float} NOT NULL,
    seen INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS {ledger_samples_queue} ON {ledger_samples} (queue, at)
"""

_UNCLAIMED = "NOT EXISTS (SELECT 1 FROM {ledger} l WHERE l.id = t.id)"
_LIVE = "(t.expires_at IS NULL OR t.expires_at > {now})"


class SqlLedgerStore(SqlTaskStore):
    """The tasks, ledger and dead letters of one engine queue in a SQL database."""

    def __init__(self, dialect: SqlDialect, queue_name: str, *, result_ttl_s: float) -> None:
        super().__init__(dialect, queue_name, result_ttl_s=result_ttl_s)
        for name in (
            "ledger",
            "ledger_queue_seq",
            "ledger_state",
            "ledger_samples",
            "ledger_samples_queue",
        ):
            self._slots[name] = dialect.table(name)
        self._ledger_ready = False
        self._token = uuid.uuid4().hex

    def ensure_schema(self) -> None:
        """The task store's tables, then the ledger's (idempotent)."""
        super().ensure_schema()
        if self._ledger_ready:
            return

        def create() -> None:
            with self.dialect.transaction() as db:
                self.dialect.lock_schema(db)
                self._script(db, _LEDGER_SCHEMA)
                db.execute(
                    self._sql(
                        "INSERT INTO {ledger_state} (queue) VALUES (?) ON CONFLICT (queue) DO NOTHING"
                    ),
                    (self.queue_name,),
                )

        self._guard(create)
        self._ledger_ready = True

    # -- the ledger's steps ------------------------------------------------------------
    def _next_seq(self, db: Executor) -> int:
        rows = db.execute(
            self._sql("UPDATE {ledger_state} SET seq = seq + 1 WHERE queue = ? RETURNING seq"),
            (self.queue_name,),
        ).fetchall()
        return int(rows[0][0])

    def _published(self, db: Executor, task_id: str) -> int:
        seq = self._next_seq(db)
        db.execute(
            self._sql(
                "INSERT INTO {ledger} (id, queue, seq) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq"
            ),
            (task_id, self.queue_name, seq),
        )
        return seq

    def _entered(self, db: Executor, message: TaskMessage) -> tuple[int | None, bool]:
        rows = db.execute(
            self._sql("SELECT visible_at > {now} FROM {tasks} WHERE id = ?"), (message.id,)
        ).fetchall()
        if rows and rows[0][0]:
            return None, True  # delayed: kept back until its visible_at
        return self._published(db, message.id), False

    # -- overrides of the task store ---------------------------------------------------
    def discard(self, task_id: str) -> None:
        """Delete a task whose message could not be published, and its ledger entry."""

        def work(db: Executor) -> None:
            db.execute(self._sql("DELETE FROM {ledger} WHERE id = ?"), (task_id,))
            db.execute(self._sql("DELETE FROM {tasks} WHERE id = ?"), (task_id,))

        self._write(work)

    def begin(self, message: TaskMessage, owner: str, lease_s: float, max_attempts: int) -> Begun:
        """Count a delivery and start it (see the store contract); a message
        published without a record (by the engine's own API) gets one."""

        def work(db: Executor) -> Begun:
            db.execute(
                self._sql(
                    "INSERT INTO {tasks} (id, queue, name, payload, status, created_at,"
                    " updated_at, visible_at, priority)"
                    " VALUES (?, ?, ?, ?, 'PENDING', {now}, {now}, {now}, ?)"
                    " ON CONFLICT DO NOTHING"
                ),
                (
                    message.id,
                    self.queue_name,
                    message.name,
                    message.with_seq(None).to_bytes(),
                    message.priority or 0,
                ),
            )
            if message.ledger_mark is not None:
                db.execute(
                    self._sql(
                        "UPDATE {ledger_state} SET seen = CASE WHEN ? > seen THEN ? ELSE seen END"
                        " WHERE queue = ?"
                    ),
                    (message.ledger_mark, message.ledger_mark, self.queue_name),
                )
            row = db.execute(
                self._sql(
                    "SELECT status, visible_at > {now}, visible_at, attempts, cancel_requested,"
                    " name, webhook_url, webhook_events FROM {tasks} WHERE id = ?"
                ),
                (message.id,),
            ).fetchall()[0]
            status, live, deadline, attempts, cancel = row[:5]
            hook = row[5:]
            if status in ("SUCCESS", "FAILURE", "CANCELLED"):
                db.execute(self._sql("DELETE FROM {ledger} WHERE id = ?"), (message.id,))
                return Begun(attempt=0, started=False)
            if status == "STARTED" and live:
                return Begun(
                    attempt=0,
                    started=False,
                    running_elsewhere=True,
                    lease_deadline=float(deadline),
                )
            db.execute(self._sql("DELETE FROM {ledger} WHERE id = ?"), (message.id,))
            attempt = int(attempts) + 1
            if attempt > max_attempts:
                db.execute(
                    self._sql(
                        "UPDATE {tasks} SET attempts = ?, lease_owner = NULL, updated_at = {now}"
                        " WHERE id = ?"
                    ),
                    (attempt, message.id),
                )
                return Begun(attempt=attempt, started=False)
            if cancel:
                db.execute(
                    self._sql(
                        "UPDATE {tasks} SET attempts = ?, status = 'CANCELLED', lease_owner = NULL,"
                        " updated_at = {now}, expires_at = {now} + ? WHERE id = ?"
                    ),
                    (attempt, self.result_ttl_s, message.id),
                )
                self._event(db, message.id, hook, WebhookEvent.CANCELLED, attempt)
                return Begun(attempt=attempt, started=False)
            db.execute(
                self._sql(
                    "UPDATE {tasks} SET attempts = ?, status = 'STARTED', lease_owner = ?,"
                    " visible_at = {now} + ?, updated_at = {now} WHERE id = ?"
                ),
                (attempt, owner, lease_s, message.id),
            )
            self._event(db, message.id, hook, WebhookEvent.STARTED, attempt)
            return Begun(attempt=attempt, started=True)

        return self._write(work)

    def counts(self) -> QueueCounts:
        """Running tasks (live leases) and tasks kept back until due (retries in
        their backoff, delayed tasks); the adapter adds :meth:`unclaimed`."""
        rows = self._run(
            "SELECT"
            " sum(CASE WHEN t.status IN ('PENDING', 'RETRY') AND " + _UNCLAIMED + " THEN 1"
            " ELSE 0 END),"
            " sum(CASE WHEN t.status = 'STARTED' AND t.visible_at > {now} THEN 1 ELSE 0 END)"
            " FROM {tasks} t WHERE t.queue = ?",
            (self.queue_name,),
        )
        queued, running = rows[0] if rows else (0, 0)
        return QueueCounts(queued=int(queued or 0), in_flight=int(running or 0))

    # -- LedgerStore ---------------------------------------------------------------------
    def unclaimed(self) -> int:
        """Tasks published and not yet begun."""
        rows = self._run(
            "SELECT count(*) FROM {ledger} l JOIN {tasks} t ON t.id = l.id"
            " WHERE l.queue = ? AND t.status IN ('PENDING', 'RETRY')",
            (self.queue_name,),
        )
        return int(rows[0][0])

    def republished(self) -> dict[str, int]:
        """How many times a task was published again, by reason: ``lost`` (its
        message was never claimed) and ``lease`` (its consumer died)."""
        rows = self._run(
            "SELECT republished_lost, republished_lease FROM {ledger_state} WHERE queue = ?",
            (self.queue_name,),
        )
        lost, lease = (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)
        return {"lost": lost, "lease": lease}

    def reconcile(
        self, *, claim_bound_s: float, lease_grace_s: float, engine_empty: bool, every_s: float
    ) -> list[Republish]:
        """The tasks to publish now, each under a new publish number; at most one
        caller per queue gets any every ``every_s`` seconds."""

        def work(db: Executor) -> list[Republish]:
            locked = db.execute(
                self._sql(
                    "UPDATE {ledger_state} SET lock_until = {now} + ?, lock_token = ?"
                    " WHERE queue = ? AND lock_until <= {now} RETURNING seq, seen"
                ),
                (every_s, self._token, self.queue_name),
            ).fetchall()
            if not locked:
                return []
            seq_now, seen_now = int(locked[0][0]), int(locked[0][1])
            db.execute(
                self._sql(
                    "INSERT INTO {ledger_samples} (queue, at, seen, seq) VALUES (?, {now}, ?, ?)"
                ),
                (self.queue_name, seen_now, seq_now),
            )
            db.execute(
                self._sql("DELETE FROM {ledger_samples} WHERE queue = ? AND at < {now} - ?"),
                (self.queue_name, 2 * claim_bound_s + 10.0),
            )
            then = db.execute(
                self._sql(
                    "SELECT seen, seq FROM {ledger_samples} WHERE queue = ? AND at <= {now} - ?"
                    " ORDER BY at DESC LIMIT 1"
                ),
                (self.queue_name, claim_bound_s),
            ).fetchall()
            out: list[Republish] = []
            republished = {"lost": 0, "lease": 0}

            def ids(sql: str, params: tuple[Any, ...]) -> list[str]:
                return [str(r[0]) for r in db.execute(self._sql(sql), params).fetchall()]

            for task_id in ids(
                "SELECT t.id FROM {tasks} t WHERE t.queue = ? AND t.status = 'STARTED'"
                " AND t.visible_at <= {now} - ? AND " + _UNCLAIMED + " LIMIT ?",
                (self.queue_name, lease_grace_s, RECONCILE_BATCH),
            ):
                out.append(Republish(task_id, self._published(db, task_id), "lease"))
                republished["lease"] += 1
            for task_id in ids(
                "SELECT t.id FROM {tasks} t WHERE t.queue = ? AND t.status IN ('PENDING', 'RETRY')"
                " AND t.visible_at <= {now} AND " + _LIVE + " AND " + _UNCLAIMED + " LIMIT ?",
                (self.queue_name, RECONCILE_BATCH),
            ):
                out.append(Republish(task_id, self._published(db, task_id), "due"))
            passed = int(then[0][0]) if then else -1
            if engine_empty and then and int(then[0][1]) > passed:
                passed = int(then[0][1])
            if passed > 0:
                rows = db.execute(
                    self._sql(
                        "SELECT l.id, t.status FROM {ledger} l LEFT JOIN {tasks} t ON t.id = l.id"
                        " WHERE l.queue = ? AND l.seq <= ? ORDER BY l.seq LIMIT ?"
                    ),
                    (self.queue_name, passed, RECONCILE_BATCH),
                ).fetchall()
                for task_id, status in rows:
                    if status in ("PENDING", "RETRY"):
                        out.append(Republish(str(task_id), self._published(db, task_id), "lost"))
                        republished["lost"] += 1
                    else:
                        db.execute(self._sql("DELETE FROM {ledger} WHERE id = ?"), (task_id,))
            if any(republished.values()):
                db.execute(
                    self._sql(
                        "UPDATE {ledger_state} SET republished_lost = republished_lost + ?,"
                        " republished_lease = republished_lease + ? WHERE queue = ?"
                    ),
                    (republished["lost"], republished["lease"], self.queue_name),
                )
            return out

        return self._write(work)

    def purge_queue(self, dead_letter_queues: Any = ()) -> None:
        """Delete everything this queue keeps (tests and tools)."""

        def work(db: Executor) -> None:
            for table in ("ledger", "ledger_samples", "tasks", "workers", "webhook_outbox"):
                db.execute(
                    self._sql(f"DELETE FROM {{{table}}} WHERE queue = ?"), (self.queue_name,)
                )
            db.execute(
                self._sql(
                    "UPDATE {ledger_state} SET seq = 0, seen = 0, republished_lost = 0,"
                    " republished_lease = 0, lock_until = 0"
                    " WHERE queue = ?"
                ),
                (self.queue_name,),
            )
            for queue in dead_letter_queues or ():
                if queue:
                    db.execute(self._sql("DELETE FROM {dead_letters} WHERE queue = ?"), (queue,))

        self._write(work)
