"""Payload checks at enqueue: JSON only, size limit, clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from taskserve import (
    PayloadError,
    TaskMessage,
    TaskProcessorConfig,
    instantiate_adapter_from_config,
)
from taskserve.serialization import build_message


def _build(args: object = None, kwargs: object = None, limit: int = 10_000) -> TaskMessage:
    return build_message(
        task_name="t",
        args=args,
        kwargs=kwargs,
        queue_name="q",
        max_payload_bytes=limit,  # type: ignore[arg-type]
    )


def test_round_trip_keeps_nested_values() -> None:
    message = _build([1, 2.5, "x", None, True, [1, {"a": [2]}]], {"k": {"n": [1, 2]}})
    decoded = TaskMessage.from_bytes(message.to_bytes())
    assert decoded == message


def test_tuples_become_lists() -> None:
    assert _build((1, (2, 3))).args == [1, [2, 3]]


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        ([b"raw"], None, "args[0] is of type bytes"),
        (None, {"img": {1, 2}}, "kwargs['img'] is of type set"),
        (None, {"when": object()}, "kwargs['when'] is of type object"),
        ([{1: "a"}], None, "JSON object keys must be strings"),
        ([math.nan], None, "which JSON cannot represent"),
        ("abc", None, "args must be a list or tuple"),
        (None, ["a"], "kwargs must be a mapping"),
    ],
)
def test_unserializable_values_are_named(args: object, kwargs: object, fragment: str) -> None:
    with pytest.raises(PayloadError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        _build(args, kwargs)


def test_over_size_payload_is_refused_with_sizes() -> None:
    with pytest.raises(PayloadError, match=r"over the limit of 100 bytes \(max_payload_bytes\)"):
        _build(["x" * 200], limit=100)


@pytest.mark.parametrize(
    "raw", [b"not json", b"[1, 2]", b'{"id": "x"}', b'{"id": 1, "name": "t"}', b"\xff\xfe"]
)
def test_undecodable_messages_raise_payload_error(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        TaskMessage.from_bytes(raw)


def test_nothing_is_enqueued_when_the_payload_is_refused(tmp_path: Path) -> None:
    config = TaskProcessorConfig(queue_name="q", adapter_config={"path": str(tmp_path / "q.db")})
    adapter = instantiate_adapter_from_config(config)
    with pytest.raises(PayloadError):
        adapter.enqueue_task_sync("t", [object()])
    with pytest.raises(PayloadError):
        adapter.enqueue_task_sync("t", ["x" * (config.max_payload_bytes + 1)])
    assert adapter.get_metrics_sync().queue_depth == 0
    adapter.shutdown()
