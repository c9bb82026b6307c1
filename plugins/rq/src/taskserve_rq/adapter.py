"""The ``rq`` adapter: taskserve tasks as RQ jobs on Redis.

RQ moves the jobs (its queue list, job hashes, started and scheduled
registries, its worker loop); taskserve's Redis task store keeps what RQ does
not promise: forward-only status, durable cancel requests, delivery counts
(crashed deliveries included), dead letters with the exact payload, and
idempotency keys. See :mod:`taskserve_rq.consumer` for how a delivery runs and
:mod:`taskserve_rq.engine` for priorities (an RQ queue per level), leases and
crash redelivery.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import redis
from rq.utils import get_version

from taskserve.kit import (
    AdapterConfig,
    BrokerUnavailable,
    Capability,
    ConfigError,
    Handler,
    RedisTaskStore,
    StoreAdapter,
    TaskMessage,
    TaskProcessorConfig,
    TaskResult,
    TaskRunner,
    batch_options,
    redact_url,
    redis_unavailable,
    secret_value,
)
from taskserve_rq.config import RQAdapterConfig
from taskserve_rq.consumer import RQConsumer
from taskserve_rq.engine import RQBroker
from taskserve_rq.timeouts import time_limited
from taskserve_rq.wire import valid_job_id

logger = logging.getLogger(__name__)

MIN_REDIS_VERSION = (6, 2, 0)
"""RQ fetches with BLMOVE (into its intermediate list) from Redis 6.2 on; older
servers get BLPOP, which loses a fetched job when its consumer dies."""

SOCKET_TIMEOUT_S = 30.0
"""Socket timeout of Redis commands (RQ raises it above a blocking fetch)."""


class RQAdapter(StoreAdapter[RedisTaskStore]):
    """Tasks as RQ jobs; consumers are RQ SimpleWorkers in threads of the replica."""

    alias: ClassVar[str] = "rq"
    config_model: ClassVar[type[AdapterConfig]] = RQAdapterConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)

    def __init__(
        self, config: TaskProcessorConfig | AdapterConfig, queue_name: str | None = None
    ) -> None:
        super().__init__(config, queue_name)
        settings = self.settings
        self._client: redis.Redis = redis.Redis.from_url(
            secret_value(settings.redis_url),
            socket_connect_timeout=5,
            socket_timeout=SOCKET_TIMEOUT_S,
            health_check_interval=30,
        )
        self.broker = RQBroker(
            self._client,
            self.config.queue_name,
            key_prefix=settings.key_prefix,
            job_timeout_s=settings.job_timeout_s,
            job_result_ttl_s=settings.job_result_ttl_s,
        )
        self._time_limits: dict[str, float | None] = {}

    @property
    def settings(self) -> RQAdapterConfig:
        """The typed adapter_config."""
        assert isinstance(self.adapter_config, RQAdapterConfig)
        return self.adapter_config

    def _build_store(self) -> RedisTaskStore:
        return RedisTaskStore(
            secret_value(self.settings.redis_url),
            self.config.queue_name,
            result_ttl_s=self.config.result_ttl_s,
            prefix=self.settings.key_prefix,
            client=self._client,
        )

    @contextmanager
    def _redis(self, doing: str) -> Iterator[None]:
        """Turn Redis errors into BrokerUnavailable, with the URL redacted."""
        try:
            yield
        except redis.RedisError as e:
            if not redis_unavailable(e) and not isinstance(e, redis.ResponseError):
                raise
            raise BrokerUnavailable(
                f"{doing} failed on Redis at {redact_url(self.settings.redis_url)}: "
                f"{type(e).__name__}: {e}"
            ) from e

    # -- handlers -------------------------------------------------------------
    def register_task_handle(self, func: Handler, name: str | None = None) -> None:
        """Route tasks called ``name`` to ``func``, under the job's RQ timeout. A
        batched handler runs several jobs in one call: the core's time limit
        bounds that call, RQ's job timeout does not apply to it."""
        if batch_options(func) is not None:
            super().register_task_handle(func, name)
            return
        super().register_task_handle(time_limited(func, self._time_limit), name)

    def _time_limit(self, task_id: str) -> float | None:
        return self._time_limits.get(task_id, self.settings.job_timeout_s)

    # -- contract primitives ---------------------------------------------------
    def _close_engine(self) -> None:
        self._client.close()

    def _enqueue(self, message: TaskMessage, idempotency_key: str | None) -> TaskResult:
        if not valid_job_id(message.id):
            raise ConfigError(
                f"task id {message.id!r} cannot be an RQ job id: use letters, digits, "
                "'_' and '-' only"
            )
        return super()._enqueue(message, idempotency_key)

    def _publish(self, message: TaskMessage) -> None:
        with self._redis(f"enqueuing task {message.id}"):
            self.broker.publish(message)

    def _publish_first(self, message: TaskMessage) -> None:
        with self._redis(f"enqueuing task {message.id}"):
            self.broker.publish(message, first=True)

    def _unqueue(self, task_id: str) -> None:
        with self._redis(f"removing cancelled task {task_id} from the queue"):
            self.broker.unqueue(task_id)

    def _engine_depth(self) -> int:
        with self._redis("reading the queue depth"):
            return self.broker.queued()

    def _make_consumer(self, runner: TaskRunner, concurrency: int) -> RQConsumer:
        with self._redis("checking the Redis version"):
            version = get_version(self._client)
        if tuple(version) < MIN_REDIS_VERSION:
            raise ConfigError(
                f"the rq adapter needs Redis {'.'.join(map(str, MIN_REDIS_VERSION))} or newer "
                f"(for BLMOVE); {redact_url(self.settings.redis_url)} runs "
                f"{'.'.join(map(str, version))}"
            )
        settings = self.settings
        return RQConsumer(
            broker=self.broker,
            store=self.store,
            config=self.config,
            runner=runner,
            concurrency=concurrency,
            publish=self._publish,
            publish_first=self._publish_first,
            time_limits=self._time_limits,
            default_time_limit_s=settings.job_timeout_s,
            job_result_ttl_s=settings.job_result_ttl_s,
            dequeue_timeout_s=settings.dequeue_timeout_s,
        )
