"""The store contract: where an adapter keeps the state of one queue's tasks.

Every first-party adapter keeps each task's record in a :class:`TaskStore`
before its message exists, and the store - not the engine that carries the
messages - is the source of truth: status, attempts, cancel requests,
leases, results, dead letters and idempotency keys live there. The rules
below hold for every store; :class:`~taskserve.engine.sql.SqlTaskStore`
(sqlite, PostgreSQL) and :class:`~taskserve.engine.redis.RedisTaskStore`
(the state store of the Celery, Dramatiq and RQ adapters) implement them.

States are :class:`~taskserve.TaskState`; SUCCESS, FAILURE and CANCELLED
are *terminal*. Each row is one store operation, atomic (one transaction or
one script): everything it checks and writes happens together.

=====================  ====================  =================================================
operation              from                  to, and what else happens
=====================  ====================  =================================================
``insert``             (none)                PENDING, ``attempts`` 0; a message with
                                             ``not_before`` in the future is deliverable only
                                             from then (a ledger schedules it instead of
                                             expecting it published). With an idempotency key
                                             already used on the queue: nothing; the existing
                                             task is returned (not new).
``cancel``             PENDING, RETRY        CANCELLED; expiry set (now + result TTL).
``cancel``             STARTED               STARTED with ``cancel_requested``; the running
                                             handler is told (lease keeper) and its outcome
                                             becomes CANCELLED.
``cancel``             terminal              unchanged ("nothing changed").
``begin`` / ``claim``  PENDING, RETRY;       ``attempts`` + 1 (crashed deliveries count), then:
                       STARTED whose lease   over ``max_attempts``: not started (the runner
                       has run out           ends it FAILURE, ``ConsumerLost``); a pending
                                             cancel: CANCELLED, expiry set; otherwise STARTED
                                             with a lease of ``lease_s`` for ``owner``.
``begin``              STARTED, live lease   nothing, not counted: another delivery runs it.
``begin``              terminal              nothing, not counted.
``finish``             STARTED               SUCCESS (result) or FAILURE (error, and its dead
                                             letter in the same step); lease dropped; expiry
                                             set. A pending cancel wins: CANCELLED, result
                                             and dead letter discarded.
``schedule_retry``     STARTED               RETRY (error kept), deliverable at now + delay;
                                             lease dropped; a pending cancel wins: CANCELLED.
``release``            STARTED, own lease    PENDING, deliverable at now + delay; lease
                                             dropped; with ``uncount`` the delivery's attempt
                                             is taken back (its outcome was never recorded,
                                             or it never started).
``note_unrecorded``    STARTED, own lease    as ``release`` with ``uncount``, and the count of
                                             consecutive unrecordable outcomes + 1 (returned).
``extend_leases``      STARTED, own lease    lease deadline = now + ``lease_s``.
``write_progress``     STARTED, own lease    status unchanged; ``progress`` replaced by the
                                             report (returns True). Not STARTED, another
                                             owner's lease, terminal or unknown: nothing
                                             (False).
``purge_expired``      terminal, expired     deleted (then ``TaskNotFound``).
any write              terminal              nothing: status never leaves a terminal state.
=====================  ====================  =================================================

When a task waits for a time (``insert`` of a message with ``not_before`` in
the future, ``schedule_retry``, ``release`` with a delay), ``status`` reads
that time as ``due_at`` for as long as the task is PENDING or RETRY; a task
deliverable at once, or no longer queued, reads ``due_at`` None.

When attempts are counted: at ``begin``/``claim`` only; taken back only by
``release(uncount=True)`` and ``note_unrecorded``. ``max_attempts`` is the
budget of the task's name (its handler's retry policy): ``begin`` gets that of
the message's name; ``claim``, which counts before the name is known, gets the
largest of the runner's names, and the runner holds each name to its own.
Progress is written only by
``write_progress`` and never cleared: a task that is retried, handed back or
finished keeps its last report. When expiry is set: when
a task becomes terminal (finish, cancel, a cancel found at begin). A record
that is not terminal never expires.

Webhooks. A task enqueued with a webhook keeps its URL and subscribed events
in its record. Every row above that moves such a task into a state it asked to
hear about also writes, in the same atomic step, an entry of the store's
webhook outbox (:class:`WebhookOutbox`): ``begin``/``claim`` that start it
(``started``, one per attempt), ``write_progress`` (``progress``, at most one
per interval: a report coalesces into the progress entry not tried yet),
``finish`` (``succeeded``, ``failed`` and ``dead_lettered``, or ``cancelled``
when a cancel wins), ``cancel``, ``schedule_retry`` and a cancel found at
``begin`` (``cancelled``). A crash can then only make an event be sent
again, under its stable id, never lose it. A SQL store makes its
single-statement steps transactions for this once told to
(:meth:`WebhookOutbox.expect_webhooks`); before that, it writes the entry
right after the step.

A store is per queue: it is built for one ``queue_name`` and its result TTL.
Dead-letter queues are named explicitly in the dead-letter operations.

Listing (``recent``) reads the queue's records newest first: by
``created_at``, ties by id, both descending. Only live records are listed
(an expired one never, even before it is deleted), only this queue's, each
as ``status`` reads it; a record without a task message (``insert_raw``)
is listed too. Paging with ``before`` keeps the records created strictly
before it. A listing is not a snapshot: a store may read it in steps, and a
record whose status changes meanwhile may be left out of a filtered one.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from taskserve.models import DeadLetter, TaskError, TaskResult
from taskserve.serialization import TaskMessage
from taskserve.states import TaskState
from taskserve.webhooks.events import WebhookDelivery
from taskserve.webhooks.settings import WebhookSettings


def stored_error(text: str | bytes) -> TaskError:
    """A task's error as a store kept it (``TaskError`` JSON). One pydantic's
    parser refuses (a lone surrogate escape, written by hand or by another
    version) is read with the standard decoder; one that is no error record at
    all reads as a ``PayloadError`` saying so: a stored value never breaks a
    status read or a listing."""
    try:
        return TaskError.model_validate_json(text)
    except ValueError:
        pass
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            return TaskError.model_validate(data)
    except (ValueError, TypeError, RecursionError):
        pass
    return TaskError(
        type="taskserve.errors.PayloadError",
        message="the task's stored error cannot be decoded (it is not an error record)",
    )


@dataclass(frozen=True)
class Inserted:
    """What ``insert`` did."""

    result: TaskResult
    """The new task's PENDING record, or the existing task of the idempotency key."""
    created: bool
    """False when the idempotency key was used before: nothing was written."""
    seq: int | None = None
    """For stores that keep a ledger of published messages: the publish number
    the new task's message must carry (``message.with_seq(seq)``)."""
    scheduled: bool = False
    """True when a ledger keeps the new task back until its ``not_before``: it
    must not be published now (the reconciler publishes it when due)."""


@dataclass(frozen=True)
class Begun:
    """What ``begin`` (or ``claim``) decided for one delivery."""

    attempt: int
    """1-based number of this delivery, crashed deliveries included (0 when the
    delivery was not counted: the task is finished or running elsewhere)."""
    started: bool
    """True when the task is STARTED for this delivery and its handler may run."""
    running_elsewhere: bool = False
    """True when another delivery holds a live lease on the task: this one is a
    duplicate and must not run; it is settled without being counted."""
    lease_deadline: float | None = None
    """With ``running_elsewhere``: when that lease runs out (unix time)."""


@dataclass(frozen=True)
class Claimed:
    """A task taken from a store that is also the queue (:class:`QueueStore`)."""

    task_id: str
    payload: bytes
    """The message as stored: a :class:`TaskMessage`'s bytes, or raw bytes
    placed on the queue by something else (dead-lettered as undecodable)."""
    begun: Begun


@dataclass(frozen=True)
class QueueCounts:
    """How many tasks of a queue wait and run."""

    queued: int
    """PENDING or RETRY (retries waiting for their backoff included)."""
    in_flight: int
    """STARTED with a live lease."""


@runtime_checkable
class TaskStore(Protocol):
    """The state of one queue's tasks; see the module docstring for the rules.

    Every method raises :class:`~taskserve.BrokerUnavailable` when the store
    cannot be reached, and :class:`~taskserve.TaskNotFound` for an id that is
    unknown or expired where a task is read.
    """

    queue_name: str
    result_ttl_s: float

    # -- connection ------------------------------------------------------
    def ping(self) -> None:
        """Raise BrokerUnavailable unless the store answers."""

    def close(self) -> None:
        """Release connections; the store may be used again afterwards."""

    # -- producer side ---------------------------------------------------
    def insert(self, message: TaskMessage, idempotency_key: str | None) -> Inserted:
        """Store ``message`` as PENDING (deliverable from its ``not_before``).

        With an idempotency key already used on this queue, return that task,
        not created (nothing is written). A key lives exactly as long as its
        task's record: once that record expired, the key is free and the
        insert creates a new task. A task id already in use raises
        :class:`~taskserve.TaskIdInUse`. (Whether the payload matches the key's
        first task is checked by the adapter, against that task's message.)
        """

    def discard(self, task_id: str) -> None:
        """Delete the record of a task whose message the engine refused, and its
        idempotency key with it (nothing of the refused enqueue remains)."""

    def status(self, task_id: str) -> TaskResult:
        """The task's record."""

    def message(self, task_id: str) -> TaskMessage:
        """The task's message as first enqueued."""

    def cancel(self, task_id: str) -> tuple[bool, TaskState]:
        """Cancel as the table says; return (changed, status after the call)."""

    # -- consumer side ---------------------------------------------------
    def begin(self, message: TaskMessage, owner: str, lease_s: float, max_attempts: int) -> Begun:
        """Count a delivery of ``message`` and start it, as the table says.

        A message that has no record (published by the engine's own API)
        gets one, PENDING, first.
        """

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
        """Move a live task to terminal ``status`` (SUCCESS with ``result_json``,
        FAILURE with ``error`` and ``dead_letter``, or CANCELLED); ``attempts``,
        when given, replaces the count. Returns whether anything changed."""

    def schedule_retry(self, task_id: str, error: TaskError, delay_s: float) -> bool:
        """Set RETRY, deliverable after ``delay_s``; returns whether it changed."""

    def release(
        self, task_ids: Sequence[str], owner: str, *, uncount: bool, delay_s: float = 0.0
    ) -> None:
        """Hand leased tasks back to the queue, deliverable after ``delay_s``."""

    def note_unrecorded(self, task_id: str, owner: str, delay_s: float) -> int:
        """Release a task whose outcome could not be recorded (uncounted) and
        return how many consecutive deliveries of it ended so."""

    def extend_leases(self, task_ids: Sequence[str], owner: str, lease_s: float) -> None:
        """Push the leases of running tasks ``lease_s`` into the future."""

    def write_progress(self, task_id: str, owner: str, progress_json: str) -> bool:
        """Make ``progress_json`` (a :class:`~taskserve.TaskProgress` as JSON) the
        task's progress if it is STARTED under ``owner``'s lease, as the table
        says; return whether it was written. ``status`` returns it as
        ``TaskResult.progress`` from then on, terminal states included."""

    def cancel_requested(self, task_ids: Sequence[str]) -> list[str]:
        """Which of ``task_ids`` have a pending cancel request."""

    def purge_expired(self) -> int:
        """Delete terminal records whose result TTL has passed; return how many
        (stores that expire records by themselves return 0)."""

    def counts(self) -> QueueCounts:
        """Queued and running tasks of the queue."""

    def recent(
        self, statuses: Collection[TaskState] | None, limit: int, before: float | None = None
    ) -> list[TaskResult]:
        """The queue's live records newest first (``created_at``, then id, both
        descending), in ``statuses`` (every state when None; none for an empty
        collection), created strictly before ``before`` (unix time; no bound
        when None), at most ``limit``. A ``limit`` that is not an int from 1 to
        :data:`~taskserve.adapter.MAX_TASK_LIST_LIMIT` raises
        :class:`~taskserve.InvalidArgument` naming it."""

    # -- dead letters ------------------------------------------------------
    def add_dead_letter(self, record: DeadLetter) -> None:
        """Keep a dead letter that belongs to no task record (undecodable bytes)."""

    def dead_letters(
        self, queue: str, limit: int | None, ids: Sequence[str] | None
    ) -> list[DeadLetter]:
        """Records of dead-letter queue ``queue``, oldest first."""

    def delete_dead_letters(self, queue: str, ids: Sequence[str] | None) -> int:
        """Delete records of ``queue`` (all when ``ids`` is None); return how many."""

    def count_dead_letters(self, queue: str | None) -> int | None:
        """How many records ``queue`` holds (None when no queue is configured)."""


@dataclass(frozen=True)
class Republish:
    """A task a ledger wants published now, with the number its message carries."""

    task_id: str
    seq: int
    reason: str
    """``due`` (a retry or hand-back whose time came), ``lease`` (its consumer
    stopped renewing the lease) or ``lost`` (its message was never claimed)."""


@runtime_checkable
class LedgerStore(TaskStore, Protocol):
    """A store beside a message engine (Celery, Dramatiq, RQ) that is the
    ledger of the engine's messages: it knows which tasks still need one, and
    :class:`~taskserve.engine.reconciler.Reconciler` publishes them.

    Retries and hand-backs are not published by the consumer: the store
    schedules them and ``reconcile`` hands them out when due.
    """

    def reconcile(
        self, *, claim_bound_s: float, lease_grace_s: float, engine_empty: bool, every_s: float
    ) -> list[Republish]:
        """The tasks to publish now, each under a new publish number; at most
        one caller per queue gets any every ``every_s`` seconds."""

    def unclaimed(self) -> int:
        """Tasks published and not yet begun."""

    def republished(self) -> dict[str, int]:
        """How many times a task was published again, by reason (``lost``: its
        message was never claimed; ``lease``: its consumer died)."""


@runtime_checkable
class QueueStore(TaskStore, Protocol):
    """A store that is also the queue: consumers take tasks from it directly
    (sqlite, PostgreSQL), served by :class:`~taskserve.engine.polling.PollingConsumer`."""

    def claim(self, owner: str, lease_s: float, max_attempts: int) -> Claimed | None:
        """Take the next deliverable task (expired leases first, then the due one
        of the highest priority, oldest first within a priority) and ``begin`` it
        in the same step; None when none is due."""

    def insert_raw(self, payload: bytes, task_id: str) -> None:
        """Queue bytes that are not a task message (harnesses test undecodable
        messages with it)."""


@runtime_checkable
class WorkerDirectory(Protocol):
    """A store that also keeps which consumers of its queue are alive, with their
    statistics, so that any producer can list them (``health_check_sync`` and
    ``get_metrics_sync`` report them as Ray Serve's Celery adapter reports
    Celery's workers). Consumers beat every few seconds; an entry not renewed
    within its ``ttl_s`` is gone."""

    def beat(self, name: str, stats: Mapping[str, Any], ttl_s: float) -> None:
        """Record consumer ``name`` alive for ``ttl_s`` seconds, with ``stats``."""

    def forget(self, name: str) -> None:
        """Remove consumer ``name`` (it stopped)."""

    def workers(self) -> dict[str, dict[str, Any]]:
        """Name -> statistics of every consumer of the queue alive now."""


@runtime_checkable
class WebhookOutbox(Protocol):
    """A store that keeps the webhook events of its queue's tasks until they
    are delivered (see the module docstring for when entries are written).

    Any consumer of the queue may deliver any entry: :meth:`claim_webhooks`
    leases due entries to one sender, and an entry whose sender died becomes
    due again when its lease runs out. Entries are delivered at least once;
    their ids are the events' stable ids.
    """

    def expect_webhooks(self, settings: WebhookSettings) -> None:
        """Tasks of this queue may ask for webhooks under ``settings``: write
        every entry in the same transaction as its state change, even where
        that costs one (a consumer whose config has a signing secret calls
        this before it starts)."""

    def claim_webhooks(self, owner: str, lease_s: float, limit: int) -> list[WebhookDelivery]:
        """Lease up to ``limit`` entries due now (oldest due first) to ``owner``
        for ``lease_s`` seconds, each with its tries counted (this one
        included)."""

    def finish_webhook(self, event_id: str) -> None:
        """Delete entry ``event_id`` (delivered, or given up)."""

    def retry_webhook(self, event_id: str, owner: str, delay_s: float, error: str) -> None:
        """Make entry ``event_id``, leased by ``owner``, due again after ``delay_s``
        (nothing if another sender has taken it over)."""

    def pending_webhooks(self) -> int:
        """How many entries of the queue wait to be delivered."""
