"""Base class of adapters whose engine carries messages while a
:class:`~taskserve.stores.redis_store.RedisTaskStore` keeps the task state.

The Celery, Dramatiq and RQ adapters share everything but the engine: the
task record is created in the store before the message is published (and
removed again if publishing fails), status, cancel, retry-of-a-finished-task
and dead letters are answered by the store, and metrics add the engine's
queue depth to the store's count of running tasks.
"""

from __future__ import annotations

import logging
from abc import abstractmethod

from taskserve.adapter import TaskProcessorAdapter
from taskserve.models import AdapterMetrics, DeadLetter, TaskResult
from taskserve.serialization import TaskMessage
from taskserve.states import TaskState
from taskserve.stores.redis_store import RedisTaskStore

logger = logging.getLogger(__name__)


class RedisStoreAdapter(TaskProcessorAdapter):
    """An adapter whose task state lives in a :class:`RedisTaskStore`.

    Subclasses provide ``store``, ``_publish`` and ``_queue_depth`` (plus the
    consumer primitives of :class:`TaskProcessorAdapter`).
    """

    @property
    @abstractmethod
    def store(self) -> RedisTaskStore:
        """The store holding this queue's task records and dead letters."""

    @abstractmethod
    def _publish(self, message: TaskMessage) -> None:
        """Hand ``message`` to the engine; raise BrokerUnavailable if it cannot."""

    @abstractmethod
    def _queue_depth(self) -> int:
        """Tasks waiting in the engine (queued plus delayed retries)."""

    def _in_flight(self) -> int:
        """Tasks running now; by default those with a live lease in the store."""
        return self.store.in_flight()

    def _unqueue(self, task_id: str) -> None:
        """Take a just-cancelled task off the engine's queue, where the engine
        can; optional, since a consumer skips cancelled tasks anyway."""

    def _enqueue(self, message: TaskMessage, idempotency_key: str | None) -> TaskResult:
        result, created = self.store.create(message, idempotency_key)
        if not created:
            return result
        try:
            self._publish(message)
        except BaseException:
            try:
                self.store.discard(message.id)
            except Exception:
                logger.exception(
                    "taskserve: could not remove the record of unsent task %s", message.id
                )
            raise
        return result

    def _get_status(self, task_id: str) -> TaskResult:
        return self.store.status(task_id)

    def _get_message(self, task_id: str) -> TaskMessage:
        return self.store.message(task_id)

    def _cancel(self, task_id: str) -> tuple[bool, TaskState]:
        changed, status = self.store.cancel(task_id)
        if changed and status is TaskState.CANCELLED:
            try:
                self._unqueue(task_id)
            except Exception:
                logger.warning(
                    "taskserve: task %s is cancelled but stays queued until a consumer skips it",
                    task_id,
                    exc_info=True,
                )
        return changed, status

    def _metrics(self) -> AdapterMetrics:
        return AdapterMetrics(
            queue_name=self.config.queue_name,
            queue_depth=self._queue_depth(),
            in_flight=self._in_flight(),
            dead_letters_failed=self.store.count_dead_letters(self.config.failed_task_queue_name),
            dead_letters_unprocessable=self.store.count_dead_letters(
                self.config.unprocessable_task_queue_name
            ),
        )

    def _list_dead_letters(
        self, queue: str, limit: int | None, ids: list[str] | None
    ) -> list[DeadLetter]:
        return self.store.dead_letters(queue, limit, ids)

    def _delete_dead_letters(self, queue: str, ids: list[str] | None) -> int:
        return self.store.delete_dead_letters(queue, ids)
