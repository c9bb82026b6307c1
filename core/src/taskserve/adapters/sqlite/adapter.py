"""The embedded ``sqlite`` adapter.

Durable (a database file), needs no server, and is safe for many producer and
consumer processes sharing the file. It implements every capability of the
contract and is the reference the conformance suite is first proven on.
"""

from __future__ import annotations

from typing import Any, ClassVar

from taskserve.adapter import TaskProcessorAdapter
from taskserve.adapters.sqlite.config import SqliteAdapterConfig
from taskserve.adapters.sqlite.consumer import SqliteConsumer
from taskserve.adapters.sqlite.store import SqliteStore
from taskserve.capabilities import Capability
from taskserve.config import AdapterConfig, TaskProcessorConfig
from taskserve.execution import TaskRunner
from taskserve.models import AdapterMetrics, DeadLetter, TaskResult
from taskserve.serialization import TaskMessage
from taskserve.states import TaskState


class SqliteAdapter(TaskProcessorAdapter):
    """Queue and results in one sqlite database file."""

    alias: ClassVar[str] = "sqlite"
    config_model: ClassVar[type[AdapterConfig]] = SqliteAdapterConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)

    def __init__(self, config: TaskProcessorConfig) -> None:
        super().__init__(config)
        settings = self.settings
        self.store = SqliteStore(settings.path, settings.busy_timeout_s)

    @property
    def settings(self) -> SqliteAdapterConfig:
        """The typed adapter_config."""
        assert isinstance(self.adapter_config, SqliteAdapterConfig)
        return self.adapter_config

    def _connect(self) -> None:
        self.store.ensure_schema()

    def _close(self) -> None:
        self.store.close()

    def _ping(self) -> None:
        self.store.ping()

    def _enqueue(self, message: TaskMessage, idempotency_key: str | None) -> TaskResult:
        self.store.ensure_schema()
        return self.store.insert(message, idempotency_key)

    def _get_status(self, task_id: str) -> TaskResult:
        self.store.ensure_schema()
        return self.store.status(task_id)

    def _get_message(self, task_id: str) -> TaskMessage:
        self.store.ensure_schema()
        return self.store.message(task_id)

    def _cancel(self, task_id: str) -> tuple[bool, TaskState]:
        self.store.ensure_schema()
        return self.store.cancel(task_id, self.config.result_ttl_s)

    def _start_consumer(
        self, runner: TaskRunner, concurrency: int, **kwargs: Any
    ) -> SqliteConsumer:
        consumer = SqliteConsumer(
            self.store, self.config, runner, concurrency, self.settings.poll_interval_s
        )
        consumer.start()
        return consumer

    def _metrics(self) -> AdapterMetrics:
        counts = self.store.counts(self.config.queue_name)
        return AdapterMetrics(
            queue_name=self.config.queue_name,
            queue_depth=counts.get("PENDING", 0) + counts.get("RETRY", 0),
            in_flight=counts.get("STARTED", 0),
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
