"""How tasks travel as Dramatiq messages (no broker needed)."""

from __future__ import annotations

import json

import dramatiq
import pytest
from dramatiq.encoder import JSONEncoder, PickleEncoder
from dramatiq.message import Message

from taskserve import ConfigError
from taskserve.serialization import build_message
from taskserve_dramatiq.wire import (
    check_json_encoder,
    copy_for_resend,
    decode_checked,
    payload_of,
    placeholder,
    priority_level,
    to_dramatiq,
)


def _task() -> object:
    return build_message(
        task_name="index",
        args=[1, {"a": [None, 2.5]}],
        kwargs={"k": "v"},
        queue_name="q",
        max_payload_bytes=10_000,
    )


def test_a_task_round_trips_through_dramatiq_json() -> None:
    task = _task()
    message = to_dramatiq(task, "q")  # type: ignore[arg-type]
    data = message.encode()
    assert json.loads(data)["actor_name"] == "index"
    delivered = decode_checked(data)
    assert delivered is not None
    assert payload_of(delivered, "q") == task


def test_undecodable_bytes_travel_in_a_placeholder() -> None:
    raw = b"\xff\x00 not a message"
    assert decode_checked(raw) is None
    assert decode_checked(b'{"json": "but not a message"}') is None
    carried = decode_checked(placeholder(raw, "q").encode())
    assert carried is not None
    assert payload_of(carried, "q") == raw


def test_a_plain_dramatiq_message_runs_as_a_task_named_after_its_actor() -> None:
    message = Message(queue_name="q", actor_name="add", args=(1, 2), kwargs={"x": 3}, options={})
    task = payload_of(message, "q")
    assert not isinstance(task, bytes)
    assert (task.id, task.name, task.args, task.kwargs) == (
        message.message_id,
        "add",
        [1, 2],
        {"x": 3},
    )


def test_a_marked_message_with_a_broken_task_is_undecodable() -> None:
    message = Message(
        queue_name="q", actor_name="index", args=("nope",), kwargs={}, options={"taskserve": 1}
    )
    assert isinstance(payload_of(message, "q"), bytes)


def test_a_resent_copy_keeps_id_and_body_but_not_broker_options() -> None:
    message = to_dramatiq(_task(), "q")  # type: ignore[arg-type]
    delivered = message.copy(queue_name="q.DQ", options={"eta": 1, "redis_message_id": "r"})
    again = copy_for_resend(delivered)
    assert again.queue_name == "q" and again.message_id == message.message_id
    assert again.args == message.args and "eta" not in again.options
    assert "redis_message_id" not in again.options


def test_a_priority_travels_as_dramatiq_broker_priority_and_survives_a_resend() -> None:
    task = build_message(
        task_name="index", args=[], kwargs={}, queue_name="q", max_payload_bytes=10_000, priority=7
    )
    message = to_dramatiq(task, "q")
    assert message.options["broker_priority"] == 7 and priority_level(message) == 7
    delivered = decode_checked(message.encode())
    assert delivered is not None and payload_of(delivered, "q") == task
    assert priority_level(copy_for_resend(message.copy(queue_name="q.DQ"))) == 7
    assert "broker_priority" not in to_dramatiq(_task(), "q").options  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "level"), [(None, 0), (0, 0), (4, 4), (12, 9), (-1, 0), ("5", 0), (True, 0)]
)
def test_the_priority_of_a_plain_dramatiq_message_is_its_broker_priority(
    value: object, level: int
) -> None:
    options = {} if value is None else {"broker_priority": value}
    message = Message(queue_name="q", actor_name="add", args=(), kwargs={}, options=options)
    assert priority_level(message) == level
    task = payload_of(message, "q")
    assert not isinstance(task, bytes) and task.priority == (level or None)


def test_a_pickle_encoder_is_refused() -> None:
    check_json_encoder()
    dramatiq.set_encoder(PickleEncoder())
    try:
        with pytest.raises(ConfigError, match="JSON only"):
            check_json_encoder()
    finally:
        dramatiq.set_encoder(JSONEncoder())
