"""How a task travels as a Celery message, and how a delivery is read back.

Every task is published as a Celery (protocol 2) message of one generic task,
:data:`EXECUTE_TASK`, whose single argument is the task's
:class:`~taskserve.TaskMessage` as a JSON object, serialized with Celery's
``json`` serializer (never pickle). The consumer reads every delivery of its
queue itself, so that nothing is dropped before taskserve sees it:

* a message of :data:`EXECUTE_TASK` gives its TaskMessage;
* a plain Celery task message (``app.send_task("index_document", ...)`` from
  a raw Celery producer) becomes a TaskMessage with that name, id, args and
  kwargs, so unknown names reach the runner and its unprocessable queue;
* a message without Celery headers is read as a bare TaskMessage JSON body;
* anything else stays raw bytes, which the runner dead-letters as
  undecodable with those exact bytes.
"""

from __future__ import annotations

import json
import time
from typing import Any

from taskserve.kit import PayloadError, TaskMessage

EXECUTE_TASK = "taskserve.execute"
"""Celery task name of every message the adapter publishes."""

JSON_CONTENT_TYPE = "application/json"


def send_task_arguments(message: TaskMessage) -> dict[str, Any]:
    """Keyword arguments of ``Celery.send_task`` publishing ``message``."""
    return {
        "name": EXECUTE_TASK,
        "args": [json.loads(message.to_json())],
        "kwargs": {},
        "task_id": message.id,
        "serializer": "json",
        "argsrepr": f"[<task {message.name!r}>]",
        "kwargsrepr": "{}",
    }


def body_bytes(body: Any) -> bytes:
    """A delivery's body as bytes, whatever the transport handed over."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, default=repr).encode()


def read_delivery(
    body: bytes, headers: dict[str, Any] | None, content_type: str | None, queue_name: str
) -> TaskMessage | bytes:
    """The TaskMessage carried by a delivery, or its raw body if it carries none."""
    task = (headers or {}).get("task")
    if task is None:
        try:
            return TaskMessage.from_bytes(body)
        except PayloadError:
            return body
    if content_type != JSON_CONTENT_TYPE:
        return body
    try:
        decoded = json.loads(body)
        args, kwargs = decoded[0], decoded[1]
        if task == EXECUTE_TASK:
            if not (isinstance(args, list) and len(args) == 1):
                return body
            return TaskMessage.from_dict(args[0])
        task_id = (headers or {}).get("id")
        if not isinstance(task_id, str) or not isinstance(task, str):
            return body
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            return body
        return TaskMessage(
            id=task_id,
            name=task,
            args=args,
            kwargs=kwargs,
            queue_name=queue_name,
            enqueued_at=time.time(),
        )
    except (ValueError, TypeError, IndexError, KeyError, PayloadError):
        return body
