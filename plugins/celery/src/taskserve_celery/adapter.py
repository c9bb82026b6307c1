"""The ``celery`` adapter: Celery moves the messages, Redis keeps the state.

Tasks are published as Celery messages (JSON, see :mod:`taskserve_celery.wire`)
on a Redis or RabbitMQ broker and consumed by a Celery worker embedded in the
replica's process (:mod:`taskserve_celery.worker`). Status, results, cancel
requests, delivery counts, leases and dead letters live in a
:class:`~taskserve.stores.redis_store.RedisTaskStore` at ``backend_url``, so the
adapter keeps every promise of the contract where Celery alone does not:
durable cancel, forward-only status, crash redelivery within the lease,
exact dead letters, and failure routing owned by this adapter instance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast

from celery import Celery

from taskserve.capabilities import Capability
from taskserve.config import AdapterConfig, TaskProcessorConfig
from taskserve.errors import BrokerUnavailable, ConfigError
from taskserve.execution import TaskRunner
from taskserve.secrets import redact_url
from taskserve.serialization import TaskMessage
from taskserve.stores.redis_adapter import RedisStoreAdapter
from taskserve.stores.redis_store import RedisTaskStore
from taskserve_celery.app import build_app, publish, ready_count
from taskserve_celery.config import BrokerKind, CeleryAdapterConfig
from taskserve_celery.consumer import CeleryConsumer
from taskserve_celery.delays import DelayedRetries

_T = TypeVar("_T")


class CeleryAdapter(RedisStoreAdapter):
    """Celery on Redis or RabbitMQ, with task state in Redis.

    Construct it with a :class:`~taskserve.TaskProcessorConfig` whose
    ``adapter_config`` is a :class:`CeleryAdapterConfig` (or a dict of its
    fields), or with a ``CeleryAdapterConfig`` and ``queue_name``. With a
    ``CeleryAdapterConfig`` alone, as in Ray Serve's PDF template, it returns
    a producer (:class:`taskserve.serve.TaskAdapter`) that sends each task to
    the queue of the ``@task_consumer`` handling it.
    """

    alias: ClassVar[str] = "celery"
    config_model: ClassVar[type[AdapterConfig]] = CeleryAdapterConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)

    def __new__(
        cls, config: TaskProcessorConfig | CeleryAdapterConfig, queue_name: str | None = None
    ) -> CeleryAdapter:
        if isinstance(config, CeleryAdapterConfig) and queue_name is None:
            # Ray Serve's PDF template builds its producer from the adapter config
            # alone: give it the core's producer, which sends each task to the
            # queue whose @task_consumer handles it.
            from taskserve.serve.compat import TaskAdapter

            return cast(CeleryAdapter, TaskAdapter(config, adapter=cls))
        return super().__new__(cls)

    def __init__(
        self,
        config: TaskProcessorConfig | CeleryAdapterConfig,
        queue_name: str | None = None,
    ) -> None:
        if isinstance(config, CeleryAdapterConfig):
            assert queue_name is not None  # see __new__
            config = TaskProcessorConfig(queue_name=queue_name, adapter_config=config)
        elif queue_name is not None:
            raise ConfigError("queue_name is taken from the TaskProcessorConfig; do not pass both")
        super().__init__(config)
        self._app: Celery | None = None
        self._store: RedisTaskStore | None = None
        self._delays: DelayedRetries | None = None

    @property
    def settings(self) -> CeleryAdapterConfig:
        """The typed adapter_config."""
        assert isinstance(self.adapter_config, CeleryAdapterConfig)
        return self.adapter_config

    @property
    def app(self) -> Celery:
        """This adapter's own Celery app (never the current or default app)."""
        if self._app is None:
            self._app = build_app(self.config, self.settings)
        return self._app

    @property
    def store(self) -> RedisTaskStore:
        """The Redis state store at ``backend_url``."""
        if self._store is None:
            self._store = RedisTaskStore(
                self.settings.state_url,
                self.config.queue_name,
                result_ttl_s=self.config.result_ttl_s,
                prefix=self.settings.key_prefix,
            )
        return self._store

    @property
    def delays(self) -> DelayedRetries:
        """Retries of this queue waiting for their backoff."""
        if self._delays is None:
            key = f"{self.settings.key_prefix}:celery:{self.config.queue_name}:delayed"
            self._delays = DelayedRetries(self.store.client, key)
        return self._delays

    # -- connections -------------------------------------------------------
    def _connect(self) -> None:
        _ = self.app, self.store, self.delays

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
            self._delays = None
        if self._app is not None:
            self._app.close()
            self._app = None

    def _ping(self) -> None:
        self.store.ping()
        if self.settings.broker_kind is BrokerKind.REDIS and (
            self.settings.backend_url is None
            or self.settings.backend_url == self.settings.broker_url
        ):
            return
        self._with_broker(lambda channel: ready_count(channel, self.config.queue_name))

    def _with_broker(self, call: Callable[[Any], _T]) -> _T:
        """Run ``call(channel)`` on a pooled broker connection; BrokerUnavailable on failure."""
        try:
            with self.app.pool.acquire(block=True, timeout=5) as connection:
                try:
                    connection.ensure_connection(max_retries=1, timeout=5)
                    return call(connection.default_channel)
                except BaseException:
                    connection.collect()  # the pool reconnects it on next use
                    raise
        except Exception as e:
            raise BrokerUnavailable(
                f"cannot reach the broker {redact_url(str(self.settings.broker_url))}: "
                f"{redact_url(str(e))}"
            ) from e

    # -- producer ----------------------------------------------------------
    def _publish(self, message: TaskMessage) -> None:
        publish(self.app, message, self.config.queue_name, self.settings.task_custom_config)

    # -- consumer ----------------------------------------------------------
    def _start_consumer(
        self, runner: TaskRunner, concurrency: int, **kwargs: Any
    ) -> CeleryConsumer:
        if kwargs:
            raise ConfigError(f"unknown start_consumer options: {', '.join(sorted(kwargs))}")
        consumer = CeleryConsumer(
            app=self.app,
            config=self.config,
            broker_kind=self.settings.broker_kind,
            store=self.store,
            delays=self.delays,
            runner=runner,
            concurrency=concurrency,
            publish=self._publish,
        )
        consumer.start()
        return consumer

    # -- operations --------------------------------------------------------
    def _queue_depth(self) -> int:
        ready = self._with_broker(lambda channel: ready_count(channel, self.config.queue_name))
        return int(ready) + self.delays.count()
