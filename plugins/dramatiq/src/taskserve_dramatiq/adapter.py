"""The ``dramatiq`` adapter: tasks on Dramatiq's Redis or RabbitMQ broker.

Messages move through Dramatiq; task status, results, cancel requests, leases
and dead letters are kept in a :class:`~taskserve.stores.redis_store.RedisTaskStore`,
so the adapter keeps every promise of the contract on both brokers.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from taskserve.adapter import TaskProcessorAdapter
from taskserve.capabilities import Capability
from taskserve.config import AdapterConfig, TaskProcessorConfig
from taskserve.errors import BrokerUnavailable, ConfigError
from taskserve.execution import TaskRunner
from taskserve.models import AdapterMetrics, CancelOutcome, DeadLetter, TaskResult
from taskserve.secrets import redact_url
from taskserve.serialization import TaskMessage
from taskserve.states import TaskState
from taskserve.stores.redis_store import RedisTaskStore
from taskserve_dramatiq.brokers import TaskBroker, build_broker
from taskserve_dramatiq.config import DramatiqAdapterConfig
from taskserve_dramatiq.consumer import DramatiqConsumer
from taskserve_dramatiq.wire import check_json_encoder, to_dramatiq

logger = logging.getLogger(__name__)

_RESERVED_SUFFIXES = (".DQ", ".XQ")


class DramatiqAdapter(TaskProcessorAdapter):
    """Queue adapter on Dramatiq (Redis or RabbitMQ broker)."""

    alias: ClassVar[str] = "dramatiq"
    config_model: ClassVar[type[AdapterConfig]] = DramatiqAdapterConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)

    def __init__(self, config: TaskProcessorConfig) -> None:
        super().__init__(config)
        if config.queue_name.endswith(_RESERVED_SUFFIXES):
            raise ConfigError(
                f"queue_name '{config.queue_name}' ends with .DQ or .XQ, which Dramatiq "
                "reserves for its delay and dead-letter queues; choose another name"
            )
        settings = self.settings
        self.store = RedisTaskStore(
            settings.results_url or settings.broker_url,
            config.queue_name,
            result_ttl_s=config.result_ttl_s,
            prefix=settings.results_prefix,
        )
        self.broker: TaskBroker = build_broker(settings, config)
        self._consumer: DramatiqConsumer | None = None

    @property
    def settings(self) -> DramatiqAdapterConfig:
        """The typed adapter_config."""
        assert isinstance(self.adapter_config, DramatiqAdapterConfig)
        return self.adapter_config

    # -- connections ----------------------------------------------------------
    def _connect(self) -> None:
        check_json_encoder()

    def _close(self) -> None:
        try:
            self.broker.close()
        finally:
            self.store.close()

    def _broker_call(self, action: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as e:
            raise BrokerUnavailable(
                f"{action} failed on the Dramatiq broker at "
                f"{redact_url(self.settings.broker_url)}: {type(e).__name__}: "
                f"{redact_url(str(e))}"
            ) from e

    def _ping(self) -> None:
        self.store.ping()
        self._broker_call("ping", self.broker.ping)

    # -- producer ---------------------------------------------------------------
    def _enqueue(self, message: TaskMessage, idempotency_key: str | None) -> TaskResult:
        check_json_encoder()
        result, created = self.store.create(message, idempotency_key)
        if not created:
            return result
        try:
            self._broker_call(
                f"publishing task {message.id}",
                self.broker.enqueue,
                to_dramatiq(message, self.config.queue_name),
            )
        except BrokerUnavailable:
            try:
                self.store.discard(message.id)
            except Exception:
                logger.exception("taskserve: could not discard unpublished task %s", message.id)
            raise
        return result

    def _get_status(self, task_id: str) -> TaskResult:
        return self.store.status(task_id)

    def _get_message(self, task_id: str) -> TaskMessage:
        return self.store.message(task_id)

    def _cancel(self, task_id: str) -> CancelOutcome:
        changed, status = self.store.cancel(task_id)
        if status is TaskState.CANCELLED:
            message = "cancelled before it started; it will never run"
        elif changed:
            message = "cancel requested; the running handler is being stopped"
        else:
            message = f"already {status.value}; nothing changed"
        return CancelOutcome(id=task_id, cancelled=changed, status=status, message=message)

    # -- consumer -------------------------------------------------------------
    def _start_consumer(self, runner: TaskRunner, concurrency: int, **kwargs: Any) -> None:
        if kwargs:
            raise ConfigError(f"unknown start_consumer options: {', '.join(sorted(kwargs))}")
        check_json_encoder()
        self._consumer = DramatiqConsumer(
            self.broker, self.store, self.config, self.settings, runner, concurrency
        )
        self._consumer.start()

    def _stop_consumer(self, timeout: float) -> None:
        if self._consumer is not None:
            self._consumer.stop(timeout)
            self._consumer = None

    def _consumer_alive(self) -> bool:
        return self._consumer is not None and self._consumer.alive()

    # -- operations -------------------------------------------------------------
    def _metrics(self) -> AdapterMetrics:
        depth = self._broker_call("reading the queue depth", self.broker.queue_depth)
        return AdapterMetrics(
            queue_name=self.config.queue_name,
            queue_depth=int(depth),
            in_flight=self.store.in_flight(),
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
