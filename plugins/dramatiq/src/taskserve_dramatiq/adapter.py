"""The ``dramatiq`` adapter: tasks on Dramatiq's Redis or RabbitMQ broker.

Messages move through Dramatiq; task status, results, cancel requests, leases
and dead letters are kept in a :class:`~taskserve.stores.redis_store.RedisTaskStore`,
so the adapter keeps every promise of the contract on both brokers.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from taskserve.capabilities import Capability
from taskserve.config import AdapterConfig, TaskProcessorConfig
from taskserve.errors import BrokerUnavailable, ConfigError
from taskserve.execution import TaskRunner
from taskserve.models import TaskResult
from taskserve.secrets import redact_url
from taskserve.serialization import TaskMessage
from taskserve.stores.redis_adapter import RedisStoreAdapter
from taskserve.stores.redis_store import RedisTaskStore
from taskserve_dramatiq.brokers import TaskBroker, build_broker
from taskserve_dramatiq.config import DramatiqAdapterConfig
from taskserve_dramatiq.consumer import DramatiqConsumer
from taskserve_dramatiq.wire import check_json_encoder, to_dramatiq

logger = logging.getLogger(__name__)

_RESERVED_SUFFIXES = (".DQ", ".XQ")


class DramatiqAdapter(RedisStoreAdapter):
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
        self._store = RedisTaskStore(
            settings.results_url or settings.broker_url,
            config.queue_name,
            result_ttl_s=config.result_ttl_s,
            prefix=settings.results_prefix,
        )
        self.broker: TaskBroker = build_broker(settings, config)

    @property
    def store(self) -> RedisTaskStore:
        """The Redis store of this queue's task records and dead letters."""
        return self._store

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
        return super()._enqueue(message, idempotency_key)

    def _publish(self, message: TaskMessage) -> None:
        self._broker_call(
            f"publishing task {message.id}",
            self.broker.enqueue,
            to_dramatiq(message, self.config.queue_name),
        )

    # -- consumer -------------------------------------------------------------
    def _start_consumer(
        self, runner: TaskRunner, concurrency: int, **kwargs: Any
    ) -> DramatiqConsumer:
        if kwargs:
            raise ConfigError(f"unknown start_consumer options: {', '.join(sorted(kwargs))}")
        check_json_encoder()
        consumer = DramatiqConsumer(
            self.broker, self.store, self.config, self.settings, runner, concurrency
        )
        consumer.start()
        return consumer

    # -- operations -------------------------------------------------------------
    def _queue_depth(self) -> int:
        return int(self._broker_call("reading the queue depth", self.broker.queue_depth))
