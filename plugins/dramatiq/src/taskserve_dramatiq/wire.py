"""How tasks travel as Dramatiq messages.

A task is one Dramatiq message encoded by Dramatiq's JSON encoder: its
``actor_name`` is the task name, its only argument is the task's
:class:`~taskserve.TaskMessage` as a JSON object, its ``message_id`` is the
task id, and the option ``taskserve`` marks it. A task's priority (when it
has one above 0) is also the option ``broker_priority``, Dramatiq's own name
for it: RabbitMQ orders the queue by it, and the Redis broker of the adapter
picks the message's list by it (see :mod:`taskserve_dramatiq.scripts`). A
message without the mark, sent by plain Dramatiq code, is read as a task too:
actor name, args and kwargs become the task's name and arguments, and its
``broker_priority`` its priority.

Bytes that are not a Dramatiq message at all reach the workers as a
*placeholder* message carrying them in base64, so that they end in the
unprocessable dead-letter queue exactly as they arrived instead of being
dropped or looping.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from dramatiq.broker import MessageProxy
from dramatiq.common import q_name
from dramatiq.encoder import JSONEncoder
from dramatiq.errors import DecodeError
from dramatiq.message import Message, get_encoder

from taskserve.kit import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    WIRE_VERSION,
    ConfigError,
    PayloadError,
    TaskMessage,
    new_task_id,
)

MARK_OPTION = "taskserve"
"""Message option marking a message that carries a TaskMessage."""

RAW_OPTION = "taskserve_raw"
"""Option of a placeholder message: the undecodable bytes, base64."""

PLACEHOLDER_ACTOR = "taskserve.undecodable"
"""Actor name of placeholder messages."""

PRIORITY_OPTION = "broker_priority"
"""Message option holding the priority (Dramatiq's option for RabbitMQ's
message priority; absent means the lowest)."""


def check_json_encoder() -> None:
    """Raise ConfigError unless Dramatiq encodes messages as JSON.

    Dramatiq's encoder is process-wide; taskserve never sends pickle.
    """
    encoder = get_encoder()
    if not isinstance(encoder, JSONEncoder):
        raise ConfigError(
            f"Dramatiq's message encoder is {type(encoder).__name__}; taskserve sends JSON "
            "only. Remove the dramatiq.set_encoder(...) call or set a JSONEncoder."
        )


def priority_level(message: Message[Any] | MessageProxy) -> int:
    """The priority level (0 to 9) a message waits at: its ``broker_priority``
    kept within 0 to 9, as RabbitMQ treats a priority above the queue's maximum
    as that maximum; 0 when it has none, or one that is not an integer."""
    value = message.options.get(PRIORITY_OPTION)
    if isinstance(value, bool) or not isinstance(value, int):
        return MIN_PRIORITY
    return min(max(value, MIN_PRIORITY), MAX_PRIORITY)


def to_dramatiq(message: TaskMessage, queue_name: str) -> Message[Any]:
    """The Dramatiq message that carries ``message`` on ``queue_name``, with its
    priority as ``broker_priority`` when it has one above 0."""
    options: dict[str, Any] = {MARK_OPTION: WIRE_VERSION}
    if message.priority:
        options[PRIORITY_OPTION] = message.priority
    return Message(
        queue_name=queue_name,
        actor_name=message.name,
        args=(json.loads(message.to_json()),),
        kwargs={},
        options=options,
        message_id=message.id,
        message_timestamp=int(message.enqueued_at * 1000),
    )


def placeholder(raw: bytes, queue_name: str, **options: Any) -> Message[Any]:
    """A message standing in for undecodable ``raw`` bytes on ``queue_name``."""
    return Message(
        queue_name=queue_name,
        actor_name=PLACEHOLDER_ACTOR,
        args=(),
        kwargs={},
        options={RAW_OPTION: base64.b64encode(raw).decode("ascii"), **options},
        message_id=new_task_id(),
    )


def copy_for_resend(message: Message[Any] | MessageProxy) -> Message[Any]:
    """A delivered message as a new message to publish again (same id and body)."""
    options = {
        key: value
        for key, value in message.options.items()
        if key not in ("eta", "redis_message_id")
    }
    return Message(
        queue_name=q_name(message.queue_name),
        actor_name=message.actor_name,
        args=tuple(message.args),
        kwargs=dict(message.kwargs),
        options=options,
        message_id=message.message_id,
        message_timestamp=message.message_timestamp,
    )


def decode_checked(data: bytes) -> Message[Any] | None:
    """``data`` as a well-formed Dramatiq message, or None if it is not one."""
    try:
        message = Message.decode(data)
    except DecodeError:
        return None
    well_formed = (
        isinstance(message.queue_name, str)
        and isinstance(message.actor_name, str)
        and isinstance(message.kwargs, dict)
        and isinstance(message.options, dict)
        and isinstance(message.message_id, str)
        and isinstance(message.message_timestamp, int | float)
        and not isinstance(message.message_timestamp, bool)
    )
    return message if well_formed else None


def as_bytes(data: bytes | str) -> bytes:
    """Broker data as bytes."""
    return data.encode() if isinstance(data, str) else data


def payload_of(message: Message[Any] | MessageProxy, queue_name: str) -> TaskMessage | bytes:
    """What a delivered message asks the runner to do.

    A TaskMessage to run, or bytes that cannot be decoded as a task (the
    runner dead-letters them as unprocessable).
    """
    raw = message.options.get(RAW_OPTION)
    if message.actor_name == PLACEHOLDER_ACTOR and isinstance(raw, str):
        return base64.b64decode(raw)
    if MARK_OPTION in message.options:
        if len(message.args) == 1 and isinstance(message.args[0], dict) and not message.kwargs:
            try:
                return TaskMessage.from_dict(message.args[0])
            except PayloadError:
                pass
        return message.encode()
    return TaskMessage(
        id=message.message_id,
        name=message.actor_name,
        args=list(message.args),
        kwargs=dict(message.kwargs),
        queue_name=queue_name,
        enqueued_at=message.message_timestamp / 1000,
        priority=priority_level(message) or None,
    )
