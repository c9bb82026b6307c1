"""Recording one delivery's steps in a task store.

:class:`StoreRecorder` is the :class:`~taskserve.engine.runner.DeliveryRecorder`
of every store-backed adapter: the runner decides what happens to a delivery
(run, retry, fail, dead-letter, cancel) and the recorder writes it with the
store operations of :mod:`taskserve.engine.store`. The delivery was begun
(counted and started) by the consumer before the runner saw it, so
``mark_started`` answers from that decision without another round trip.
Progress reports are written under the lease of the delivery's ``owner``.
"""

from __future__ import annotations

import json
from typing import Any

from taskserve.engine.progress import progress_json
from taskserve.engine.runner import DeliveryRecorder
from taskserve.engine.store import Begun, TaskStore
from taskserve.models import DeadLetter, TaskError, TaskProgress
from taskserve.serialization import TaskMessage
from taskserve.states import TaskState


def result_json(result: Any) -> str:
    """A handler's (already JSON-checked) result as the text a store keeps.

    ASCII-only, so every string a handler can return is storable as it is.
    """
    return json.dumps(result, separators=(",", ":"), allow_nan=False)


class StoreRecorder(DeliveryRecorder):
    """Records one begun delivery of ``task_id`` in ``store``.

    ``task_id`` is the stored task the delivery belongs to; None for bytes
    that belong to no task (an undecodable message of an engine queue),
    whose dead letter is then kept on its own. ``owner`` is the consumer
    whose lease the delivery runs under (its progress is written under it;
    without an owner no progress is written).
    """

    def __init__(
        self, store: TaskStore, task_id: str | None, begun: Begun, *, owner: str | None = None
    ) -> None:
        self._store = store
        self._task_id = task_id
        self._begun = begun
        self._owner = owner

    def mark_started(self, message: TaskMessage, attempt: int) -> bool:
        return self._begun.started

    def record_success(self, message: TaskMessage, result: Any, attempt: int) -> None:
        self._store.finish(message.id, TaskState.SUCCESS, result_json=result_json(result))

    def record_retry(
        self, message: TaskMessage, error: TaskError, attempt: int, delay_s: float
    ) -> None:
        self._store.schedule_retry(message.id, error, delay_s)

    def record_failure(
        self, message: TaskMessage, error: TaskError, attempt: int, dead_letter: DeadLetter | None
    ) -> None:
        self._store.finish(
            message.id, TaskState.FAILURE, error=error, dead_letter=dead_letter, attempts=attempt
        )

    def record_cancelled(self, message: TaskMessage, attempt: int) -> None:
        self._store.finish(message.id, TaskState.CANCELLED)

    def record_progress(self, message: TaskMessage, attempt: int, progress: TaskProgress) -> bool:
        if self._owner is None or not self._begun.started:
            return False
        return self._store.write_progress(message.id, self._owner, progress_json(progress))

    def record_unprocessable(
        self, message: TaskMessage | None, error: TaskError, dead_letter: DeadLetter | None
    ) -> None:
        task_id = message.id if message is not None else self._task_id
        if task_id is not None:
            self._store.finish(task_id, TaskState.FAILURE, error=error, dead_letter=dead_letter)
        elif dead_letter is not None:
            self._store.add_dead_letter(dead_letter)
