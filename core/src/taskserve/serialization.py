"""The JSON wire format of tasks and results.

Payloads are JSON, never pickle. A value that JSON cannot represent exactly
(bytes, sets, objects, non-string dict keys, NaN, strings holding a lone
UTF-16 surrogate, which UTF-8 cannot carry) is refused at enqueue with an
error that names where it is, so nothing half-valid reaches the broker. So
is a value nested deeper than :data:`MAX_JSON_DEPTH` levels: args and kwargs
at enqueue, results when they are recorded, and a message arriving with
deeper arguments is undecodable (an unprocessable dead letter keeping its
raw bytes).

Values a store kept are decoded with :func:`loads_stored`, which never fails
on depth: a value nested deeper than :data:`MAX_DECODE_DEPTH` (kept by an
older version, or written by hand) comes back as :class:`RawJson`, its JSON
text, which the HTTP layer sends as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskserve.errors import PayloadError

WIRE_VERSION = 1

MAX_JSON_DEPTH = 100
"""Deepest nesting of lists and objects in args, kwargs and results (the list
of args counts as one level)."""

MAX_DECODE_DEPTH = 200
"""Deepest stored JSON :func:`loads_stored` decodes; deeper comes back as
:class:`RawJson`."""

MAX_TASK_NAME_LENGTH = 1000
"""Longest task name accepted at enqueue (the HTTP ingress has its own,
smaller, configurable limit)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class RawJson(str):
    """JSON text a store kept, not decoded because it nests deeper than
    :data:`MAX_DECODE_DEPTH` levels; ``json.loads(raw)`` decodes it where the
    stack allows. The HTTP layer sends it as the JSON value it is."""

    __slots__ = ()


def text_depth(text: str | bytes) -> int:
    """How deep the lists and objects of JSON ``text`` nest (0 for a scalar),
    found without decoding it (strings are skipped)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    brackets = _BRACKET.findall(_STRING.sub(b"", data))
    if not brackets:
        return 0
    steps = (1 if b in (b"[", b"{") else -1 for b in brackets)
    return max(0, *itertools.accumulate(steps))


def value_depth(value: Any) -> int:
    """How deep the lists and objects of a decoded JSON value nest (0 for a
    scalar), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def loads_stored(text: str | bytes) -> Any:
    """Decode a JSON value a store kept; too deep to decode safely, it comes
    back as :class:`RawJson` (never a RecursionError)."""
    if text_depth(text) > MAX_DECODE_DEPTH:
        return RawJson(text.decode() if isinstance(text, bytes) else text)
    try:
        return json.loads(text)
    except RecursionError:
        return RawJson(text.decode() if isinstance(text, bytes) else text)


def check_task_name(task_name: Any) -> str:
    """``task_name`` if it is a valid task name; PayloadError naming what is wrong."""
    if not isinstance(task_name, str) or not task_name:
        raise PayloadError("task_name must be a non-empty string")
    if len(task_name) > MAX_TASK_NAME_LENGTH:
        raise PayloadError(
            f"task_name is {len(task_name)} characters long, over the limit of "
            f"{MAX_TASK_NAME_LENGTH}"
        )
    if _CONTROL.search(task_name) or _SURROGATE.search(task_name):
        raise PayloadError(
            "task_name holds a control character (NUL, newline...) or a lone surrogate; "
            "task names are printable text"
        )
    return task_name


def _check_json_value(value: Any, where: str, depth: int = 0) -> None:
    """Raise PayloadError naming the first part of ``value`` JSON cannot carry."""
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise PayloadError(
                f"{where} holds a lone UTF-16 surrogate, which UTF-8 (and so JSON on the "
                "wire) cannot carry; send valid Unicode text"
            )
        return
    if isinstance(value, (Mapping, list, tuple)) and depth >= MAX_JSON_DEPTH:
        raise PayloadError(
            f"{where} nests deeper than {MAX_JSON_DEPTH} levels of lists and objects "
            "(MAX_JSON_DEPTH); flatten it or pass a reference"
        )
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
            if _SURROGATE.search(key):
                raise PayloadError(
                    f"{where} has a key holding a lone UTF-16 surrogate, which UTF-8 (and "
                    "so JSON on the wire) cannot carry; send valid Unicode text"
                )
            _check_json_value(item, f"{where}[{key!r}]", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]", depth + 1)
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


def payload_fingerprint(task_name: str, args: Any, kwargs: Any) -> str:
    """A digest of what a task runs (name, args, kwargs), equal for equal JSON
    values only (``1``, ``1.0`` and ``true`` differ): what an idempotency key
    is compared by."""
    text = json.dumps(
        [task_name, args, kwargs], sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


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
    """The task's priority, 0 to 9, higher first (None: the lowest, 0)."""
    webhook_url: str | None = None
    """Where the task's webhook events are sent (checked at enqueue); None: no webhook."""
    webhook_events: tuple[str, ...] | None = None
    """The events the webhook is sent for (names of ``taskserve.webhooks.WebhookEvent``)."""

    def with_seq(self, seq: int | None) -> TaskMessage:
        """This message as published under publish number ``seq``."""
        return dataclasses.replace(self, seq=seq)

    @property
    def ledger_mark(self) -> int | None:
        """The publish number its delivery marks as passed in a ledger store, or
        None. Engines deliver higher priorities first, so only a delivery of the
        lowest priority proves that every message published before it was
        fetched: a message of a higher priority marks nothing (a lost one is
        found once a later lowest-priority message starts, or the queue is
        empty), and a task of a low priority waiting behind a stream of higher
        ones is never taken for lost."""
        return self.seq if not self.priority else None

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
        if self.webhook_url is not None:
            data["webhook"] = {"url": self.webhook_url, "events": list(self.webhook_events or ())}
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    def to_bytes(self) -> bytes:
        """The message as UTF-8 JSON bytes (ASCII escapes for a string that UTF-8
        cannot carry, so a message decoded from elsewhere is always storable)."""
        text = self.to_json()
        try:
            return text.encode()
        except UnicodeEncodeError:
            return json.dumps(json.loads(text), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> TaskMessage:
        """Decode a message; raise PayloadError if it is not a valid one."""
        if text_depth(raw) > MAX_JSON_DEPTH + 1:
            raise PayloadError(
                f"message nests deeper than {MAX_JSON_DEPTH} levels of lists and objects"
            )
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise PayloadError(f"message is not valid JSON: {e}") from e
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> TaskMessage:
        """Build a message from its decoded JSON object."""
        if not isinstance(data, dict):
            raise PayloadError("message must be a JSON object")
        webhook = data.get("webhook")
        if webhook is not None and not (
            isinstance(webhook, dict)
            and isinstance(webhook.get("url"), str)
            and isinstance(webhook.get("events"), list)
            and all(isinstance(e, str) for e in webhook["events"])
        ):
            raise PayloadError("message 'webhook' must be an object with 'url' and 'events'")
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
                webhook_url=webhook["url"] if webhook else None,
                webhook_events=tuple(webhook["events"]) if webhook else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PayloadError(f"message lacks or mistypes a field: {e}") from e
        if not isinstance(message.id, str) or not isinstance(message.name, str):
            raise PayloadError("message 'id' and 'name' must be strings")
        if not isinstance(message.args, list) or not isinstance(message.kwargs, dict):
            raise PayloadError("message 'args' must be a list and 'kwargs' an object")
        check_task_name(message.name)
        _check_json_value(message.args, "message 'args'")
        _check_json_value(message.kwargs, "message 'kwargs'")
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
    webhook_url: str | None = None,
    webhook_events: tuple[str, ...] | None = None,
) -> TaskMessage:
    """Check the arguments and build a message; nothing is sent (the webhook,
    if any, is checked by the caller).

    Raises PayloadError if an argument is not JSON or the encoded message is
    larger than ``max_payload_bytes``.
    """
    check_task_name(task_name)
    if task_id is not None and not isinstance(task_id, str):
        raise PayloadError(f"task_id must be a string, got {type(task_id).__name__}")
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
        webhook_url=webhook_url,
        webhook_events=webhook_events,
    )
    size = len(message.to_bytes())
    if size > max_payload_bytes:
        raise PayloadError(
            f"task '{task_name}' payload is {size} bytes, over the limit of "
            f"{max_payload_bytes} bytes (max_payload_bytes); store large inputs "
            "elsewhere and pass a reference"
        )
    return message
