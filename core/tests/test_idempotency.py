"""The idempotency-key rule, on the sqlite adapter and on a Redis-store adapter
(RQ): a key names its first task while that task's record lives; the same key
with another payload is refused; once the record expired the key is free;
concurrent submits with one key make one task; a publish that failed leaves no
key behind. Plus the library's clear errors for wrong argument types."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskserve import (
    BrokerUnavailable,
    ConfigError,
    IdempotencyKeyReused,
    InvalidArgument,
    PayloadError,
    TaskNotFound,
    TaskProcessorAdapter,
    TaskProcessorConfig,
    TaskState,
    instantiate_adapter_from_config,
)
from taskserve.kit import StoreAdapter

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["sqlite", "redis"])
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskProcessorAdapter]:
    common: dict[str, Any] = {
        "queue_name": f"idem-{uuid.uuid4().hex[:8]}",
        "result_ttl_s": 1,
        "failed_task_queue_name": "idem.failed",
    }
    if request.param == "sqlite":
        config = TaskProcessorConfig(**common, adapter_config={"path": str(tmp_path / "t.db")})
    else:
        pytest.importorskip("taskserve_rq")
        prefix = f"idem-{uuid.uuid4().hex[:8]}"
        config = TaskProcessorConfig(
            **common, adapter="rq", adapter_config={"redis_url": REDIS_URL, "key_prefix": prefix}
        )
    made = instantiate_adapter_from_config(config)
    yield made
    if request.param == "redis":
        assert isinstance(made, StoreAdapter)
        client = made.store.client  # type: ignore[attr-defined]
        for pattern in (f"{config.adapter_config.key_prefix}:*", f"rq:*{config.queue_name}*"):
            for key in client.scan_iter(pattern):
                client.delete(key)
    made.shutdown()


def test_the_same_key_and_payload_return_the_first_task(adapter: TaskProcessorAdapter) -> None:
    first = adapter.enqueue_task_sync("t", [1], {"a": [1.5]}, idempotency_key="k1")
    again = adapter.enqueue_task_sync("t", [1], {"a": [1.5]}, idempotency_key="k1")
    assert again.id == first.id


@pytest.mark.parametrize(
    ("name", "args", "kwargs"),
    [("t", [2], {}), ("other", [1], {}), ("t", [True], {}), ("t", [1.0], {}), ("t", [1], {"x": 1})],
)
def test_the_same_key_with_another_payload_is_refused(
    adapter: TaskProcessorAdapter, name: str, args: list[Any], kwargs: dict[str, Any]
) -> None:
    first = adapter.enqueue_task_sync("t", [1], {}, idempotency_key="k2")
    with pytest.raises(IdempotencyKeyReused, match=first.id) as info:
        adapter.enqueue_task_sync(name, args, kwargs, idempotency_key="k2")
    assert isinstance(info.value, PayloadError)  # HTTP 422


def test_the_key_is_free_once_its_task_expired(adapter: TaskProcessorAdapter) -> None:
    first = adapter.enqueue_task_sync("t", [1], idempotency_key="k3")
    adapter.cancel_task_sync(first.id)  # terminal: its record lives result_ttl_s (1 s)
    assert adapter.enqueue_task_sync("t", [1], idempotency_key="k3").id == first.id
    deadline = time.monotonic() + 10
    while True:
        try:
            adapter.get_task_status_sync(first.id)
        except TaskNotFound:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    second = adapter.enqueue_task_sync("t", [2], idempotency_key="k3")  # any payload now
    assert second.id != first.id and second.status is TaskState.PENDING


def test_concurrent_submits_with_one_key_make_one_task(adapter: TaskProcessorAdapter) -> None:
    ids: list[str] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            ids.append(adapter.enqueue_task_sync("t", [1], idempotency_key="k4").id)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=submit) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(ids) == 10 and len(set(ids)) == 1


def test_a_failed_publish_leaves_no_key_behind(
    adapter: TaskProcessorAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(adapter, StoreAdapter)

    def refuse(message: Any) -> None:
        raise BrokerUnavailable("publish failed")

    monkeypatch.setattr(adapter, "_publish", refuse)
    with pytest.raises(BrokerUnavailable):
        adapter.enqueue_task_sync("t", [1], idempotency_key="k5")
    monkeypatch.undo()
    task = adapter.enqueue_task_sync("t", [1], idempotency_key="k5")  # the client's retry
    assert adapter.get_task_status_sync(task.id).status is TaskState.PENDING


# -- clear errors for wrong types ---------------------------------------------------------------
@pytest.mark.parametrize("value", ["str", None, 5, ["queue_name"]])
def test_configs_of_the_wrong_type_are_config_errors(value: Any) -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        instantiate_adapter_from_config(value)
    with pytest.raises(ConfigError, match="expected a mapping"):
        TaskProcessorConfig.from_dict(value)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda a: a.list_dead_letters_sync(limit="a"), "limit must be a positive int"),
        (lambda a: a.list_dead_letters_sync(limit=0), "limit must be a positive int"),
        (lambda a: a.list_dead_letters_sync(limit=True), "limit must be a positive int"),
        (lambda a: a.list_dead_letters_sync(kind="sideways"), "kind must be one of"),
        (lambda a: a.redrive_dead_letters_sync(ids="abc"), "ids must be a list"),
        (lambda a: a.redrive_dead_letters_sync(ids=[1, 2]), "str record ids"),
        (lambda a: a.purge_dead_letters_sync(kind=3), "kind must be one of"),
        (lambda a: a.get_task_status_sync(123), "task_id must be a str"),
        (lambda a: a.cancel_task_sync(None), "task_id must be a str"),
        (lambda a: a.retry_task_sync(""), "must not be empty"),
    ],
)
def test_wrong_argument_types_are_taskserve_errors(
    adapter: TaskProcessorAdapter, call: Any, fragment: str
) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        call(adapter)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"task_name": 5}, "task_name must be a non-empty string"),
        ({"task_name": "a\x00"}, "control character"),
        ({"task_name": "a", "args": "abc"}, "args must be a list"),
        ({"task_name": "a", "kwargs": [1]}, "kwargs must be a mapping"),
        ({"task_name": "a", "task_id": 5}, "task_id must be a string"),
        ({"task_name": "a", "args": [{1: 2}]}, "keys must be strings"),
    ],
)
def test_wrong_enqueue_arguments_are_payload_errors(
    adapter: TaskProcessorAdapter, kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(PayloadError, match=fragment):
        adapter.enqueue_task_sync(**kwargs)
