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
from typing import Any, ClassVar, TypeVar

from celery import Celery

from taskserve.kit import (
    AdapterConfig,
    BrokerUnavailable,
    Capability,
    RedisTaskStore,
    StoreAdapter,
    TaskMessage,
    TaskProcessorConfig,
    TaskRunner,
)
from taskserve_celery.config import BrokerKind, CeleryAdapterConfig
from taskserve_celery.consumer import CeleryConsumer
from taskserve_celery.engine import broker_failure, build_app, publish, ready_count

_T = TypeVar("_T")


class CeleryAdapter(StoreAdapter[RedisTaskStore]):
    """Celery on Redis or RabbitMQ, with task state in Redis.

    Construct it with a :class:`~taskserve.TaskProcessorConfig` whose
    ``adapter_config`` is a :class:`CeleryAdapterConfig` (or a dict of its
    fields), or with a ``CeleryAdapterConfig`` and ``queue_name``. With a
    ``CeleryAdapterConfig`` alone, as in Ray Serve's PDF template, it is a
    producer that sends each task to the queue of the ``@task_consumer``
    handling it.
    """

    alias: ClassVar[str] = "celery"
    config_model: ClassVar[type[AdapterConfig]] = CeleryAdapterConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)

    def __init__(
        self, config: TaskProcessorConfig | AdapterConfig, queue_name: str | None = None
    ) -> None:
        super().__init__(config, queue_name)
        self._app: Celery | None = None

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

    def _build_store(self) -> RedisTaskStore:
        return RedisTaskStore(
            self.settings.state_url,
            self.config.queue_name,
            result_ttl_s=self.config.result_ttl_s,
            prefix=self.settings.key_prefix,
        )

    # -- connections -------------------------------------------------------
    def _connect(self) -> None:
        _ = self.app
        super()._connect()

    def _close_engine(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None

    def _ping_engine(self) -> None:
        if self.settings.broker_kind is BrokerKind.REDIS and (
            self.settings.backend_url is None
            or self.settings.backend_url == self.settings.broker_url
        ):
            return  # the store's ping reached this Redis already
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
            if not broker_failure(e):
                raise
            raise BrokerUnavailable(
                f"cannot reach the broker {self.settings.broker_url}: {type(e).__name__}: {e}"
            ) from e

    # -- producer ----------------------------------------------------------
    def _publish(self, message: TaskMessage) -> None:
        publish(self.app, message, self.config.queue_name, self.settings.task_custom_config)

    def _engine_depth(self) -> int:
        return int(self._with_broker(lambda channel: ready_count(channel, self.config.queue_name)))

    # -- consumer ----------------------------------------------------------
    def _make_consumer(self, runner: TaskRunner, concurrency: int) -> CeleryConsumer:
        return CeleryConsumer(
            app=self.app,
            config=self.config,
            broker_kind=self.settings.broker_kind,
            store=self.store,
            runner=runner,
            concurrency=concurrency,
            publish=self._publish,
            engine_depth=self._engine_depth,
        )


CeleryTaskProcessorAdapter = CeleryAdapter
"""The name of Ray Serve's built-in Celery adapter class, for code that imports it."""
