"""The ``dramatiq`` adapter: tasks on Dramatiq's Redis or RabbitMQ broker.

Messages move through Dramatiq; task status, results, cancel requests, leases,
dead letters and the ledger of published messages are kept in the kit's
Redis task store, so the adapter keeps every promise of the contract on both
brokers, and a message Dramatiq loses is published again. Task priorities are
RabbitMQ's own, and on Redis one list per level (see
:mod:`taskserve_dramatiq.engine`).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from taskserve.kit import (
    AdapterConfig,
    BrokerUnavailable,
    Capability,
    ConfigError,
    EnqueueOptions,
    RedisTaskStore,
    StoreAdapter,
    TaskMessage,
    TaskProcessorConfig,
    TaskResult,
    TaskRunner,
    redact_url,
    secret_value,
)
from taskserve_dramatiq.config import DramatiqAdapterConfig
from taskserve_dramatiq.consumer import DramatiqConsumer
from taskserve_dramatiq.engine import TaskBroker, build_broker
from taskserve_dramatiq.settings import DRAMATIQ_OPTIONS
from taskserve_dramatiq.wire import check_json_encoder, to_dramatiq

logger = logging.getLogger(__name__)

_RESERVED_SUFFIXES = (".DQ", ".XQ")


class DramatiqAdapter(StoreAdapter[RedisTaskStore]):
    """Queue adapter on Dramatiq (Redis or RabbitMQ broker)."""

    alias: ClassVar[str] = "dramatiq"
    config_model: ClassVar[type[AdapterConfig]] = DramatiqAdapterConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)

    def __init__(
        self, config: TaskProcessorConfig | AdapterConfig, queue_name: str | None = None
    ) -> None:
        super().__init__(config, queue_name)
        if self.config.queue_name.endswith(_RESERVED_SUFFIXES):
            raise ConfigError(
                f"queue_name '{self.config.queue_name}' ends with .DQ or .XQ, which Dramatiq "
                "reserves for its delay and dead-letter queues; choose another name"
            )
        # Dramatiq's time limit is the core one: the same interruption, for
        # async handlers too, and handlers outliving it are detected.
        self.config = self.settings.processor_config(self.config)
        self.broker: TaskBroker = build_broker(self.settings, self.config)

    @property
    def settings(self) -> DramatiqAdapterConfig:
        """The typed adapter_config."""
        assert isinstance(self.adapter_config, DramatiqAdapterConfig)
        return self.adapter_config

    def _build_store(self) -> RedisTaskStore:
        settings = self.settings
        return RedisTaskStore(
            secret_value(settings.state_url or settings.broker_url),
            self.config.queue_name,
            result_ttl_s=self.config.result_ttl_s,
            prefix=settings.key_prefix,
        )

    # -- connections ----------------------------------------------------------
    def _connect(self) -> None:
        check_json_encoder()
        super()._connect()

    def _close_engine(self) -> None:
        self.broker.close()

    def _broker_call(self, action: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)``; a failure is BrokerUnavailable, except a ConfigError (a
        RabbitMQ queue that cannot be declared), raised as it is."""
        try:
            return fn(*args)
        except ConfigError:
            raise
        except Exception as e:
            raise BrokerUnavailable(
                f"{action} failed on the Dramatiq broker at "
                f"{redact_url(self.settings.broker_url)}: {type(e).__name__}: "
                f"{redact_url(str(e))}"
            ) from e

    def _ping_engine(self) -> None:
        self._broker_call("ping", self.broker.ping)

    # -- producer ---------------------------------------------------------------
    def _enqueue_options(self, options: dict[str, Any]) -> EnqueueOptions:
        """No engine option is taken: Dramatiq's message options (``delay``,
        ``max_retries``, ...) are refused, each naming what to use instead."""
        if not options:
            return EnqueueOptions()
        reasons = [
            f"{key}: {DRAMATIQ_OPTIONS.get(key, 'not an option taskserve-dramatiq takes')}"
            for key in sorted(options)
        ]
        raise ConfigError(
            "unsupported enqueue option(s); taskserve-dramatiq takes none: " + "; ".join(reasons)
        )

    def _enqueue(self, message: TaskMessage, idempotency_key: str | None) -> TaskResult:
        check_json_encoder()
        return super()._enqueue(message, idempotency_key)

    def _publish(self, message: TaskMessage) -> None:
        self._broker_call(
            f"publishing task {message.id}",
            self.broker.enqueue,
            to_dramatiq(message, self.config.queue_name),
        )

    def _publish_first(self, message: TaskMessage) -> None:
        self._broker_call(
            f"publishing task {message.id}",
            self.broker.enqueue_first,
            to_dramatiq(message, self.config.queue_name),
        )

    def _engine_depth(self) -> int:
        return int(self._broker_call("reading the queue depth", self.broker.queue_depth))

    # -- consumer -------------------------------------------------------------
    def _make_consumer(self, runner: TaskRunner, concurrency: int) -> DramatiqConsumer:
        check_json_encoder()
        return DramatiqConsumer(
            broker=self.broker,
            store=self.store,
            config=self.config,
            settings=self.settings,
            runner=runner,
            concurrency=concurrency,
            publish=self._publish,
            publish_first=self._publish_first,
        )
