"""The store contract (``taskserve.engine.store``), row by row of its
transition table, against the stores of the kit: the SQL store on sqlite, the
SQL ledger store on sqlite and the Redis store on a real Redis. The ledgers
(publish numbers, reconcile) of the Redis and SQL ledger stores have tests of
their own at the end."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskserve import (
    DeadLetter,
    DeadLetterKind,
    TaskError,
    TaskIdInUse,
    TaskMessage,
    TaskNotFound,
    TaskProcessorConfig,
    TaskState,
    instantiate_adapter_from_config,
)
from taskserve.adapters.sqlite.dialect import SqliteDialect
from taskserve.kit import (
    SCHEMA_VERSION,
    LedgerStore,
    QueueStore,
    Reconciler,
    RedisTaskStore,
    SqlLedgerStore,
    SqlTaskStore,
    TaskStore,
    WorkerDirectory,
)
from taskserve.serialization import build_message
from taskserve_conformance.waiting import wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
OWNER = "consumer-a"
DELAY_S = 2.0
"""Delay of the delayed task: far longer than a loaded machine may stall between
its insert and the claim that must not take it yet."""
DUE_WAIT_S = 10.0
"""Bound, past its due time, for the delayed task to be handed out."""
ERROR = TaskError(type="ValueError", message="bad", traceback="Traceback ...")


@pytest.fixture(params=["redis", "sqlite-ledger"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A ledger store, and a second handle on the same queue."""
    if request.param == "sqlite-ledger":
        path = str(tmp_path / "ledger.db")
        first = SqlLedgerStore(SqliteDialect(path, 5.0), "q", result_ttl_s=60)
        second = SqlLedgerStore(SqliteDialect(path, 5.0), "q", result_ttl_s=60)
        yield first, second
        first.close()
        second.close()
        return
    prefix = f"taskserve-test-{uuid.uuid4().hex[:12]}"
    first = RedisTaskStore(REDIS_URL, "q", result_ttl_s=60, prefix=prefix)
    second = RedisTaskStore(REDIS_URL, "q", result_ttl_s=60, prefix=prefix)
    yield first, second
    for key in first.client.scan_iter(f"{prefix}:*"):
        first.client.delete(key)
    first.close()
    second.close()


@pytest.fixture
def ledger_store(ledger: tuple[Any, Any]) -> Any:
    return ledger[0]


@pytest.fixture
def redis_store(tmp_path: Path) -> Iterator[RedisTaskStore]:
    prefix = f"taskserve-test-{uuid.uuid4().hex[:12]}"
    store = RedisTaskStore(REDIS_URL, "q", result_ttl_s=60, prefix=prefix)
    yield store
    for key in store.client.scan_iter(f"{prefix}:*"):
        store.client.delete(key)
    store.close()


def _message(*args: object) -> TaskMessage:
    return build_message(
        task_name="t",
        args=list(args),
        kwargs={"k": [1, {"x": None}]},
        queue_name="q",
        max_payload_bytes=10_000,
    )


def _queued(store: TaskStore, *args: object) -> TaskMessage:
    message = _message(*args)
    assert store.insert(message, None).created
    return message


def _is_queue(store: TaskStore) -> bool:
    """A store consumers claim tasks from (a ledger store is fed by its engine)."""
    return isinstance(store, QueueStore) and not isinstance(store, LedgerStore)


def _started(store: TaskStore, lease_s: float = 30.0, max_attempts: int = 3) -> TaskMessage:
    message = _queued(store)
    if _is_queue(store):
        claimed = store.claim(OWNER, lease_s, max_attempts)
        assert claimed is not None and claimed.task_id == message.id
        assert claimed.begun.started
    else:
        assert store.begin(message, OWNER, lease_s, max_attempts).started
    return message


def _reconcile(store: Any, empty: bool = False, bound: float = 0.0) -> list[Any]:
    time.sleep(0.005)  # a fresh lock window
    return store.reconcile(
        claim_bound_s=bound, lease_grace_s=0.0, engine_empty=empty, every_s=0.001
    )


def _dead_letter(message: TaskMessage) -> DeadLetter:
    return DeadLetter(
        id=f"dl-{uuid.uuid4()}",
        kind=DeadLetterKind.FAILED,
        queue_name="failed",
        source_queue="q",
        task_id=message.id,
        task_name=message.name,
        args=message.args,
        kwargs=message.kwargs,
        error=ERROR,
        attempts=1,
        enqueued_at=message.enqueued_at,
    )


def test_every_store_implements_the_contract(store: TaskStore) -> None:
    assert isinstance(store, TaskStore)
    assert isinstance(store, WorkerDirectory)
    assert _is_queue(store) != isinstance(store, LedgerStore)


def test_unknown_ids_raise_task_not_found(store: TaskStore) -> None:
    for call in (store.status, store.cancel, store.message):
        with pytest.raises(TaskNotFound):
            call("never-enqueued")


def test_insert_is_pending_and_keeps_the_message(store: TaskStore) -> None:
    message = _message(1, "two", {"nested": [1.5, True, None]})
    inserted = store.insert(message, None)
    assert inserted.created and inserted.result.status is TaskState.PENDING
    assert store.status(message.id).status is TaskState.PENDING
    assert store.status(message.id).attempts == 0
    assert store.message(message.id) == message


def test_an_id_in_use_is_refused(store: TaskStore) -> None:
    message = _queued(store)
    with pytest.raises(TaskIdInUse, match=message.id):
        store.insert(message, None)


def test_idempotency_key_returns_the_first_task(store: TaskStore) -> None:
    first = store.insert(_message(1), "key")
    again = store.insert(_message(2), "key")
    assert first.created and not again.created and again.result.id == first.result.id


def test_cancel_of_a_queued_task_is_final(store: TaskStore) -> None:
    message = _queued(store)
    assert store.cancel(message.id) == (True, TaskState.CANCELLED)
    assert store.cancel(message.id) == (False, TaskState.CANCELLED)
    if isinstance(store, QueueStore):
        assert store.claim(OWNER, 30, 3) is None
    else:
        begun = store.begin(message, OWNER, 30, 3)
        assert not begun.started and begun.attempt == 0
    assert store.status(message.id).status is TaskState.CANCELLED


def test_cancel_of_a_running_task_is_a_request_that_wins(store: TaskStore) -> None:
    finished, retried = _started(store), _started(store)
    for message in (finished, retried):
        assert store.cancel(message.id) == (True, TaskState.STARTED)
    assert sorted(store.cancel_requested([finished.id, retried.id, "other"])) == sorted(
        [finished.id, retried.id]
    )
    store.finish(finished.id, TaskState.SUCCESS, result_json='"late"')
    store.schedule_retry(retried.id, ERROR, 0.0)
    for message in (finished, retried):
        status = store.status(message.id)
        assert status.status is TaskState.CANCELLED and status.result is None


def test_terminal_status_is_never_overwritten(store: TaskStore) -> None:
    message = _started(store)
    assert store.finish(message.id, TaskState.SUCCESS, result_json='{"r":1}')
    assert not store.finish(message.id, TaskState.FAILURE, error=ERROR)
    assert not store.schedule_retry(message.id, ERROR, 0.0)
    store.release([message.id], OWNER, uncount=True)
    assert store.cancel(message.id) == (False, TaskState.SUCCESS)
    status = store.status(message.id)
    assert status.status is TaskState.SUCCESS and status.result == {"r": 1}
    assert status.error is None and status.attempts == 1


def test_attempts_are_counted_at_begin_and_taken_back_by_uncounted_release(
    store: TaskStore,
) -> None:
    message = _started(store)
    assert store.status(message.id).attempts == 1
    store.release([message.id], OWNER, uncount=True)
    after = store.status(message.id)
    assert after.status is TaskState.PENDING and after.attempts == 0
    store.release([message.id], OWNER, uncount=True)  # not running: nothing happens
    assert store.status(message.id).attempts == 0


def test_a_delivery_over_the_budget_is_counted_but_not_started(store: TaskStore) -> None:
    message = _queued(store)
    for attempt in (1, 2):
        if isinstance(store, QueueStore):
            claimed = store.claim(OWNER, 0.01, max_attempts=2)
            assert claimed is not None
            begun = claimed.begun
            time.sleep(0.02)  # the lease runs out: the task is deliverable again
        else:
            begun = store.begin(message, OWNER, 0.01, max_attempts=2)
            time.sleep(0.02)
        assert begun.attempt == attempt and begun.started
    if isinstance(store, QueueStore):
        claimed = store.claim(OWNER, 30, max_attempts=2)
        assert claimed is not None
        begun = claimed.begun
    else:
        begun = store.begin(message, OWNER, 30, max_attempts=2)
    assert begun.attempt == 3 and not begun.started


def test_a_running_task_is_not_begun_twice_while_its_lease_lives(store: TaskStore) -> None:
    message = _started(store, lease_s=30)
    if isinstance(store, QueueStore):
        assert store.claim("consumer-b", 30, 3) is None
        return
    begun = store.begin(message, "consumer-b", 30, 3)
    assert begun.running_elsewhere and not begun.started and begun.attempt == 0
    assert begun.lease_deadline is not None and begun.lease_deadline > time.time()
    assert store.status(message.id).attempts == 1


def test_an_expired_lease_makes_the_task_deliverable_again(store: TaskStore) -> None:
    message = _started(store, lease_s=0.05)
    store.extend_leases([message.id], OWNER, 30)
    time.sleep(0.1)
    assert store.counts().in_flight == 1
    store.extend_leases([message.id], OWNER, 0.01)
    time.sleep(0.05)
    assert store.counts().in_flight == 0
    if isinstance(store, QueueStore):
        claimed = store.claim("consumer-b", 30, 3)
        assert claimed is not None and claimed.begun.attempt == 2
    else:
        assert store.begin(message, "consumer-b", 30, 3).attempt == 2


def test_expired_leases_are_claimed_before_older_queued_tasks(tmp_path: Path) -> None:
    store = SqlTaskStore(SqliteDialect(str(tmp_path / "q.db"), 5.0), "q", result_ttl_s=60)
    backlog = [_queued(store) for _ in range(3)]
    crashed = _queued(store)
    for _ in range(4):
        store.claim(OWNER, 30, 3)
    store.release([m.id for m in backlog], OWNER, uncount=True)
    store.extend_leases([crashed.id], OWNER, 0.01)
    time.sleep(0.05)
    claimed = store.claim("consumer-b", 30, 3)
    assert claimed is not None and claimed.task_id == crashed.id
    store.close()


def _sql_store(tmp_path: Path) -> SqlTaskStore:
    return SqlTaskStore(SqliteDialect(str(tmp_path / "q.db"), 5.0), "q", result_ttl_s=60)


def _queued_at(store: TaskStore, priority: int | None, **fields: Any) -> TaskMessage:
    message = dataclasses.replace(_message(priority), priority=priority, **fields)
    assert store.insert(message, None).created
    return message


def _claim_all(store: SqlTaskStore) -> list[str]:
    taken = []
    while (claimed := store.claim(OWNER, 30, 3)) is not None:
        taken.append(claimed.task_id)
    return taken


def test_the_claim_takes_the_highest_priority_first(tmp_path: Path) -> None:
    store = _sql_store(tmp_path)
    sent = [_queued_at(store, p) for p in (None, 5, 9, 0, 9, 5, None, 1)]
    assert store.message(sent[2].id).priority == 9  # kept in the payload, for a retry
    priority_of = {m.id: m.priority or 0 for m in sent}
    order = [priority_of[task_id] for task_id in _claim_all(store)]
    assert order == [9, 9, 5, 5, 1, 0, 0, 0]
    store.close()


def test_a_task_not_due_yet_waits_whatever_its_priority(tmp_path: Path) -> None:
    store = _sql_store(tmp_path)
    delayed = _queued_at(store, 9, not_before=time.time() + DELAY_S)
    plain = _queued_at(store, None)
    assert _claim_all(store) == [plain.id]
    due = wait_until(
        lambda: _claim_all(store), DELAY_S + DUE_WAIT_S, "the due task was not claimed"
    )
    assert due == [delayed.id]
    store.close()


def test_retries_and_hand_backs_keep_their_priority(tmp_path: Path) -> None:
    store = _sql_store(tmp_path)
    low, high = _queued_at(store, 1), _queued_at(store, 7)
    claimed = store.claim(OWNER, 30, 3)
    assert claimed is not None and claimed.task_id == high.id
    store.release([high.id], OWNER, uncount=True)
    claimed = store.claim(OWNER, 30, 3)
    assert claimed is not None and claimed.task_id == high.id
    assert store.schedule_retry(high.id, ERROR, 0.0)
    assert _claim_all(store) == [high.id, low.id]
    store.close()


def test_an_expired_lease_comes_before_a_queued_task_of_a_higher_priority(
    tmp_path: Path,
) -> None:
    store = _sql_store(tmp_path)
    crashed = _queued_at(store, 0)
    assert store.claim(OWNER, 0.01, 3) is not None
    urgent = _queued_at(store, 9)
    time.sleep(0.05)
    assert _claim_all(store) == [crashed.id, urgent.id]
    store.close()


def test_a_version_4_sqlite_database_gets_the_priority_column(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    old = SqlTaskStore(SqliteDialect(path, 5.0), "q", result_ttl_s=60)
    waiting = [_queued(old) for _ in range(2)]
    old.close()
    with sqlite3.connect(path) as db:  # the layout of version 4
        db.execute("DROP INDEX tasks_queued")
        db.execute("DROP INDEX tasks_leased")
        db.execute("ALTER TABLE tasks DROP COLUMN priority")
        db.execute("ALTER TABLE dead_letters DROP COLUMN priority")
        db.execute(
            "CREATE INDEX tasks_queued ON tasks (queue, visible_at)"
            " WHERE status IN ('PENDING', 'RETRY')"
        )
        db.execute(
            "CREATE INDEX tasks_leased ON tasks (queue, visible_at) WHERE status = 'STARTED'"
        )
        for column in ("webhook_url", "webhook_events", "webhook_progress", "webhook_progress_at"):
            db.execute(f"ALTER TABLE tasks DROP COLUMN {column}")  # nor the webhook (version 7)
        db.execute("UPDATE schema_version SET version = 4")
    store = SqlTaskStore(SqliteDialect(path, 5.0), "q", result_ttl_s=60)
    try:
        urgent = _queued_at(store, 3)
        assert _claim_all(store)[0] == urgent.id  # the rows of version 4 have priority 0
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        columns = [r[1] for r in db.execute("PRAGMA table_info(dead_letters)")]
        assert "priority" in columns
        rows = db.execute("SELECT id, priority FROM tasks").fetchall()
        assert sorted(rows) == sorted([*((m.id, 0) for m in waiting), (urgent.id, 3)])
        for name in ("tasks_queued", "tasks_leased"):
            [(sql,)] = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,))
            assert "(queue, priority DESC, visible_at)" in sql


def test_failure_and_dead_letter_are_written_together(store: TaskStore) -> None:
    message = _started(store)
    record = _dead_letter(message)
    assert store.finish(message.id, TaskState.FAILURE, error=ERROR, dead_letter=record, attempts=1)
    assert store.status(message.id).error == ERROR
    assert store.dead_letters("failed", None, None) == [record]
    assert store.dead_letters("failed", None, [record.id]) == [record]
    assert store.count_dead_letters("failed") == 1
    assert store.count_dead_letters(None) is None
    assert store.delete_dead_letters("failed", [record.id]) == 1
    assert store.dead_letters("failed", None, None) == []


def test_dead_letters_are_listed_oldest_first_and_purged(store: TaskStore) -> None:
    records = [_dead_letter(_message(i)) for i in range(3)]
    for record in records:
        store.add_dead_letter(record)
    assert [r.id for r in store.dead_letters("failed", 2, None)] == [r.id for r in records[:2]]
    assert store.delete_dead_letters("failed", None) == 3
    assert store.count_dead_letters("failed") == 0


def test_a_retry_waits_for_its_delay(store: TaskStore) -> None:
    message = _started(store)
    assert store.schedule_retry(message.id, ERROR, 30.0)
    status = store.status(message.id)
    assert status.status is TaskState.RETRY and status.error == ERROR
    assert store.counts().queued == 1 and store.counts().in_flight == 0
    if isinstance(store, QueueStore):
        assert store.claim(OWNER, 30, 3) is None


def test_unrecorded_outcomes_are_counted_in_a_row(store: TaskStore) -> None:
    message = _queued(store)
    for expected in (1, 2, 3):
        if isinstance(store, QueueStore):
            assert store.claim(OWNER, 30, 5) is not None
        else:
            assert store.begin(message, OWNER, 30, 5).started
        assert store.note_unrecorded(message.id, OWNER, 0.0) == expected
        assert store.status(message.id).attempts == 0


def test_finished_records_expire_after_the_ttl(store: TaskStore, tmp_path: Path) -> None:
    if isinstance(store, RedisTaskStore):
        short: TaskStore = RedisTaskStore(REDIS_URL, "q", result_ttl_s=1, prefix=store.prefix)
    else:
        short = SqlTaskStore(SqliteDialect(str(tmp_path / "q.db"), 5.0), "q", result_ttl_s=0.2)
    message = _started(short)
    short.finish(message.id, TaskState.SUCCESS, result_json="1")
    assert short.status(message.id).status is TaskState.SUCCESS
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            short.status(message.id)
        except TaskNotFound:
            break
        time.sleep(0.05)
    with pytest.raises(TaskNotFound):
        short.status(message.id)
    short.purge_expired()
    short.close()


def test_a_key_of_an_expired_task_is_free_again(store: TaskStore, tmp_path: Path) -> None:
    if isinstance(store, RedisTaskStore):
        short: TaskStore = RedisTaskStore(REDIS_URL, "q", result_ttl_s=1, prefix=store.prefix)
    else:
        short = SqlTaskStore(SqliteDialect(str(tmp_path / "q.db"), 5.0), "q", result_ttl_s=0.2)
    first = _message()
    short.insert(first, "key")
    short.cancel(first.id)
    deadline = time.monotonic() + 5
    again = short.insert(_message(), "key")
    while not again.created and time.monotonic() < deadline:
        time.sleep(0.05)
        again = short.insert(_message(), "key")
    assert again.created and again.result.id != first.id
    short.close()


def test_a_delayed_task_is_pending_and_not_deliverable_before_it_is_due(
    store: TaskStore,
) -> None:
    message = dataclasses.replace(_message(), not_before=time.time() + DELAY_S)
    inserted = store.insert(message, None)
    assert inserted.created and store.status(message.id).status is TaskState.PENDING
    if _is_queue(store):
        assert isinstance(store, QueueStore)
        assert store.claim(OWNER, 30, 3) is None
        claimed = wait_until(
            lambda: store.claim(OWNER, 30, 3), DELAY_S + DUE_WAIT_S, "the due task was not claimed"
        )
        assert claimed.task_id == message.id
    else:
        assert inserted.scheduled and inserted.seq is None  # not to be published now
        assert isinstance(store, LedgerStore)
        assert store.counts().queued == 1 and store.unclaimed() == 0
        assert _reconcile(store) == []
        [due] = wait_until(
            lambda: _reconcile(store), DELAY_S + DUE_WAIT_S, "the due task was not reconciled"
        )
        assert (due.task_id, due.reason) == (message.id, "due")


def test_due_at_is_read_while_a_task_waits_for_a_time(store: TaskStore) -> None:
    running = _started(store)
    assert store.status(running.id).due_at is None
    before = time.time()
    assert store.schedule_retry(running.id, ERROR, 30.0)
    retry = store.status(running.id)
    assert retry.due_at is not None and before + 29.9 <= retry.due_at <= time.time() + 30.1
    handed_back = _started(store)
    store.release([handed_back.id], OWNER, uncount=True, delay_s=5.0)
    assert store.status(handed_back.id).due_at == pytest.approx(time.time() + 5.0, abs=1.0)
    plain = _message()
    assert store.insert(plain, None).result.due_at is None
    assert store.status(plain.id).due_at is None
    due = time.time() + 60
    delayed = dataclasses.replace(_message(), not_before=due)
    assert store.insert(delayed, None).result.due_at == pytest.approx(due)
    assert store.status(delayed.id).due_at == pytest.approx(due, abs=0.001)
    store.cancel(delayed.id)
    assert store.status(delayed.id).due_at is None


def test_a_delayed_task_can_be_cancelled_while_it_waits(store: TaskStore) -> None:
    message = dataclasses.replace(_message(), not_before=time.time() + 0.2)
    store.insert(message, None)
    assert store.cancel(message.id) == (True, TaskState.CANCELLED)
    time.sleep(0.25)
    if _is_queue(store):
        assert isinstance(store, QueueStore)
        assert store.claim(OWNER, 30, 3) is None
    else:
        assert isinstance(store, LedgerStore)
        assert _reconcile(store, empty=True) == []
    assert store.counts().queued == 0


def test_consumers_alive_are_listed_until_they_stop_or_their_beat_lapses(
    store: TaskStore,
) -> None:
    assert isinstance(store, WorkerDirectory)
    assert store.workers() == {}
    store.beat("celery@a", {"pool": {"max-concurrency": 2}}, 30.0)
    store.beat("celery@b", {"total": {"t": 1}}, 0.1)
    assert store.workers() == {
        "celery@a": {"pool": {"max-concurrency": 2}},
        "celery@b": {"total": {"t": 1}},
    }
    store.beat("celery@a", {"pool": {"max-concurrency": 3}}, 30.0)
    time.sleep(0.15)
    assert store.workers() == {"celery@a": {"pool": {"max-concurrency": 3}}}
    store.forget("celery@a")
    assert store.workers() == {}


# -- the ledgers (Redis, SQL) ------------------------------------------------------
def test_each_publish_gets_a_number_and_a_begun_one_leaves_the_ledger(
    ledger_store: Any,
) -> None:
    first, second = _message(), _message()
    one, two = ledger_store.insert(first, None), ledger_store.insert(second, None)
    assert one.seq is not None and two.seq == one.seq + 1
    assert ledger_store.unclaimed() == 2
    ledger_store.begin(first.with_seq(one.seq), OWNER, 30, 3)
    assert ledger_store.unclaimed() == 1


def test_a_message_passed_by_later_ones_is_published_again(ledger_store: Any) -> None:
    lost, later = _message(), _message()
    ledger_store.insert(lost, None)
    seq = ledger_store.insert(later, None).seq
    ledger_store.begin(later.with_seq(seq), OWNER, 30, 3)
    assert _reconcile(ledger_store, bound=30.0) == []  # passed too recently
    [again] = _reconcile(ledger_store)
    assert (again.task_id, again.reason) == (lost.id, "lost") and again.seq > (seq or 0)
    assert _reconcile(ledger_store) == []  # its new number is not passed yet
    assert ledger_store.republished() == {"lost": 1, "lease": 0}


def test_a_task_waiting_behind_a_backlog_is_never_published_again(
    ledger_store: Any,
) -> None:
    for _ in range(3):
        ledger_store.insert(_message(), None)
    assert _reconcile(ledger_store) == []
    assert _reconcile(ledger_store, empty=True, bound=30.0) == []
    assert len(_reconcile(ledger_store, empty=True)) == 3  # the engine says it holds none


def test_retries_are_published_when_due(ledger_store: Any) -> None:
    message = _message()
    seq = ledger_store.insert(message, None).seq
    ledger_store.begin(message.with_seq(seq), OWNER, 30, 3)
    ledger_store.schedule_retry(message.id, ERROR, 0.2)
    assert ledger_store.counts().queued == 1
    assert _reconcile(ledger_store) == []
    time.sleep(0.25)
    [due] = _reconcile(ledger_store)
    assert (due.task_id, due.reason) == (message.id, "due")
    assert ledger_store.counts().queued == 0 and ledger_store.unclaimed() == 1


def test_a_task_whose_lease_ran_out_is_published_again(ledger_store: Any) -> None:
    message = _message()
    seq = ledger_store.insert(message, None).seq
    ledger_store.begin(message.with_seq(seq), OWNER, 0.01, 3)
    time.sleep(0.05)
    [again] = _reconcile(ledger_store)
    assert (again.task_id, again.reason) == (message.id, "lease")
    begun = ledger_store.begin(message.with_seq(again.seq), "consumer-b", 30, 3)
    assert begun.started and begun.attempt == 2


def test_a_low_priority_task_behind_higher_ones_is_never_taken_for_lost(
    ledger_store: Any,
) -> None:
    """Engines deliver higher priorities first: a begun message of a higher
    priority passes nothing, a begun one of the lowest passes what came before."""
    waiting = _message()
    ledger_store.insert(waiting, None)
    for _ in range(2):
        urgent = dataclasses.replace(_message(), priority=9)
        seq = ledger_store.insert(urgent, None).seq
        ledger_store.begin(urgent.with_seq(seq), OWNER, 30, 3)
    assert _reconcile(ledger_store) == []
    later = _message()
    seq = ledger_store.insert(later, None).seq
    ledger_store.begin(later.with_seq(seq), OWNER, 30, 3)
    [again] = _reconcile(ledger_store)
    assert (again.task_id, again.reason) == (waiting.id, "lost")


def test_a_message_begun_out_of_order_without_a_number_passes_nothing(
    ledger_store: Any,
) -> None:
    """A task published again at the head of the queue carries no number: begun
    before the backlog, it must not make the backlog look lost."""
    backlog = [_message() for _ in range(3)]
    for message in backlog:
        ledger_store.insert(message, None)
    ahead = _message()
    ledger_store.insert(ahead, None)
    ledger_store.begin(ahead.with_seq(None), OWNER, 30, 3)
    assert ledger_store.unclaimed() == 3
    assert _reconcile(ledger_store) == []


def test_the_reconciler_publishes_crashed_tasks_at_the_head_and_retries_at_the_tail(
    ledger_store: Any,
) -> None:
    config = TaskProcessorConfig(queue_name="q", adapter="sqlite", lease_s=0.4)
    tail: list[TaskMessage] = []
    head: list[TaskMessage] = []
    reconciler = Reconciler(ledger_store, config, tail.append, None, head.append)
    crashed, retried = _message(), _message()
    for message in (crashed, retried):
        seq = ledger_store.insert(message, None).seq
        ledger_store.begin(message.with_seq(seq), OWNER, 0.01, 3)
    ledger_store.schedule_retry(retried.id, ERROR, 0.0)
    time.sleep(0.3)
    assert reconciler.tick() == 2
    assert [(m.id, m.seq) for m in head] == [(crashed.id, None)]
    assert [m.id for m in tail] == [retried.id] and tail[0].seq is not None


def test_a_crashed_task_whose_new_message_never_came_is_published_once_more(
    ledger_store: Any,
) -> None:
    """The reconciler hands out a crashed task and dies (or its publish fails):
    the ledger still brings the task back, not leaving it STARTED for ever."""
    message = _message()
    seq = ledger_store.insert(message, None).seq
    ledger_store.begin(message.with_seq(seq), OWNER, 0.01, 3)
    time.sleep(0.05)
    [handed_out] = _reconcile(ledger_store)
    assert handed_out.reason == "lease"
    again = _reconcile(ledger_store, empty=True) or _reconcile(ledger_store, empty=True)
    assert [r.task_id for r in again] == [message.id]
    assert ledger_store.begin(message.with_seq(again[0].seq), "consumer-b", 30, 3).started


def test_a_cancelled_task_leaves_the_ledger(ledger_store: Any) -> None:
    message = _message()
    ledger_store.insert(message, None)
    ledger_store.cancel(message.id)
    assert ledger_store.unclaimed() == 0
    assert _reconcile(ledger_store, empty=True) == []


def test_only_one_consumer_reconciles_at_a_time(ledger: tuple[Any, Any]) -> None:
    ledger_store, other = ledger
    ledger_store.insert(_message(), None)
    time.sleep(0.005)
    first = ledger_store.reconcile(
        claim_bound_s=0.0, lease_grace_s=0.0, engine_empty=True, every_s=5.0
    )
    second = other.reconcile(claim_bound_s=0.0, lease_grace_s=0.0, engine_empty=True, every_s=5.0)
    assert len(first) == 1 and second == []


def test_refused_dead_letter_write_leaves_the_status(redis_store: RedisTaskStore) -> None:
    message = _started(redis_store)
    redis_store.client.set(f"{redis_store.prefix}:dlq:failed:records", "not a hash")
    with pytest.raises(Exception, match="WRONGTYPE"):
        redis_store.finish(
            message.id, TaskState.FAILURE, error=ERROR, dead_letter=_dead_letter(message)
        )
    assert redis_store.status(message.id).status is TaskState.STARTED


def test_a_retried_task_keeps_its_priority(tmp_path: Path) -> None:
    config = TaskProcessorConfig(
        queue_name=f"q_{uuid.uuid4().hex[:8]}", adapter_config={"path": str(tmp_path / "t.db")}
    )
    adapter = instantiate_adapter_from_config(config)
    try:
        task = adapter.enqueue_task_sync("echo", priority=7)
        assert adapter.cancel_task_sync(task.id).cancelled
        again = adapter.retry_task_sync(task.id)
        store = SqlTaskStore(
            SqliteDialect(str(tmp_path / "t.db"), 5.0), config.queue_name, result_ttl_s=60
        )
        assert store.message(again.id).priority == 7
    finally:
        adapter.shutdown()


def test_a_dead_letter_keeps_its_task_priority_for_a_redrive(tmp_path: Path) -> None:
    config = TaskProcessorConfig(
        queue_name=f"q_{uuid.uuid4().hex[:8]}",
        failed_task_queue_name="failed",
        max_retries=0,
        adapter_config={"path": str(tmp_path / "t.db")},
    )
    adapter = instantiate_adapter_from_config(config)

    def fail() -> None:
        raise ValueError("bad")

    adapter.register_task_handle(fail, "fail")
    try:
        adapter.start_consumer()
        task = adapter.enqueue_task_sync("fail", priority=8)
        deadline = time.monotonic() + 10
        while not adapter.list_dead_letters_sync() and time.monotonic() < deadline:
            time.sleep(0.02)
        [record] = adapter.list_dead_letters_sync()
        assert (record.task_id, record.priority) == (task.id, 8)
        adapter.stop_consumer(5)
        [again] = adapter.redrive_dead_letters_sync()
        store = SqlTaskStore(
            SqliteDialect(str(tmp_path / "t.db"), 5.0), config.queue_name, result_ttl_s=60
        )
        assert store.message(again.id).priority == 8
    finally:
        adapter.shutdown()
