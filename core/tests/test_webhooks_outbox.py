"""The webhook outbox of the kit's stores (the SQL store and the SQL ledger
store on sqlite, the Redis store on a real Redis) and the sender that
delivers it to a real HTTP receiver: events written in the same step as the
state change they announce, stable ids, progress coalescing, leases, retries
and giving up, and a handler never waiting for a receiver."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from taskserve import (
    REVEAL_SECRETS,
    DeadLetter,
    DeadLetterKind,
    TaskError,
    TaskMessage,
    TaskProcessorConfig,
    TaskState,
    instantiate_adapter_from_config,
)
from taskserve.adapters.sqlite.dialect import SqliteDialect
from taskserve.engine.progress import check_progress, progress_json
from taskserve.kit import LedgerStore, QueueStore, SqlTaskStore, TaskStore, WebhookOutbox
from taskserve.plugins import get_plugin_manager
from taskserve.serialization import build_message
from taskserve.webhooks.events import events_text
from taskserve.webhooks.hooks import SenderWakeHooks
from taskserve.webhooks.sender import WebhookSender
from taskserve.webhooks.settings import WebhookSettings, new_signing_secret
from taskserve_conformance.webhook_receiver import WebhookReceiver

OWNER = "consumer-a"
SECRET = new_signing_secret()
ERROR = TaskError(type="ValueError", message="bad", traceback="Traceback ...")
ALL = ("started", "progress", "succeeded", "failed", "cancelled", "dead_lettered")


def _message(events: tuple[str, ...] | None = ALL) -> TaskMessage:
    return build_message(
        task_name="t",
        args=[1],
        kwargs={},
        queue_name="q",
        max_payload_bytes=10_000,
        webhook_url=None if events is None else "http://127.0.0.1:9/hook",
        webhook_events=events,
    )


def _queued(store: TaskStore, events: tuple[str, ...] | None = ALL) -> TaskMessage:
    message = _message(events)
    assert store.insert(message, None).created
    return message


def _started(store: TaskStore, events: tuple[str, ...] | None = ALL) -> TaskMessage:
    message = _queued(store, events)
    if isinstance(store, QueueStore) and not isinstance(store, LedgerStore):
        claimed = store.claim(OWNER, 30.0, 3)
        assert claimed is not None and claimed.begun.started
    else:
        assert store.begin(message, OWNER, 30.0, 3).started
    return message


def _pending(store: Any) -> list[str]:
    """Ids of every entry due now, leased to a throwaway owner and given back."""
    claimed = store.claim_webhooks("peek", 0.001, 100)
    time.sleep(0.01)
    return sorted(d.id for d in claimed)


def _settings(**fields: Any) -> WebhookSettings:
    values: dict[str, Any] = {
        "signing_secret": SECRET,
        "allow_private_targets": True,
        "timeout_s": 1.0,
        "retry_backoff_s": 0.05,
        "retry_backoff_max_s": 0.1,
        "poll_interval_s": 0.02,
        "progress_interval_s": 0.3,
    }
    return WebhookSettings(**(values | fields))


def _sqlite_queue_with_webhooks(
    tmp_path: Path, queue_name: str, **settings: Any
) -> TaskProcessorConfig:
    """A sqlite queue polled every 10 ms whose webhooks have ``_settings(**settings)``."""
    return TaskProcessorConfig(
        queue_name=queue_name,
        adapter_config={"path": str(tmp_path / "q.db"), "poll_interval_s": 0.01},
        webhooks=_settings(**settings).model_dump(mode="json", context=REVEAL_SECRETS),
    )


# -- what the store writes -------------------------------------------------------------------
def test_every_store_keeps_an_outbox(store: TaskStore) -> None:
    assert isinstance(store, WebhookOutbox)


def test_a_task_without_a_webhook_writes_no_event(store: Any) -> None:
    message = _started(store, events=None)
    store.finish(message.id, TaskState.SUCCESS, result_json="1")
    assert store.pending_webhooks() == 0


def test_started_and_succeeded_are_written_with_their_steps(store: Any) -> None:
    store.expect_webhooks(_settings())
    message = _started(store)
    assert _pending(store) == [f"evt_{message.id}_started_1"]
    store.finish(message.id, TaskState.SUCCESS, result_json='{"pages":3}')
    [delivery] = [d for d in store.claim_webhooks(OWNER, 30.0, 10) if "succeeded" in d.id]
    assert delivery.id == f"evt_{message.id}_succeeded"
    assert (delivery.task_id, delivery.task_name, delivery.queue_name) == (message.id, "t", "q")
    assert (delivery.event.value, delivery.attempt, delivery.deliveries) == ("succeeded", 1, 1)
    assert json.loads(delivery.data or "") == {"result": {"pages": 3}}
    assert delivery.url == "http://127.0.0.1:9/hook"
    assert abs(delivery.created_at - time.time()) < 30
    # A finished task never changes, so nothing announces it twice.
    assert not store.finish(message.id, TaskState.SUCCESS, result_json="2")
    assert store.pending_webhooks() == 2


def test_only_the_events_asked_for_are_written(store: Any) -> None:
    message = _started(store, events=("succeeded",))
    store.finish(message.id, TaskState.SUCCESS, result_json="1")
    assert _pending(store) == [f"evt_{message.id}_succeeded"]


def test_a_cancel_of_a_queued_task_writes_cancelled(store: Any) -> None:
    message = _queued(store)
    assert store.cancel(message.id) == (True, TaskState.CANCELLED)
    assert _pending(store) == [f"evt_{message.id}_cancelled"]


def test_a_cancel_that_wins_over_the_outcome_writes_cancelled(store: Any) -> None:
    message = _started(store, events=("succeeded", "cancelled"))
    assert store.cancel(message.id) == (True, TaskState.STARTED)
    assert store.pending_webhooks() == 0
    store.finish(message.id, TaskState.SUCCESS, result_json="1")
    assert _pending(store) == [f"evt_{message.id}_cancelled"]
    retried = _started(store, events=("cancelled",))
    store.cancel(retried.id)
    assert store.schedule_retry(retried.id, ERROR, 1.0)
    assert f"evt_{retried.id}_cancelled" in _pending(store)


def test_a_failure_with_its_dead_letter_writes_failed_and_dead_lettered(store: Any) -> None:
    message = _started(store, events=("failed", "dead_lettered"))
    record = DeadLetter(
        id="dl-1",
        kind=DeadLetterKind.FAILED,
        queue_name="q.failed",
        source_queue="q",
        task_id=message.id,
        task_name="t",
        args=[1],
        kwargs={},
        error=ERROR,
        attempts=1,
        enqueued_at=message.enqueued_at,
    )
    store.finish(message.id, TaskState.FAILURE, error=ERROR, dead_letter=record, attempts=1)
    found = {d.event.value: d for d in store.claim_webhooks(OWNER, 30.0, 10)}
    assert set(found) == {"failed", "dead_lettered"}
    assert json.loads(found["failed"].data or "") == {
        "error": {"type": "ValueError", "message": "bad"}
    }
    assert json.loads(found["dead_lettered"].data or "")["dead_letter_queue"] == "q.failed"


def _claim_one(store: Any) -> Any:
    """The next entry due, polled for (bounded)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        claimed = store.claim_webhooks(OWNER, 30.0, 10)
        if claimed:
            [one] = claimed
            return one
        time.sleep(0.02)
    pytest.fail("no entry came due")


def test_progress_coalesces_until_tried_then_waits_an_interval(store: Any) -> None:
    store.expect_webhooks(_settings(progress_interval_s=1.0))
    message = _started(store, events=("progress",))
    for fraction in (0.1, 0.2):
        assert store.write_progress(message.id, OWNER, progress_json(check_progress(fraction)))
    [first] = store.claim_webhooks(OWNER, 30.0, 10)
    assert first.id == f"evt_{message.id}_progress_1"
    assert json.loads(first.data or "")["progress"]["fraction"] == 0.2  # the latest report
    store.write_progress(message.id, OWNER, progress_json(check_progress(0.3)))
    store.write_progress(message.id, OWNER, progress_json(check_progress(0.4)))
    assert store.claim_webhooks(OWNER, 30.0, 10) == []  # due one interval after the first
    second = _claim_one(store)
    assert second.id == f"evt_{message.id}_progress_2"
    assert json.loads(second.data or "")["progress"]["fraction"] == 0.4


def test_an_entry_leased_by_a_dead_sender_is_taken_over(store: Any) -> None:
    message = _queued(store, events=("cancelled",))
    store.cancel(message.id)
    [taken] = store.claim_webhooks("dead-sender", 0.5, 10)
    assert store.claim_webhooks(OWNER, 30.0, 10) == []  # leased
    again = _claim_one(store)  # once the lease ran out
    assert (again.id, again.deliveries) == (taken.id, 2)
    store.retry_webhook(taken.id, "dead-sender", 0.0, "late")  # not its lease any more
    assert store.claim_webhooks(OWNER, 30.0, 10) == []
    store.retry_webhook(again.id, OWNER, 0.0, "HTTP 500")
    [third] = store.claim_webhooks(OWNER, 30.0, 10)
    assert third.deliveries == 3
    store.finish_webhook(third.id)
    assert store.pending_webhooks() == 0


def test_the_sql_store_writes_the_event_in_the_step_or_not_at_all(tmp_path: Path) -> None:
    path = str(tmp_path / "q.db")
    store = SqlTaskStore(SqliteDialect(path, 5.0), "q", result_ttl_s=60)
    store.expect_webhooks(_settings())
    message = _started(store, events=("succeeded",))
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TRIGGER broken_outbox BEFORE INSERT ON webhook_outbox"
            " BEGIN SELECT RAISE(ABORT, 'the outbox is broken'); END"
        )
    with pytest.raises(sqlite3.IntegrityError, match="the outbox is broken"):
        store.finish(message.id, TaskState.SUCCESS, result_json="1")
    assert store.status(message.id).status is TaskState.STARTED  # nothing recorded: redelivered
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER broken_outbox")
    assert store.finish(message.id, TaskState.SUCCESS, result_json="1")
    assert _pending(store) == [f"evt_{message.id}_succeeded"]
    store.close()


def test_a_version_6_database_gets_the_webhook_columns_and_outbox(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    old = SqlTaskStore(SqliteDialect(path, 5.0), "q", result_ttl_s=60)
    waiting = _queued(old, events=None)
    old.close()
    with sqlite3.connect(path) as db:  # the layout of version 6
        db.execute("DROP TABLE webhook_outbox")
        for column in ("webhook_url", "webhook_events", "webhook_progress", "webhook_progress_at"):
            db.execute(f"ALTER TABLE tasks DROP COLUMN {column}")
        db.execute("UPDATE schema_version SET version = 6")
    store = SqlTaskStore(SqliteDialect(path, 5.0), "q", result_ttl_s=60)
    try:
        assert store.cancel(waiting.id) == (True, TaskState.CANCELLED)
        assert store.pending_webhooks() == 0
        hooked = _queued(store, events=("cancelled",))
        store.cancel(hooked.id)
        assert _pending(store) == [f"evt_{hooked.id}_cancelled"]
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchall() == [(7,)]
        row = db.execute("SELECT webhook_events FROM tasks WHERE id = ?", (hooked.id,)).fetchone()
        assert row == (events_text(["cancelled"]),)


# -- the sender ------------------------------------------------------------------------------
@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    made = WebhookReceiver()
    yield made
    made.close()


def _hooked(store: Any, receiver: WebhookReceiver) -> TaskMessage:
    message = build_message(
        task_name="t",
        args=[],
        kwargs={},
        queue_name="q",
        max_payload_bytes=10_000,
        webhook_url=receiver.url,
        webhook_events=("cancelled",),
    )
    store.insert(message, None)
    store.cancel(message.id)
    return message


def _send_until_none_pending(store: Any, sender: WebhookSender) -> None:
    """Let ``sender`` send until ``store`` has no pending event (10 s at most), then stop it."""
    try:
        deadline = time.monotonic() + 10
        while store.pending_webhooks() and time.monotonic() < deadline:
            sender.send_due()
            time.sleep(0.02)
    finally:
        sender.stop()


def test_the_sender_delivers_signed_events_and_retries_refusals(
    store: Any, receiver: WebhookReceiver
) -> None:
    receiver.answers = [500, 503]
    message = _hooked(store, receiver)
    sender = WebhookSender(store, _settings(), "q", OWNER)
    _send_until_none_pending(store, sender)
    tries = receiver.received(f"evt_{message.id}_cancelled")
    assert [r.status for r in tries] == [500, 503, 200]
    assert len({r.body for r in tries}) == 1
    event = Webhook(SECRET).verify(tries[-1].body, tries[-1].headers)
    assert event["type"] == "task.cancelled" and event["data"]["task_id"] == message.id
    assert (sender.delivered, sender.refused, sender.given_up) == (1, 2, 0)


def test_the_sender_gives_up_after_the_last_try(
    store: Any, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.answers = [500] * 10
    message = _hooked(store, receiver)
    caplog.set_level(logging.WARNING, "taskserve.webhooks")
    sender = WebhookSender(store, _settings(max_deliveries=3), "q", OWNER)
    _send_until_none_pending(store, sender)
    assert len(receiver.received()) == 3 and sender.given_up == 1
    assert f"gave up on webhook event evt_{message.id}_cancelled" in caplog.text
    assert "after 3 tries" in caplog.text and "HTTP 500" in caplog.text


def test_a_private_target_is_refused_at_delivery(store: Any, receiver: WebhookReceiver) -> None:
    _hooked(store, receiver)  # enqueued while private targets were allowed
    sender = WebhookSender(store, _settings(allow_private_targets=False), "q", OWNER)
    try:
        assert sender.send_due() == 1
    finally:
        sender.stop()
    assert receiver.received() == [] and sender.refused == 1
    assert store.pending_webhooks() == 1  # tried again later, refused again


def test_a_handler_never_waits_for_the_receiver(tmp_path: Path, receiver: WebhookReceiver) -> None:
    config = _sqlite_queue_with_webhooks(tmp_path, "never-waits", timeout_s=30.0)
    adapter = instantiate_adapter_from_config(config)
    adapter.register_task_handle(lambda: "done", "quick")
    receiver.hold()  # no delivery is answered
    adapter.start_consumer()
    events = ["started", "succeeded"]

    def enqueue() -> Any:
        return adapter.enqueue_task_sync("quick", webhook_url=receiver.url, webhook_events=events)

    try:
        tasks = [enqueue()]
        deadline = time.monotonic() + 10
        while not receiver.received() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.received(), "no delivery was under way"
        tasks += [enqueue(), enqueue()]  # while deliveries hang
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            statuses = [adapter.get_task_status_sync(t.id).status for t in tasks]
            if all(s is TaskState.SUCCESS for s in statuses):
                break
            time.sleep(0.02)
        assert statuses == [TaskState.SUCCESS] * 3, "a task waited for its webhook"
        receiver.release()
        deadline = time.monotonic() + 10
        while len(receiver.ids()) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(receiver.ids()) == 6
    finally:
        receiver.release()
        adapter.shutdown()


def test_the_sender_runs_beside_the_consumer_only_with_a_secret(tmp_path: Path) -> None:
    threads = {t.name for t in threading.enumerate()}
    plain = TaskProcessorConfig(queue_name="plain", adapter_config={"path": str(tmp_path / "a.db")})
    adapter = instantiate_adapter_from_config(plain)
    adapter.register_task_handle(lambda: None, "noop")
    adapter.start_consumer()
    try:
        consumer: Any = adapter.running_consumer
        assert consumer.webhooks is None
        assert not any(
            t.name.startswith("taskserve-webhooks")
            for t in threading.enumerate()
            if t.name not in threads
        )
    finally:
        adapter.shutdown()


def test_the_queues_lifecycle_events_wake_the_sender(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """With a poll interval of a minute, events are still sent as their tasks
    move: the sender is a lifecycle hook plugin while it runs, and only then."""
    config = _sqlite_queue_with_webhooks(tmp_path, "woken", poll_interval_s=60.0)
    adapter = instantiate_adapter_from_config(config)
    adapter.register_task_handle(lambda: "done", "quick")
    adapter.start_consumer()
    manager = get_plugin_manager()

    def registered() -> int:
        return sum(isinstance(p, SenderWakeHooks) for p in manager.get_plugins())

    def delivered(count: int) -> None:
        tasks = [
            adapter.enqueue_task_sync(
                "quick", webhook_url=receiver.url, webhook_events=["succeeded"]
            )
            for _ in range(count)
        ]
        expected = {f"evt_{t.id}_succeeded" for t in tasks}
        deadline = time.monotonic() + 20
        while not expected <= set(receiver.ids()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert expected <= set(receiver.ids()), "the sender waited for its poll"

    try:
        assert registered() == 1
        delivered(1)  # sent, then the sender waits (up to its poll interval)
        delivered(3)  # woken by the tasks' events
    finally:
        adapter.shutdown()
    assert registered() == 0
