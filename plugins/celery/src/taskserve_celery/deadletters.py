"""Dead letters also as messages on broker queues, in Ray Serve's layout.

taskserve keeps every dead letter as a record in the state store (exact
payload, error, traceback; listed, redriven and purged through the adapter).
Code written for Ray Serve reads its dead letters as Celery messages on the
broker queues named ``failed_task_queue_name`` and
``unprocessable_task_queue_name``; with ``mirror_dead_letters`` (the default)
the adapter also publishes each record there, once it is stored, as a Celery
task message:

* failed: task name = the original task's, args = ``[task_id, error message,
  args, kwargs, traceback]`` (Ray's order; ``args`` and ``kwargs`` are the
  original values, not their ``str()``);
* unprocessable: task name = the unknown name (``taskserve.unprocessable``
  for bytes that are not a task), args = ``[task name, task id, payload,
  error message, {}]`` where the payload is the task as enqueued
  (``{"id", "name", "args", "kwargs"}``) or, for undecodable bytes, their
  base64 text.

Every message carries the record's id in the header ``taskserve_dead_letter``.
The record is the source of truth: a mirror that cannot be published is
logged and not retried, and purging every record of a queue also purges its
broker queue.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

from celery import Celery

from taskserve.kit import (
    Begun,
    DeadLetter,
    DeadLetterKind,
    StoreRecorder,
    TaskError,
    TaskMessage,
    TaskStore,
)
from taskserve_celery.engine import declaring, task_queue

logger = logging.getLogger(__name__)

DEAD_LETTER_HEADER = "taskserve_dead_letter"
"""Header holding the id of the dead-letter record a mirrored message copies."""

UNPROCESSABLE_TASK = "taskserve.unprocessable"
"""Task name of the mirror of bytes that were not a task at all."""


def ray_layout(record: DeadLetter) -> tuple[str, list[Any]]:
    """The Celery task name and args of ``record``'s mirrored message."""
    if record.kind is DeadLetterKind.FAILED:
        return (
            record.task_name or UNPROCESSABLE_TASK,
            [
                record.task_id,
                record.error.message,
                record.args,
                record.kwargs,
                record.error.traceback,
            ],
        )
    payload: Any
    if record.args is not None and record.kwargs is not None:
        payload = {
            "id": record.task_id,
            "name": record.task_name,
            "args": record.args,
            "kwargs": record.kwargs,
        }
    else:
        payload = base64.b64encode(record.raw or b"").decode("ascii")
    return (
        record.task_name or UNPROCESSABLE_TASK,
        [record.task_name, record.task_id, payload, record.error.message, {}],
    )


def publish_dead_letter(app: Celery, record: DeadLetter) -> None:
    """Publish ``record`` to the broker queue named after its dead-letter queue,
    declared as the adapter declares every queue (:func:`~taskserve_celery.engine.task_queue`;
    a RabbitMQ queue that exists with other arguments is a ConfigError)."""
    name, args = ray_layout(record)
    with declaring(record.queue_name):
        app.send_task(
            name,
            args=args,
            kwargs={},
            queue=task_queue(record.queue_name),
            serializer="json",
            headers={DEAD_LETTER_HEADER: record.id},
        )


class Mirror:
    """Publishes the dead letters a consumer's deliveries leave, once stored."""

    def __init__(self, app: Celery, store: TaskStore) -> None:
        self._app = app
        self._store = store

    def __call__(self, record: DeadLetter) -> None:
        try:
            if not self._store.dead_letters(record.queue_name, None, [record.id]):
                return  # not stored (a cancel won over the failure): nothing to copy
            publish_dead_letter(self._app, record)
        except Exception as e:
            logger.warning(
                "taskserve-celery: dead letter %s is stored but its copy on broker queue "
                "'%s' could not be published: %s",
                record.id,
                record.queue_name,
                e,
            )


class MirroringRecorder(StoreRecorder):
    """A StoreRecorder that also mirrors the dead letters it records."""

    def __init__(
        self,
        store: TaskStore,
        task_id: str | None,
        begun: Begun,
        mirror: Callable[[DeadLetter], None],
        *,
        owner: str | None = None,
    ) -> None:
        super().__init__(store, task_id, begun, owner=owner)
        self._mirror = mirror

    def record_failure(
        self,
        message: TaskMessage,
        error: TaskError,
        attempt: int,
        dead_letter: DeadLetter | None,
    ) -> None:
        super().record_failure(message, error, attempt, dead_letter)
        if dead_letter is not None:
            self._mirror(dead_letter)

    def record_unprocessable(
        self, message: TaskMessage | None, error: TaskError, dead_letter: DeadLetter | None
    ) -> None:
        super().record_unprocessable(message, error, dead_letter)
        if dead_letter is not None:
            self._mirror(dead_letter)
