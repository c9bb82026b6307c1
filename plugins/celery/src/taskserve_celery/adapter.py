"""The ``celery`` adapter: Celery moves the messages, a store keeps the state.

Tasks are published as Celery messages (JSON, see :mod:`taskserve_celery.wire`)
on a Redis, RabbitMQ or filesystem broker and consumed by a Celery worker
embedded in the replica's process (:mod:`taskserve_celery.worker`). Status,
results, cancel requests, delivery counts, leases and dead letters live in a
:class:`~taskserve.kit.RedisTaskStore` at ``backend_url`` (or, for a
``file://`` backend, a :class:`~taskserve.kit.SqlLedgerStore` in a sqlite
file), so the adapter keeps every promise of the contract where Celery alone
does not: durable cancel, forward-only status, crash redelivery within the
lease, exact dead letters, and failure routing owned by this adapter instance.
Task priorities are the broker's: RabbitMQ's native ones, kombu's priority
lists on Redis (:func:`~taskserve_celery.engine.broker_priority`), message
file names in priority order on the filesystem broker
(:mod:`taskserve_celery.filesystem`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from celery import Celery

from taskserve.kit import (
    AdapterConfig,
    BrokerUnavailable,
    Capability,
    ConfigError,
    EnqueueOptions,
    RedisTaskStore,
    SqliteDialect,
    SqlLedgerStore,
    StoreAdapter,
    TaskMessage,
    TaskProcessorConfig,
    TaskResult,
    TaskRunner,
    task_priority,
)
from taskserve_celery.config import BrokerKind, CeleryAdapterConfig, StateKind
from taskserve_celery.consumer import CeleryConsumer
from taskserve_celery.deadletters import Mirror
from taskserve_celery.engine import (
    broker_failure,
    broker_queue_length,
    build_app,
    make_folders,
    publish,
    ready_count,
    task_queue,
)

_T = TypeVar("_T")

ENQUEUE_OPTIONS = ("countdown", "expires")
"""Celery's ``send_task`` options the adapter takes, with Celery's meaning."""

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a write to the sqlite state store waits for another process's lock."""


def _seconds(option: str, value: Any) -> float:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"enqueue option {option} must be a number of seconds, got {type(value).__name__}"
        )
    return float(value)


def _unix_time(option: str, value: Any) -> float:
    """A datetime (naive ones are UTC, as Celery reads them) or ISO 8601 text."""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError as e:
            raise ConfigError(f"enqueue option {option}: {e}") from None
    if not isinstance(value, datetime.datetime):
        raise ConfigError(
            f"enqueue option {option} must be a datetime or ISO 8601 text, got "
            f"{type(value).__name__}"
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return float(value.timestamp())


StateStore = RedisTaskStore | SqlLedgerStore


class CeleryAdapter(StoreAdapter[StateStore]):
    """Celery on Redis, RabbitMQ or the filesystem, with task state in Redis or sqlite.

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
        """Raise ConfigError if Celery's time limit in the adapter config
        (``app_custom_config``'s ``task_time_limit``, ``task_custom_config``'s
        ``time_limit``) disagrees with ``TaskProcessorConfig.task_time_limit_s``;
        when that is unset, Celery's limit becomes it (:attr:`config`)."""
        super().__init__(config, queue_name)
        self.config = self.settings.processor_config(self.config)
        self._app: Celery | None = None

    @classmethod
    def broker_queue_length(cls, broker_url: str, queue_name: str) -> int:
        """Messages waiting in ``queue_name`` on a Redis or RabbitMQ broker (what
        Ray Serve's queue autoscaling policy polls); 0 for a queue not declared."""
        return broker_queue_length(broker_url, queue_name)

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

    def _build_store(self) -> StateStore:
        if self.settings.state_kind is StateKind.SQLITE:
            return SqlLedgerStore(
                SqliteDialect(self.settings.state_path, SQLITE_BUSY_TIMEOUT_S),
                self.config.queue_name,
                result_ttl_s=self.config.result_ttl_s,
            )
        return RedisTaskStore(
            self.settings.state_url,
            self.config.queue_name,
            result_ttl_s=self.config.result_ttl_s,
            prefix=self.settings.key_prefix,
        )

    # -- connections -------------------------------------------------------
    def _connect(self) -> None:
        make_folders(self.settings)
        _ = self.app
        super()._connect()
        if isinstance(self.store, SqlLedgerStore):
            self.store.ensure_schema()  # the database file exists from the start

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
    def _enqueue_options(self, options: dict[str, Any]) -> EnqueueOptions:
        """Celery's ``countdown`` (as ``delay_s``: the store keeps the task back
        until then: PENDING, cancelable, never early) and ``expires`` (a task
        delivered later is not run: CANCELLED). ``eta`` and ``priority`` are
        taskserve's own enqueue arguments."""
        unknown = sorted(set(options) - set(ENQUEUE_OPTIONS))
        if unknown:
            raise ConfigError(
                f"unsupported enqueue option(s) {', '.join(unknown)}; taskserve-celery takes "
                f"{', '.join(ENQUEUE_OPTIONS)} (with Celery's meaning)"
            )
        now = time.time()
        countdown = options.get("countdown")
        not_before: float | None = None
        if countdown is not None:
            not_before = now + max(_seconds("countdown", countdown), 0.0)
        expires = options.get("expires")
        expires_at: float | None = None
        if isinstance(expires, (str, datetime.datetime)):
            expires_at = _unix_time("expires", expires)
        elif expires is not None:
            expires_at = now + _seconds("expires", expires)
        return EnqueueOptions(not_before=not_before, expires_at=expires_at)

    def _enqueue(self, message: TaskMessage, idempotency_key: str | None) -> TaskResult:
        """A task enqueued without a priority gets ``task_custom_config``'s
        ``priority`` (when set) in its record too, so that retries, redrives and
        the ledger see the priority it was published with."""
        default = (self.settings.task_custom_config or {}).get("priority")
        if message.priority is None and default is not None:
            message = dataclasses.replace(message, priority=task_priority(default))
        return super()._enqueue(message, idempotency_key)

    def _publish(self, message: TaskMessage) -> None:
        publish(
            self.app,
            message,
            self.config.queue_name,
            self.settings.broker_kind,
            self.settings.task_custom_config,
        )

    def _engine_depth(self) -> int:
        return int(self._with_broker(lambda channel: ready_count(channel, self.config.queue_name)))

    # -- consumer ----------------------------------------------------------
    def _make_consumer(self, runner: TaskRunner, concurrency: int) -> CeleryConsumer:
        """The consumer; on RabbitMQ the queue is declared first, so that a queue
        RabbitMQ refuses (one created with other arguments) is a ConfigError
        here instead of a worker that never starts consuming. A broker that
        cannot be reached is left to the worker, which retries connecting."""
        if self.settings.broker_kind is BrokerKind.AMQP:
            with contextlib.suppress(BrokerUnavailable):
                self._engine_depth()
        return CeleryConsumer(
            app=self.app,
            config=self.config,
            broker_kind=self.settings.broker_kind,
            store=self.store,
            runner=runner,
            concurrency=concurrency,
            publish=self._publish,
            engine_depth=self._engine_depth,
            mirror_dead_letter=(
                Mirror(self.app, self.store) if self.settings.mirror_dead_letters else None
            ),
        )

    # -- dead letters --------------------------------------------------------
    def _delete_dead_letters(self, queue: str, ids: list[str] | None) -> int:
        """Delete records; deleting all of a queue also purges its broker copy."""
        deleted = super()._delete_dead_letters(queue, ids)
        if ids is None and self.settings.mirror_dead_letters:
            self._with_broker(lambda channel: task_queue(queue)(channel).purge())  # type: ignore[no-untyped-call]
        return deleted


CeleryTaskProcessorAdapter = CeleryAdapter
"""The name of Ray Serve's built-in Celery adapter class, for code that imports it."""
