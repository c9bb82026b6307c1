"""Task records, leases, the ledger of unclaimed messages, and dead letters in Redis.

Engines such as Celery, Dramatiq and RQ move messages well but disagree on
status, cancellation and dead letters, and each has windows in which a
message can be lost (a fetch that is popped but not yet recorded as
unacknowledged, a publish lost in a broker restart, a producer killed between
writing the record and publishing). Adapters built on them keep the task
state in a :class:`RedisTaskStore` instead, and the store is the ledger: it
implements the :class:`~taskserve.engine.store.TaskStore` contract with Lua
scripts (every transition atomic, status forward-only, a dead letter written
in the same step as the FAILURE status), and it knows which tasks still
need a message, so :meth:`RedisTaskStore.reconcile` can publish again what
the engine lost.

The ledger. Every publish of a task gets a number from a per-queue sequence,
carried in the message (``TaskMessage.seq``). A task waits in ``waiting``
(scored by that number) from its publish until a consumer begins it; the
highest number begun so far is kept in ``seen`` (only deliveries of the
lowest priority count: :attr:`~taskserve.kit.TaskMessage.ledger_mark`). Messages
of one queue and priority are consumed in about the order they were published,
and higher priorities first, so a task whose number was
passed by ``seen`` more than ``claim_bound_s`` ago, and that is still not
begun, was lost: it is published again under a new number. A task that
merely waits behind a long backlog is never passed and never re-published;
when the engine's queue is empty, everything published more than
``claim_bound_s`` ago and still waiting is lost too. Retries, delayed tasks
and tasks handed back wait in ``scheduled`` until they are due, and tasks
whose consumer stopped renewing the lease (crashed) are published again
from ``running`` a grace period after it ran out.

Keys (``prefix`` defaults to ``taskserve``)::

    {prefix}:task:{id}                 hash: the task record and its message
    {prefix}:idem:{queue}:{key}        string: task id of an idempotency key
    {prefix}:running:{queue}           zset: running task ids by lease deadline
    {prefix}:waiting:{queue}           zset: published, unclaimed ids by publish number
    {prefix}:scheduled:{queue}         zset: ids to publish at a time (retries, hand-backs)
    {prefix}:tasks:{queue}             zset: the queue's task ids by creation time (listing)
    {prefix}:tasks-sweep:{queue}       where the listing's sweep of expired ids is
    {prefix}:seq:{queue}, :seen:{queue}, :samples:{queue}, :republished:{queue},
    :reconciling:{queue}               the ledger's counters, history and lock
    {prefix}:dlq:{name}:order          zset: dead-letter ids by time
    {prefix}:dlq:{name}:records        hash: dead-letter id -> JSON record
    {prefix}:workers:{queue}           hash: consumer name -> JSON {until, stats}
    {prefix}:webhooks:{queue}          zset: webhook event ids by due time (the outbox)
    {prefix}:webhook:{event id}        hash: one webhook event to deliver

Webhooks. A task's record keeps its webhook (``webhook_url``, ``webhook_events``,
and the count and due time of its last progress event); each script that moves
the task into a state it asked to hear about writes the event's outbox entry
before the new status, in the same script (see :mod:`taskserve.engine.store`).

The listing. Every new record enters ``tasks`` (scored by ``created_at``)
in the script that creates it, and leaves it in the one that discards it. A
record that expires cannot take its entry with it, so the entry goes when a
listing reads it, and each insert also checks a few entries for records that
are gone (:data:`~taskserve.engine.redis.scripts.SWEEP_STEP`), walking the
whole set in turn: it stays within a small multiple of the live records even
if it is never listed.

Requires the ``redis`` package (``pip install taskserve[redis]``).
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from taskserve.adapter import listing_limit
from taskserve.engine.progress import stored_progress
from taskserve.engine.redis import scripts
from taskserve.engine.store import Begun, Inserted, QueueCounts, Republish, stored_error
from taskserve.errors import BrokerUnavailable, TaskIdInUse, TaskNotFound
from taskserve.models import DeadLetter, DeadLetterKind, TaskError, TaskResult
from taskserve.redaction import redact_url
from taskserve.serialization import MAX_DECODE_DEPTH, TaskMessage, loads_stored, text_depth
from taskserve.states import TaskState
from taskserve.webhooks.events import (
    WebhookDelivery,
    dead_letter_data,
    error_data,
    events_text,
    progress_data,
    result_data,
)
from taskserve.webhooks.settings import WebhookEvent, WebhookSettings

try:
    import redis
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the Redis task store needs the 'redis' package: pip install 'taskserve[redis]'"
    ) from e

RECONCILE_BATCH = 500
"""Most tasks one reconcile step publishes per reason."""

LIST_BATCH = 1000
"""Most entries of the listing one step of ``recent`` reads (one script call):
a filtered listing reads in steps, so no call holds Redis long."""


_UNAVAILABLE_REPLIES = (
    "READONLY",
    "MISCONF",
    "OOM ",
    "LOADING",
    "MASTERDOWN",
    "NOREPLICAS",
    "BUSY ",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "NOAUTH",
    "WRONGPASS",
    "NOPERM",
)
"""Reply prefixes of a Redis that answers but cannot serve now (read-only
replica, failed persistence, out of memory, loading, busy script, ACL)."""


def redis_unavailable(error: BaseException) -> bool:
    """Whether a redis-py error means Redis cannot be reached or written now:
    refused or lost connections, timeouts (a paused server), a read-only
    replica, refused credentials, and the replies above. The one mapping of
    Redis errors to :class:`BrokerUnavailable`, for the store and every
    engine on Redis."""
    if isinstance(
        error,
        (
            redis.ConnectionError,  # AuthenticationError and BusyLoadingError too
            redis.TimeoutError,
            redis.exceptions.ReadOnlyError,
            redis.exceptions.NoPermissionError,
        ),
    ):
        return True
    if isinstance(error, redis.ResponseError):
        text = str(error).upper()
        return any(reply in text for reply in _UNAVAILABLE_REPLIES)
    return False


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _stored_text(value: bytes | str) -> str:
    """A field of a task record as text; bytes that are not UTF-8 (written by
    something else) are read with replacement characters, never an error."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


_KIND = re.compile(rb'"kind":"(failed|unprocessable)"')


def _dead_letter(record_id: str, queue: str, stored: bytes) -> DeadLetter:
    """A stored dead-letter record. One that cannot be decoded (nested too
    deep, kept by an older version or written by hand) never breaks a
    listing: it comes back with ``args`` and ``kwargs`` None and its stored
    JSON in ``raw``, so it can be seen and purged (not redriven)."""
    if text_depth(stored) <= MAX_DECODE_DEPTH:
        try:
            return DeadLetter.model_validate_json(stored)
        except ValueError:
            pass
        try:
            # The standard decoder, where pydantic's JSON parser stops (200 levels).
            data = json.loads(stored)
            if isinstance(data, dict) and isinstance(data.get("raw"), str):
                data["raw"] = base64.b64decode(data["raw"])
            return DeadLetter.model_validate(data)
        except (ValueError, TypeError, RecursionError):
            pass
    kind = _KIND.search(stored)
    return DeadLetter(
        id=record_id,
        kind=DeadLetterKind(kind[1].decode()) if kind else DeadLetterKind.FAILED,
        queue_name=queue,
        source_queue="",
        task_id=None,
        task_name=None,
        args=None,
        kwargs=None,
        raw=stored,
        error=TaskError(
            type="taskserve.errors.PayloadError",
            message=(
                f"this dead-letter record cannot be decoded (it nests deeper than "
                f"{MAX_DECODE_DEPTH} levels, or is not a record); its stored JSON is in raw"
            ),
        ),
        attempts=0,
        enqueued_at=None,
    )


_PURGE_SWEEPS = 20
"""Most listing sweeps one ``purge_expired`` runs (it stops at the first that
removes nothing)."""


class RedisTaskStore:
    """The state of one queue's tasks, kept in Redis (a :class:`TaskStore`)."""

    def __init__(
        self,
        url: str,
        queue_name: str,
        *,
        result_ttl_s: float,
        prefix: str = "taskserve",
        client: redis.Redis | None = None,
    ) -> None:
        self.url = url
        self.queue_name = queue_name
        self.result_ttl_s = result_ttl_s
        self.prefix = prefix
        self.client: redis.Redis = client or redis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
        )
        base = f"{prefix}:%s:{queue_name}"
        self._running_key = base % "running"
        self._waiting_key = base % "waiting"
        self._scheduled_key = base % "scheduled"
        self._seq_key = base % "seq"
        self._seen_key = base % "seen"
        self._workers_key = base % "workers"
        self._tasks_key = base % "tasks"
        self._sweep_key = base % "tasks-sweep"
        self._outbox_key = base % "webhooks"
        self._entry_prefix = f"{prefix}:webhook:"
        self._webhooks = WebhookSettings()
        self._ledger_keys = [
            self._waiting_key,
            self._scheduled_key,
            self._running_key,
            self._seq_key,
            self._seen_key,
            base % "samples",
            base % "republished",
            base % "reconciling",
        ]
        self._token = uuid.uuid4().hex
        self._create = self.client.register_script(scripts.CREATE)
        self._begin = self.client.register_script(scripts.BEGIN)
        self._finish = self.client.register_script(scripts.FINISH)
        self._retry = self.client.register_script(scripts.RETRY)
        self._cancel = self.client.register_script(scripts.CANCEL)
        self._release = self.client.register_script(scripts.RELEASE)
        self._reconcile = self.client.register_script(scripts.RECONCILE)
        self._discard = self.client.register_script(scripts.DISCARD)
        self._progress = self.client.register_script(scripts.PROGRESS)
        self._list = self.client.register_script(scripts.LIST)
        self._sweep = self.client.register_script(scripts.SWEEP)
        self._claim_webhooks = self.client.register_script(scripts.CLAIM_WEBHOOKS)
        self._retry_webhook = self.client.register_script(scripts.RETRY_WEBHOOK)

    # -- keys --------------------------------------------------------------
    def task_key(self, task_id: str) -> str:
        """Key of a task's record."""
        return f"{self.prefix}:task:{task_id}"

    def dead_letter_keys(self, queue: str) -> tuple[str, str]:
        """Keys of dead-letter queue ``queue``: (order zset, records hash)."""
        return f"{self.prefix}:dlq:{queue}:order", f"{self.prefix}:dlq:{queue}:records"

    @property
    def _ttl(self) -> int:
        return max(int(self.result_ttl_s + 0.999), 1)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as e:
            if not redis_unavailable(e):
                raise
            raise BrokerUnavailable(
                f"cannot use Redis at {redact_url(self.url)}: {type(e).__name__}: {e}"
            ) from e

    def ping(self) -> None:
        """Raise BrokerUnavailable unless Redis answers and takes writes: a
        replica (read-only) answers PING but refuses every write."""
        self._call(self.client.ping)
        try:
            role = self._call(self.client.execute_command, "ROLE")
        except redis.ResponseError:
            return  # ROLE not allowed (ACL, renamed commands): PING has to do
        if role and _text(role[0]) in ("slave", "replica"):
            raise BrokerUnavailable(
                f"Redis at {redact_url(self.url)} is a read-only replica; point the "
                "adapter at the primary"
            )

    def close(self) -> None:
        """Close the connection pool (it reconnects on next use)."""
        self.client.close()

    # -- producer ------------------------------------------------------------
    def insert(self, message: TaskMessage, idempotency_key: str | None) -> Inserted:
        """Store a PENDING record and enter it in the ledger. The new task's
        ``seq`` is the number its published message must carry
        (``message.with_seq(inserted.seq)``); with a used idempotency key the
        existing task is returned, not new, and nothing is to be published. A
        message whose ``not_before`` is in the future waits in ``scheduled``
        (``inserted.scheduled``: not to be published now)."""
        due = (
            message.not_before if message.not_before and message.not_before > time.time() else None
        )
        idem_key = (
            f"{self.prefix}:idem:{self.queue_name}:{idempotency_key}" if idempotency_key else ""
        )
        raw_id, raw_seq = self._call(
            self._create,
            keys=[
                self.task_key(message.id),
                idem_key,
                self._waiting_key,
                self._seq_key,
                self._scheduled_key,
                self._tasks_key,
                self._sweep_key,
            ],
            args=[
                message.id,
                message.queue_name,
                message.name,
                message.to_bytes(),
                message.enqueued_at,
                message.retried_from or "",
                f"{self.prefix}:task:",
                "" if due is None else due,
                message.webhook_url or "",
                events_text(message.webhook_events or ()) if message.webhook_url else "",
            ],
        )
        task_id, seq = _text(raw_id), int(raw_seq)
        if not task_id:
            raise TaskIdInUse(message.id)
        if seq == 0:
            try:
                return Inserted(self.status(task_id), created=False)
            except TaskNotFound:
                # The key's task expired since the script saw it: the key is free now.
                return self.insert(message, idempotency_key)
        return Inserted(
            TaskResult(
                id=message.id,
                status=TaskState.PENDING,
                created_at=message.enqueued_at,
                name=message.name,
                queue_name=message.queue_name,
                updated_at=message.enqueued_at,
                retried_from=message.retried_from,
                due_at=due,
            ),
            created=True,
            seq=seq if seq > 0 else None,
            scheduled=seq < 0,
        )

    def discard(self, task_id: str) -> None:
        """Delete a record whose message the engine refused, and its
        idempotency key (a retry with that key enqueues anew)."""
        self._call(
            self._discard,
            keys=[self.task_key(task_id), self._waiting_key, self._tasks_key],
            args=[task_id],
        )

    def _record(self, task_id: str) -> dict[str, str]:
        raw = self._call(self.client.hgetall, self.task_key(task_id))
        if not raw:
            raise TaskNotFound(task_id)
        return {str(_text(k)): _stored_text(v) for k, v in raw.items() if k != b"payload"}

    def status(self, task_id: str) -> TaskResult:
        """The task's record; TaskNotFound when unknown or expired."""
        return self._result(task_id, self._record(task_id))

    @staticmethod
    def _result(task_id: str, record: Mapping[str, str]) -> TaskResult:
        """A task's stored fields (the payload left out) as its record."""
        return TaskResult(
            id=task_id,
            status=TaskState(record["status"]),
            created_at=float(record["created_at"]),
            updated_at=float(record["updated_at"]),
            name=record.get("name"),
            queue_name=record.get("queue"),
            result=loads_stored(record["result"]) if "result" in record else None,
            error=stored_error(record["error"]) if "error" in record else None,
            attempts=int(record.get("attempts", 0)),
            retried_from=record.get("retried_from") or None,
            progress=stored_progress(record.get("progress")),
            # Every write that queues a task for later sets its due time.
            due_at=float(record["due"])
            if "due" in record and record["status"] in ("PENDING", "RETRY")
            else None,
        )

    def recent(
        self, statuses: Collection[TaskState] | None, limit: int, before: float | None = None
    ) -> list[TaskResult]:
        """The queue's live records newest first (``created_at``, then id, both
        descending), in ``statuses`` (all when None), created strictly before
        ``before``, at most ``limit``. Read from the listing in steps of at most
        :data:`LIST_BATCH` entries, each one script (each record read whole in
        it); entries whose record is gone leave the listing as they are read."""
        limit = listing_limit(limit)
        wanted = ""
        if statuses is not None:
            names = sorted({TaskState(s).value for s in statuses})
            if not names:
                return []
            wanted = "," + ",".join(names) + ","
        highest = "+inf" if before is None else f"({float(before)!r}"
        after = ""
        found: list[TaskResult] = []
        while len(found) < limit:
            raw = self._call(
                self._list,
                keys=[self._tasks_key],
                args=[
                    f"{self.prefix}:task:",
                    highest,
                    after,
                    LIST_BATCH,
                    limit - len(found),
                    wanted,
                ],
            )
            last_id, last_score, fetched = _text(raw[0]), _text(raw[1]), int(raw[2])
            for entry in raw[3:]:
                task_id = str(_text(entry[0]))
                fields = {
                    name: _stored_text(value)
                    for name, value in zip(scripts.LIST_FIELDS, entry[1:], strict=True)
                    if value is not None
                }
                found.append(self._result(task_id, fields))
            if fetched < LIST_BATCH:
                break
            if last_id:  # else every entry read was gone: the same start reads on
                after, highest = last_id, f"({last_score}"
        return found[:limit]

    def message(self, task_id: str) -> TaskMessage:
        """The task's message as enqueued; TaskNotFound when unknown or expired."""
        payload = self._call(self.client.hget, self.task_key(task_id), "payload")
        if payload is None:
            raise TaskNotFound(task_id)
        return TaskMessage.from_bytes(payload)

    def cancel(self, task_id: str) -> tuple[bool, TaskState]:
        """Cancel: queued tasks at once, running ones by request (see SPEC §5)."""
        changed, status = self._call(
            self._cancel,
            keys=[
                self.task_key(task_id),
                self._running_key,
                self._waiting_key,
                self._scheduled_key,
                self._outbox_key,
            ],
            args=[task_id, time.time(), self._ttl, self._entry_prefix],
        )
        if int(changed) < 0:
            raise TaskNotFound(task_id)
        return bool(int(changed)), TaskState(str(_text(status)))

    # -- consumer ------------------------------------------------------------
    def begin(self, message: TaskMessage, owner: str, lease_s: float, max_attempts: int) -> Begun:
        """Count a delivery and start it (see the store contract); a message
        published without a record (by the engine's own API) gets one."""
        now = time.time()
        attempt, started, elsewhere, deadline = self._call(
            self._begin,
            keys=[
                self.task_key(message.id),
                self._running_key,
                self._waiting_key,
                self._seen_key,
                self._tasks_key,
                self._outbox_key,
            ],
            args=[
                message.id,
                message.queue_name,
                message.name,
                message.with_seq(None).to_bytes(),
                now,
                now + lease_s,
                max_attempts,
                self._ttl,
                owner,
                "" if message.ledger_mark is None else message.ledger_mark,
                self._entry_prefix,
            ],
        )
        return Begun(
            attempt=int(attempt),
            started=bool(int(started)),
            running_elsewhere=bool(int(elsewhere)),
            lease_deadline=float(_text(deadline) or 0) or None,
        )

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
        """Move to terminal ``status`` unless already terminal, writing
        ``dead_letter`` in the same step; a pending cancel makes it CANCELLED."""
        order_key, records_key = self.dead_letter_keys(
            dead_letter.queue_name if dead_letter else "-"
        )
        if status is TaskState.SUCCESS:
            data = result_data(result_json, self._webhooks.max_result_bytes)
        else:
            data = error_data(error) if status is TaskState.FAILURE else ""
        lettered = dead_letter_data(error, dead_letter.queue_name) if dead_letter else ""
        return bool(
            self._call(
                self._finish,
                keys=[
                    self.task_key(task_id),
                    self._running_key,
                    self._waiting_key,
                    self._scheduled_key,
                    order_key,
                    records_key,
                    self._outbox_key,
                ],
                args=[
                    task_id,
                    status.value,
                    time.time(),
                    self._ttl,
                    result_json if result_json is not None else "",
                    error.model_dump_json() if error else "",
                    dead_letter.id if dead_letter else "",
                    dead_letter.model_dump_json() if dead_letter else "",
                    "" if attempts is None else attempts,
                    self._entry_prefix,
                    data,
                    lettered,
                ],
            )
        )

    def schedule_retry(self, task_id: str, error: TaskError, delay_s: float) -> bool:
        """Set RETRY; the ledger publishes the next delivery after ``delay_s``
        (CANCELLED instead when a cancel was requested while the attempt ran)."""
        now = time.time()
        return bool(
            self._call(
                self._retry,
                keys=[
                    self.task_key(task_id),
                    self._running_key,
                    self._scheduled_key,
                    self._outbox_key,
                ],
                args=[
                    task_id,
                    now,
                    error.model_dump_json(),
                    self._ttl,
                    now + delay_s,
                    self._entry_prefix,
                ],
            )
        )

    def _release_one(
        self, task_id: str, owner: str, uncount: bool, delay_s: float, unrecorded: bool
    ) -> int:
        now = time.time()
        return int(
            self._call(
                self._release,
                keys=[self.task_key(task_id), self._running_key, self._scheduled_key],
                args=[task_id, owner, int(uncount), now, now + delay_s, int(unrecorded)],
            )
        )

    def release(
        self, task_ids: Sequence[str], owner: str, *, uncount: bool, delay_s: float = 0.0
    ) -> None:
        """Hand running tasks back: PENDING, published again by the ledger after
        ``delay_s``; with ``uncount`` the delivery's attempt is taken back."""
        for task_id in task_ids:
            self._release_one(task_id, owner, uncount, delay_s, unrecorded=False)

    def note_unrecorded(self, task_id: str, owner: str, delay_s: float) -> int:
        """Release an unrecordable delivery, uncounted; return how many in a row."""
        return max(self._release_one(task_id, owner, True, delay_s, unrecorded=True), 0)

    def extend_leases(self, task_ids: Sequence[str], owner: str, lease_s: float) -> None:
        """Push the lease deadline of running tasks ``lease_s`` ahead."""
        if task_ids:
            deadline = time.time() + lease_s
            self._call(
                self.client.zadd, self._running_key, dict.fromkeys(task_ids, deadline), xx=True
            )

    def write_progress(self, task_id: str, owner: str, progress_json: str) -> bool:
        """Make ``progress_json`` the task's progress if it is STARTED under
        ``owner``'s lease (one script: checked and written together)."""
        return bool(
            int(
                self._call(
                    self._progress,
                    keys=[self.task_key(task_id), self._outbox_key],
                    args=[
                        owner,
                        progress_json,
                        time.time(),
                        progress_data(progress_json),
                        self._entry_prefix,
                        self._webhooks.progress_interval_s,
                    ],
                )
            )
        )

    def cancel_requested(self, task_ids: Sequence[str]) -> list[str]:
        """Which of ``task_ids`` have a cancel request."""
        if not task_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(self.task_key(task_id), "cancel_requested")
        flags = self._call(pipe.execute)
        return [tid for tid, flag in zip(task_ids, flags, strict=True) if flag == b"1"]

    def purge_expired(self) -> int:
        """Redis expires finished records itself; what is left is their entries
        in the queue's listing, which each new task's script sweeps a few of at
        a time. This sweeps on through the listing (up to
        :data:`_PURGE_SWEEPS` steps of ``PURGE_SWEEP_STEP`` entries), so that a
        queue that gets no more tasks keeps no trace of expired ones; returns
        how many entries it removed."""
        removed = 0
        for _ in range(_PURGE_SWEEPS):
            gone = int(
                self._call(
                    self._sweep,
                    keys=[self._tasks_key, self._sweep_key],
                    args=[f"{self.prefix}:task:", scripts.PURGE_SWEEP_STEP],
                )
            )
            removed += gone
            if not gone:
                break
        return removed

    def counts(self) -> QueueCounts:
        """Running tasks (live leases) and tasks waiting in the ledger to be
        published (retries in their backoff); an adapter adds its engine's
        queue depth to ``queued``."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zcount(self._running_key, time.time(), "+inf")
        pipe.zcard(self._scheduled_key)
        running, scheduled = self._call(pipe.execute)
        return QueueCounts(queued=int(scheduled), in_flight=int(running))

    def in_flight(self) -> int:
        """Tasks running with a live lease."""
        return int(self._call(self.client.zcount, self._running_key, time.time(), "+inf"))

    # -- the ledger ------------------------------------------------------------
    def reconcile(
        self,
        *,
        claim_bound_s: float,
        lease_grace_s: float,
        engine_empty: bool,
        every_s: float,
    ) -> list[Republish]:
        """Take the tasks to publish now (see the module docstring), each under a
        new publish number; at most one consumer of the queue does this every
        ``every_s`` seconds (others get an empty list)."""
        raw = self._call(
            self._reconcile,
            keys=self._ledger_keys,
            args=[
                time.time(),
                claim_bound_s,
                int(engine_empty),
                RECONCILE_BATCH,
                f"{self.prefix}:task:",
                self._token,
                max(int(every_s * 1000), 1),
                lease_grace_s,
            ],
        )
        return [
            Republish(
                task_id=str(_text(raw[i])), seq=int(raw[i + 1]), reason=str(_text(raw[i + 2]))
            )
            for i in range(0, len(raw), 3)
        ]

    def republished(self) -> dict[str, int]:
        """How many times the ledger published a task again, by reason: ``lost``
        (its message was never claimed) and ``lease`` (its consumer died)."""
        raw = self._call(self.client.hgetall, self._ledger_keys[6])
        counts = {"lost": 0, "lease": 0}
        counts.update({str(_text(k)): int(v) for k, v in raw.items()})
        return counts

    def unclaimed(self) -> int:
        """Tasks published and not yet begun (in the engine's queue, or lost)."""
        return int(self._call(self.client.zcard, self._waiting_key))

    # -- webhook events (WebhookOutbox) ------------------------------------------------
    def expect_webhooks(self, settings: WebhookSettings) -> None:
        """Tasks of this queue may ask for webhooks under ``settings`` (every
        script writes its events already; the settings give the progress
        interval and the largest result an event carries)."""
        self._webhooks = settings

    def claim_webhooks(self, owner: str, lease_s: float, limit: int) -> list[WebhookDelivery]:
        """Lease up to ``limit`` due entries of the queue to ``owner``."""
        now = time.time()
        raw = self._call(
            self._claim_webhooks,
            keys=[self._outbox_key],
            args=[now, now + lease_s, owner, limit, self._entry_prefix],
        )
        known = {e.value for e in WebhookEvent}
        found = []
        for entry in raw:
            fields = dict(zip(scripts.WEBHOOK_FIELDS, (_text(v) or "" for v in entry), strict=True))
            if fields["event"] not in known:
                continue  # an event of a later version waits for a sender that knows it
            found.append(
                WebhookDelivery(
                    id=fields["id"],
                    task_id=fields["task_id"],
                    task_name=fields["task_name"] or None,
                    queue_name=self.queue_name,
                    event=WebhookEvent(fields["event"]),
                    url=fields["url"],
                    attempt=int(fields["attempt"] or 0),
                    data=fields["data"] or None,
                    created_at=float(fields["created_at"] or now),
                    deliveries=int(fields["deliveries"] or 1),
                )
            )
        return found

    def finish_webhook(self, event_id: str) -> None:
        """Delete an entry (delivered or given up)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self._outbox_key, event_id)
        pipe.delete(self._entry_prefix + event_id)
        self._call(pipe.execute)

    def retry_webhook(self, event_id: str, owner: str, delay_s: float, error: str) -> None:
        """Make an entry leased by ``owner`` due again after ``delay_s``."""
        self._call(
            self._retry_webhook,
            keys=[self._outbox_key, self._entry_prefix + event_id],
            args=[event_id, owner, time.time() + delay_s, error[:2000]],
        )

    def pending_webhooks(self) -> int:
        """Entries of the queue not delivered yet."""
        return int(self._call(self.client.zcard, self._outbox_key))

    # -- consumers alive (WorkerDirectory) ------------------------------------------
    def beat(self, name: str, stats: Mapping[str, Any], ttl_s: float) -> None:
        """Record consumer ``name`` alive for ``ttl_s`` seconds, with ``stats``."""
        entry = json.dumps({"until": time.time() + ttl_s, "stats": stats}, default=str)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self._workers_key, name, entry)
        pipe.expire(self._workers_key, max(int(ttl_s * 10), 60))
        self._call(pipe.execute)

    def forget(self, name: str) -> None:
        """Remove consumer ``name``."""
        self._call(self.client.hdel, self._workers_key, name)

    def workers(self) -> dict[str, dict[str, Any]]:
        """Name -> statistics of every consumer of the queue alive now."""
        now = time.time()
        alive: dict[str, dict[str, Any]] = {}
        stale: list[str] = []
        for raw_name, raw in self._call(self.client.hgetall, self._workers_key).items():
            name = str(_text(raw_name))
            try:
                entry = json.loads(raw)
                until, stats = float(entry["until"]), dict(entry["stats"])
            except (ValueError, KeyError, TypeError):
                stale.append(name)
                continue
            if until < now:
                stale.append(name)
            else:
                alive[name] = stats
        if stale:
            self._call(self.client.hdel, self._workers_key, *stale)
        return dict(sorted(alive.items()))

    # -- dead letters ----------------------------------------------------------
    def add_dead_letter(self, record: DeadLetter) -> None:
        """Store a dead letter that belongs to no task record (undecodable bytes)."""
        order_key, records_key = self.dead_letter_keys(record.queue_name)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(records_key, record.id, record.model_dump_json())
        pipe.zadd(order_key, {record.id: record.failed_at})
        self._call(pipe.execute)

    def dead_letters(
        self, queue: str, limit: int | None, ids: Sequence[str] | None
    ) -> list[DeadLetter]:
        """Records of dead-letter queue ``queue``, oldest first."""
        order_key, records_key = self.dead_letter_keys(queue)
        if ids is None:
            end = -1 if limit is None else limit - 1
            ids = [str(_text(i)) for i in self._call(self.client.zrange, order_key, 0, end)]
        if not ids:
            return []
        raw = self._call(self.client.hmget, records_key, list(ids))
        return [
            _dead_letter(str(record_id), queue, r)
            for record_id, r in zip(ids, raw, strict=True)
            if r is not None
        ]

    def delete_dead_letters(self, queue: str, ids: Sequence[str] | None) -> int:
        """Delete records of ``queue`` (all when ``ids`` is None); return how many."""
        order_key, records_key = self.dead_letter_keys(queue)
        if ids is None:
            count = int(self._call(self.client.zcard, order_key))
            self._call(self.client.delete, order_key, records_key)
            return count
        if not ids:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(order_key, *ids)
        pipe.hdel(records_key, *ids)
        removed, _ = self._call(pipe.execute)
        return int(removed)

    def count_dead_letters(self, queue: str | None) -> int | None:
        """How many records ``queue`` holds (None when no queue is configured)."""
        if queue is None:
            return None
        return int(self._call(self.client.zcard, self.dead_letter_keys(queue)[0]))

    # -- tests and tools ------------------------------------------------------------
    def purge_queue(self, dead_letter_queues: Iterable[str | None] = ()) -> None:
        """Delete everything this queue keeps: task records, the ledger,
        idempotency keys, and the given dead-letter queues."""
        queue = self.queue_name
        keys: list[Any] = [
            *self._ledger_keys,
            self._workers_key,
            self._tasks_key,
            self._sweep_key,
            self._outbox_key,
        ]
        events: list[Any] = self.client.zrange(self._outbox_key, 0, -1)
        keys += [self._entry_prefix + str(_text(event_id)) for event_id in events]
        for dead_letter_queue in dead_letter_queues:
            if dead_letter_queue:
                keys += self.dead_letter_keys(dead_letter_queue)
        keys += self.client.scan_iter(match=f"{self.prefix}:idem:{queue}:*", count=1000)
        for key in self.client.scan_iter(match=f"{self.prefix}:task:*", count=1000):
            if self.client.hget(key, "queue") == queue.encode():
                keys.append(key)
        self._call(self.client.delete, *keys)
