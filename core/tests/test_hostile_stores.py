"""Hostile records in the Redis store: one dead letter that cannot be decoded
(nested deeper than can be decoded safely, not JSON at all) never breaks a
listing, and a result nested too deep is served as its JSON text."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from taskserve import DeadLetter, DeadLetterKind, TaskError, TaskState
from taskserve.kit import RedisTaskStore
from taskserve.serialization import RawJson, build_message

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def store() -> Iterator[RedisTaskStore]:
    prefix = f"taskserve-hostile-{uuid.uuid4().hex[:12]}"
    made = RedisTaskStore(REDIS_URL, "q", result_ttl_s=60, prefix=prefix)
    yield made
    for key in made.client.scan_iter(f"{prefix}:*"):
        made.client.delete(key)
    made.close()


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def _record(record_id: str, args: object) -> DeadLetter:
    return DeadLetter(
        id=record_id,
        kind=DeadLetterKind.FAILED,
        queue_name="q.failed",
        source_queue="q",
        task_id=f"task-{record_id}",
        task_name="t",
        args=[args],
        kwargs={},
        error=TaskError(type="ValueError", message="bad"),
        attempts=1,
        enqueued_at=1.0,
    )


def test_undecodable_dead_letters_never_break_a_listing(store: RedisTaskStore) -> None:
    store.add_dead_letter(_record("fine", "x"))
    order, records = store.dead_letter_keys("q.failed")
    for record_id, depth in (("deep-300", 300), ("deep-950", 950)):
        text = json.dumps(_record(record_id, 0).model_dump(mode="json") | {"args": nested(depth)})
        store.client.hset(records, record_id, text)
        store.client.zadd(order, {record_id: 2.0})
    store.client.hset(records, "garbage", b"\x80not json")
    store.client.zadd(order, {"garbage": 3.0})
    listed = {r.id: r for r in store.dead_letters("q.failed", None, None)}
    assert set(listed) == {"fine", "deep-300", "deep-950", "garbage"}
    assert listed["fine"].args == ["x"]
    for bad in ("deep-300", "deep-950", "garbage"):
        assert listed[bad].args is None and listed[bad].raw
    assert listed["garbage"].raw == b"\x80not json"
    assert store.delete_dead_letters("q.failed", ["deep-950", "garbage"]) == 2


def test_a_result_nested_too_deep_is_served_as_its_json(store: RedisTaskStore) -> None:
    message = build_message(
        task_name="t", args=[], kwargs={}, queue_name="q", max_payload_bytes=10_000
    )
    store.insert(message, None)
    store.begin(message, "owner", 30, 3)
    store.finish(message.id, TaskState.SUCCESS, result_json=json.dumps(nested(950)))
    result = store.status(message.id).result
    assert isinstance(result, RawJson) and result.startswith("[[[")


def test_a_discarded_task_leaves_no_idempotency_key(store: RedisTaskStore) -> None:
    message = build_message(
        task_name="t", args=[], kwargs={}, queue_name="q", max_payload_bytes=10_000
    )
    assert store.insert(message, "key-1").created
    store.discard(message.id)
    assert list(store.client.scan_iter(f"{store.prefix}:idem:*")) == []
    again = build_message(
        task_name="t", args=[], kwargs={}, queue_name="q", max_payload_bytes=10_000
    )
    assert store.insert(again, "key-1").created
