"""The JSON wire format of tasks and results.

Payloads are JSON, never pickle. A value that JSON cannot represent exactly
(bytes, sets, objects, non-string dict keys, NaN) is refused at enqueue with
an error that names where it is, so nothing half-valid reaches the broker.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskserve.errors import PayloadError

WIRE_VERSION = 1


def _check_json_value(value: Any, where: str) -> None:
    """Raise PayloadError naming the first part of ``value`` JSON cannot carry."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(f"{where} is {value!r}, which JSON cannot represent")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(
                    f"{where} has the key {key!r} of type {type(key).__name__}; "
                    "JSON object keys must be strings"
                )
            _check_json_value(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]")
        return
    raise PayloadError(
        f"{where} is of type {type(value).__name__}, which is not JSON-serializable; "
        "pass plain JSON values (str, int, float, bool, None, list, dict) "
        "such as a URL or a base64 string instead"
    )


def dumps_json(value: Any, where: str) -> str:
    """Encode ``value`` as JSON text, or raise PayloadError naming ``where``."""
    _check_json_value(value, where)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def new_task_id() -> str:
    """A fresh, random task id."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class TaskMessage:
    """One task as it travels through a broker."""

    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue_name: str
    enqueued_at: float = field(default_factory=time.time)
    retried_from: str | None = None
    seq: int | None = None
    """Publish number given by a ledger store (see :class:`~taskserve.kit.LedgerStore`);
    None in stored payloads and on engines without a ledger."""
    not_before: float | None = None
    """Unix time before which the task must not run (a delayed enqueue: the store
    keeps it back until then); None to run at once."""
    expires_at: float | None = None
    """Unix time after which the task is not run any more (it ends CANCELLED)."""
    priority: int | None = None
    """The engine's publish priority of this task (its own scale), if any."""

    def with_seq(self, seq: int | None) -> TaskMessage:
        """This message as published under publish number ``seq``."""
        return dataclasses.replace(self, seq=seq)

    def to_json(self) -> str:
        """The message as JSON text (its args and kwargs already checked)."""
        data: dict[str, Any] = {
            "v": WIRE_VERSION,
            "id": self.id,
            "name": self.name,
            "args": self.args,
            "kwargs": self.kwargs,
            "queue": self.queue_name,
            "enqueued_at": self.enqueued_at,
            "retried_from": self.retried_from,
        }
        if self.seq is not None:
            data["seq"] = self.seq
        for key in ("not_before", "expires_at", "priority"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    def to_bytes(self) -> bytes:
        """The message as UTF-8 JSON bytes."""
        return self.to_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> TaskMessage:
        """Decode a message; raise PayloadError if it is not a valid one."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise PayloadError(f"message is not valid JSON: {e}") from e
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> TaskMessage:
        """Build a message from its decoded JSON object."""
        if not isinstance(data, dict):
            raise PayloadError("message must be a JSON object")
        try:
            message = cls(
                id=data["id"],
                name=data["name"],
                args=data.get("args") or [],
                kwargs=data.get("kwargs") or {},
                queue_name=data.get("queue", ""),
                enqueued_at=float(data.get("enqueued_at") or time.time()),
                retried_from=data.get("retried_from"),
                seq=data.get("seq"),
                not_before=_optional_time(data, "not_before"),
                expires_at=_optional_time(data, "expires_at"),
                priority=data.get("priority"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PayloadError(f"message lacks or mistypes a field: {e}") from e
        if not isinstance(message.id, str) or not isinstance(message.name, str):
            raise PayloadError("message 'id' and 'name' must be strings")
        if not isinstance(message.args, list) or not isinstance(message.kwargs, dict):
            raise PayloadError("message 'args' must be a list and 'kwargs' an object")
        if message.seq is not None and (type(message.seq) is not int or message.seq < 1):
            raise PayloadError("message 'seq' must be a positive integer")
        if message.retried_from is not None and not isinstance(message.retried_from, str):
            raise PayloadError("message 'retried_from' must be a string")
        if message.priority is not None and type(message.priority) is not int:
            raise PayloadError("message 'priority' must be an integer")
        return message


def _optional_time(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"'{key}' must be a unix time")
    return float(value)


def build_message(
    *,
    task_name: str,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    queue_name: str,
    max_payload_bytes: int,
    task_id: str | None = None,
    retried_from: str | None = None,
    not_before: float | None = None,
    expires_at: float | None = None,
    priority: int | None = None,
) -> TaskMessage:
    """Check the arguments and build a message; nothing is sent.

    Raises PayloadError if an argument is not JSON or the encoded message is
    larger than ``max_payload_bytes``.
    """
    if not isinstance(task_name, str) or not task_name:
        raise PayloadError("task_name must be a non-empty string")
    if args is not None and (isinstance(args, (str, bytes)) or not isinstance(args, Sequence)):
        raise PayloadError(f"args must be a list or tuple, got {type(args).__name__}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise PayloadError(f"kwargs must be a mapping, got {type(kwargs).__name__}")
    arg_list = list(args or [])
    kwarg_dict = dict(kwargs or {})
    _check_json_value(arg_list, "args")
    _check_json_value(kwarg_dict, "kwargs")
    message = TaskMessage(
        id=task_id or new_task_id(),
        name=task_name,
        args=json.loads(json.dumps(arg_list)),
        kwargs=json.loads(json.dumps(kwarg_dict)),
        queue_name=queue_name,
        retried_from=retried_from,
        not_before=not_before,
        expires_at=expires_at,
        priority=priority,
    )
    size = len(message.to_bytes())
    if size > max_payload_bytes:
        raise PayloadError(
            f"task '{task_name}' payload is {size} bytes, over the limit of "
            f"{max_payload_bytes} bytes (max_payload_bytes); store large inputs "
            "elsewhere and pass a reference"
        )
    return message
