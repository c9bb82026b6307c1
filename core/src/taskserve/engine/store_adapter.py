"""The store-backed adapter: every primitive of the contract, on a task store.

:class:`StoreAdapter` implements the protected primitives of
:class:`~taskserve.TaskProcessorAdapter` - enqueue, status, cancel,
retry-of-a-finished-task, metrics, dead letters and task listing - on a
:class:`~taskserve.engine.store.TaskStore`. An engine adds only its own part:

* a store that is also the queue (sqlite, PostgreSQL): ``_build_store``
  returns a :class:`~taskserve.engine.store.QueueStore` and ``_make_consumer``
  a :class:`~taskserve.engine.polling.PollingConsumer`; nothing is published;
* a message engine beside a ledger store (Celery, Dramatiq, RQ):
  ``_publish`` sends a message. The task's record is written first; if the
  publish is refused the record is removed again and the enqueue fails. A
  message the engine accepted and then lost, or a record that outlived a
  failed publish, is published by a consumer's reconciler, as are retries.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Any, Generic, TypeVar

from taskserve.adapter import RunningConsumer, TaskProcessorAdapter
from taskserve.adapter_config import AdapterConfig
from taskserve.config import TaskProcessorConfig
from taskserve.engine.consumer import ConsumerBase
from taskserve.engine.runner import TaskRunner
from taskserve.engine.store import LedgerStore, TaskStore, WorkerDirectory
from taskserve.errors import IdempotencyKeyReused, TaskNotFound
from taskserve.models import AdapterMetrics, DeadLetter, TaskResult
from taskserve.serialization import TaskMessage, payload_fingerprint
from taskserve.states import TaskState

logger = logging.getLogger("taskserve.adapter")

StoreT = TypeVar("StoreT", bound=TaskStore)


class StoreAdapter(TaskProcessorAdapter, Generic[StoreT]):
    """An adapter whose task state lives in a :class:`TaskStore`.

    Subclasses implement :meth:`_build_store` and :meth:`_make_consumer`;
    engines that carry messages themselves also implement :meth:`_publish`
    (and optionally :meth:`_publish_first`, :meth:`_ping_engine`, :meth:`_engine_depth`,
    :meth:`_unqueue`, :meth:`_close_engine`).
    """

    def __init__(
        self, config: TaskProcessorConfig | AdapterConfig, queue_name: str | None = None
    ) -> None:
        super().__init__(config, queue_name)
        self._store: StoreT | None = None

    @property
    def store(self) -> StoreT:
        """The store of this queue's tasks (built on first use)."""
        if self._store is None:
            self._store = self._build_store()
        return self._store

    # -- what a subclass supplies ----------------------------------------------
    @abstractmethod
    def _build_store(self) -> StoreT:
        """The task store of ``config.queue_name``."""

    @abstractmethod
    def _make_consumer(self, runner: TaskRunner, concurrency: int) -> ConsumerBase:
        """The consumer of this queue, not yet started."""

    def _publish(self, message: TaskMessage) -> None:
        """Hand ``message`` to the engine; BrokerUnavailable if it cannot. Nothing
        by default: a queue store's insert queued the task already."""

    def _publish_first(self, message: TaskMessage) -> None:
        """Hand ``message`` to the engine at the head of its queue, where the
        engine can put it there; the ledger publishes a task again this way
        after a consumer crash or a lost message, so that it runs within the
        lease and not behind the backlog. :meth:`_publish` by default."""
        self._publish(message)

    def _ping_engine(self) -> None:
        """Raise if the engine (beside the store) cannot be reached."""

    def _engine_depth(self) -> int:
        """Messages waiting in the engine's queue (the reconciler's hint that a
        queue is empty); raise NotImplementedError if the engine cannot tell."""
        raise NotImplementedError

    def _unqueue(self, task_id: str) -> None:
        """Take a just-cancelled task's message off the engine's queue, where the
        engine can; optional, since a consumer skips cancelled tasks anyway."""

    def _close_engine(self) -> None:
        """Release the engine's connections."""

    # -- the contract's primitives ------------------------------------------------
    def _connect(self) -> None:
        _ = self.store

    def _close(self) -> None:
        try:
            self._close_engine()
        finally:
            if self._store is not None:
                self._store.close()

    def _ping(self) -> None:
        self.store.ping()
        self._ping_engine()

    def _enqueue(self, message: TaskMessage, idempotency_key: str | None) -> TaskResult:
        inserted = self.store.insert(message, idempotency_key)
        if not inserted.created:
            if idempotency_key is not None:
                self._check_same_payload(idempotency_key, inserted.result.id, message)
            return inserted.result
        if inserted.scheduled:  # a delayed task: the ledger publishes it when due
            return inserted.result
        try:
            self._publish(message.with_seq(inserted.seq))
        except BaseException:
            # Refused: nothing is left behind, the idempotency key included. Should
            # the record outlive this (the store failing too), the ledger publishes
            # it, and a retry with the same key returns it.
            try:
                self.store.discard(message.id)
            except Exception:
                logger.warning(
                    "taskserve: could not remove the record of unsent task %s; a consumer "
                    "of queue '%s' publishes it",
                    message.id,
                    self.config.queue_name,
                    exc_info=True,
                )
            raise
        return inserted.result

    def _check_same_payload(self, key: str, task_id: str, message: TaskMessage) -> None:
        """Raise IdempotencyKeyReused unless the key's first task runs what
        ``message`` would: the first task's stored payload is the fingerprint."""
        try:
            first = self.store.message(task_id)
        except TaskNotFound:
            return  # expired meanwhile: nothing left to compare with
        if payload_fingerprint(first.name, first.args, first.kwargs) != payload_fingerprint(
            message.name, message.args, message.kwargs
        ):
            raise IdempotencyKeyReused(key, task_id)

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

    def _start_consumer(self, runner: TaskRunner, concurrency: int) -> RunningConsumer:
        consumer = self._make_consumer(runner, concurrency)
        consumer.start()
        return consumer

    def _metrics(self) -> AdapterMetrics:
        counts = self.store.counts()
        if isinstance(self.store, LedgerStore):
            # Published and unclaimed (cancelled ones left out), plus what waits
            # to be published: exact, whatever the engine's own count says.
            queued = counts.queued + self.store.unclaimed()
        else:
            queued = counts.queued
        return AdapterMetrics(
            queue_name=self.config.queue_name,
            queue_depth=queued,
            in_flight=counts.in_flight,
            dead_letters_failed=self.store.count_dead_letters(self.config.failed_task_queue_name),
            dead_letters_unprocessable=self.store.count_dead_letters(
                self.config.unprocessable_task_queue_name
            ),
        )

    def _workers(self) -> dict[str, dict[str, Any]]:
        if isinstance(self.store, WorkerDirectory):
            return self.store.workers()
        return super()._workers()

    def _list_dead_letters(
        self, queue: str, limit: int | None, ids: list[str] | None
    ) -> list[DeadLetter]:
        return self.store.dead_letters(queue, limit, ids)

    def _delete_dead_letters(self, queue: str, ids: list[str] | None) -> int:
        return self.store.delete_dead_letters(queue, ids)

    def _list_tasks(
        self, statuses: frozenset[TaskState] | None, limit: int, before: float | None
    ) -> list[TaskResult]:
        return self.store.recent(statuses, limit, before)
