"""Webhook events as the outbox keeps them and as receivers get them.

A store writes an outbox entry in the same step as the state change it
announces (:mod:`taskserve.engine.store`), with the parts of the body only
that step knows (the result, the error, the progress report) as a JSON
``data`` fragment made here. The sender turns an entry into the body with
:func:`event_body`, the same bytes on every try.

Event ids are stable, so a receiver can drop repeats: ``evt_<task id>_<event>``
for the events a task has once (``succeeded``, ``failed``, ``cancelled``,
``dead_lettered``), ``evt_<task id>_started_<attempt>`` and
``evt_<task id>_progress_<n>`` (n counts the task's progress events).

The body (``Content-Type: application/json``)::

    {
      "type": "task.succeeded",                   # task.<event>
      "timestamp": "2026-12-03T12:34:07.990Z",    # when it happened (UTC)
      "data": {
        "task_id": "24bc55d8-...", "task_name": "index_document", "queue": "docs",
        "status": "SUCCESS",                      # the status the event leaves
        "attempt": 1,                             # the attempt it belongs to (0: none ran)
        "result": {...},                          # succeeded: the result, when its JSON is
                                                  #   at most max_result_bytes; else
        "result_omitted": true,                   #   this instead (GET /get/{id} has it)
        "error": {"type": "ValueError", "message": "bad page"},  # failed, dead_lettered
        "dead_letter_queue": "docs.failed",       # dead_lettered
        "progress": {"fraction": 0.4, "message": "page 2 of 5", "data": null,
                     "updated_at": 1764765247.9}  # progress
      }
    }
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taskserve.models import TaskError
from taskserve.states import TaskState
from taskserve.webhooks.settings import WebhookEvent

MAX_ERROR_MESSAGE_LENGTH = 2000
"""Longest error message an event carries (longer ones are cut)."""

EVENT_STATUS: dict[WebhookEvent, TaskState] = {
    WebhookEvent.STARTED: TaskState.STARTED,
    WebhookEvent.PROGRESS: TaskState.STARTED,
    WebhookEvent.SUCCEEDED: TaskState.SUCCESS,
    WebhookEvent.FAILED: TaskState.FAILURE,
    WebhookEvent.CANCELLED: TaskState.CANCELLED,
    WebhookEvent.DEAD_LETTERED: TaskState.FAILURE,
}
"""The status each event leaves its task in (``data.status``)."""


def event_id_prefix(task_id: str) -> str:
    """What every event id of task ``task_id`` starts with (stores append the
    event's name, and for started and progress events ``_<number>``)."""
    return f"evt_{task_id}_"


def event_id(task_id: str, event: WebhookEvent, number: int | None = None) -> str:
    """The stable id of one event of a task (``number``: the attempt of a
    started event, the count of a progress event)."""
    suffix = "" if number is None else f"_{number}"
    return f"{event_id_prefix(task_id)}{event.value}{suffix}"


def events_text(events: Iterable[WebhookEvent | str]) -> str:
    """A task's subscribed events as a store keeps them: ``,started,succeeded,``
    (a store checks one with a substring search for ``,<event>,``)."""
    return "," + ",".join(sorted({WebhookEvent(e).value for e in events})) + ","


def subscribed(events: str | None, event: WebhookEvent) -> bool:
    """Whether a task whose stored events are ``events`` asked for ``event``."""
    return bool(events) and f",{event.value}," in str(events)


def _fragment(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def result_data(result_json: str | None, max_bytes: int) -> str:
    """The ``data`` fragment of a succeeded event: the result (its stored JSON)
    when it is at most ``max_bytes`` long, else ``result_omitted``."""
    if result_json is None:
        return '{"result":null}'
    if len(result_json.encode("utf-8", "surrogatepass")) > max_bytes:
        return '{"result_omitted":true}'
    return '{"result":' + result_json + "}"


def _error_summary(error: TaskError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"type": error.type, "message": error.message[:MAX_ERROR_MESSAGE_LENGTH]}


def error_data(error: TaskError | None) -> str:
    """The ``data`` fragment of a failed event: the error's type and message
    (the traceback stays in the task's record)."""
    return _fragment({"error": _error_summary(error)})


def dead_letter_data(error: TaskError | None, queue: str) -> str:
    """The ``data`` fragment of a dead-lettered event."""
    return _fragment({"error": _error_summary(error), "dead_letter_queue": queue})


def progress_data(progress_json: str) -> str:
    """The ``data`` fragment of a progress event (the report as stored)."""
    return '{"progress":' + progress_json + "}"


@dataclass(frozen=True)
class WebhookDelivery:
    """One outbox entry a sender has claimed (and leased) to deliver."""

    id: str
    """The event id (``webhook-id``), stable across tries and consumers."""
    task_id: str
    task_name: str | None
    queue_name: str
    event: WebhookEvent
    url: str
    attempt: int
    """The task's attempt the event belongs to (0 when none ran)."""
    data: str | None
    """The event's own part of ``data`` (JSON object text), or None."""
    created_at: float
    """When the event happened (unix time)."""
    deliveries: int
    """Tries so far, this one included."""


def timestamp_text(at: float) -> str:
    """A unix time as RFC 3339 UTC text with milliseconds (``...T12:34:07.990Z``)."""
    moment = datetime.fromtimestamp(at, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_body(delivery: WebhookDelivery) -> str:
    """The JSON body of ``delivery`` (the schema is in the module docstring);
    the same text on every try of the event."""
    data: dict[str, Any] = {
        "task_id": delivery.task_id,
        "task_name": delivery.task_name,
        "queue": delivery.queue_name,
        "status": EVENT_STATUS[delivery.event].value,
        "attempt": delivery.attempt,
    }
    if delivery.data:
        try:
            extra = json.loads(delivery.data)
        except (ValueError, RecursionError):
            extra = {"data_unreadable": True}
        if isinstance(extra, dict):
            data.update(extra)
    body = {
        "type": delivery.event.type,
        "timestamp": timestamp_text(delivery.created_at),
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)
