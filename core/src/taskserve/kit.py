"""The engine kit: everything an adapter author uses, in one module.

A queue engine becomes a taskserve adapter by subclassing
:class:`StoreAdapter` and supplying a store and a consumer; the rest of the
contract - status rules, cancel, retries, dead letters, leases, metrics,
graceful stop, crash redelivery - comes from the kit. First-party plugins
import nothing else from the core; ``docs/writing-an-adapter.md`` walks
through one.

What is here, by job:

* the contract: :class:`TaskProcessorAdapter` (its protected primitives are
  what :class:`StoreAdapter` implements), :class:`RunningConsumer`,
  :class:`Capability`, :class:`AdapterConfig`, :class:`TaskProcessorConfig`,
  the value types (:class:`TaskMessage`, :class:`TaskResult`, ...) and errors;
* secrets in URLs: :data:`RedactedUrl` (a config field type),
  :class:`SecretUrl` (read the real URL with :func:`secret_value`),
  :func:`redact_url`, :data:`REVEAL_SECRETS`;
* running a delivery: :class:`TaskRunner`, :class:`DeliveryRecorder`,
  :class:`Outcome`, :class:`LeaseKeeper`; batched handlers (the
  ``batching`` capability, which the kit's consumers give every engine):
  :class:`BatchItem`, :class:`BatchOptions` and :func:`batch_options`, to
  tell a batched handler (one call for several tasks) from another;
* the store contract and its state-transition table: :class:`TaskStore`,
  :class:`QueueStore` (a store that is the queue), :class:`LedgerStore` (a
  store beside a message engine), :class:`StoreRecorder`;
* ready stores: :class:`SqlTaskStore` with a :class:`SqlDialect` per SQL
  engine, and :class:`RedisTaskStore` (needs the ``redis`` package) with
  :func:`redis_unavailable`, the one mapping of Redis errors to
  :class:`BrokerUnavailable` for every engine on Redis;
  engine (:class:`SqliteDialect` for sqlite), :class:`SqlLedgerStore` (the
  ledger of a message engine, in SQL), and :class:`RedisTaskStore` (needs the
  ``redis`` package); :class:`WorkerDirectory`, the stores that list the
  consumers alive;
* engine options of an enqueue (:class:`EnqueueOptions`), and
  :func:`warn_ignored` for a setting accepted for compatibility but not applied;
* listing a queue's recent tasks (a store's ``recent``): :func:`listing_limit`
  checks its ``limit`` (1 to :data:`MAX_TASK_LIST_LIMIT`);
* consumers: :class:`ConsumerBase` (engines with their own transport),
  :class:`PollingConsumer` (queue stores), :class:`Reconciler`;
* webhooks: :class:`WebhookOutbox` (a store keeping its tasks' webhook events,
  written in the same step as each state change), :class:`WebhookDelivery`
  (an entry a sender claims), :class:`WebhookEvent`, :class:`WebhookSettings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskserve.adapter import (
    MAX_TASK_LIST_LIMIT,
    EnqueueOptions,
    RunningConsumer,
    TaskProcessorAdapter,
    listing_limit,
)
from taskserve.adapter_config import AdapterConfig
from taskserve.batch import BatchItem, BatchOptions, batch_options
from taskserve.capabilities import Capability
from taskserve.config import TaskProcessorConfig, with_engine_time_limit
from taskserve.context import TaskContext, current_task
from taskserve.engine.consumer import ConsumerBase, Delivery, Settlement, decode
from taskserve.engine.leases import MAX_TICK_S, LeaseKeeper
from taskserve.engine.polling import PollingConsumer
from taskserve.engine.pool import DaemonThreadExecutor
from taskserve.engine.reconciler import Reconciler
from taskserve.engine.recorder import StoreRecorder, result_json
from taskserve.engine.runner import DeliveryRecorder, Handler, Outcome, TaskRunner
from taskserve.engine.sql.dialect import Cursor, Executor, SqlDialect
from taskserve.engine.sql.ledger import SqlLedgerStore
from taskserve.engine.sql.sqlite import SqliteDialect
from taskserve.engine.sql.store import SCHEMA_VERSION, SqlTaskStore
from taskserve.engine.store import (
    Begun,
    Claimed,
    Inserted,
    LedgerStore,
    QueueCounts,
    QueueStore,
    Republish,
    TaskStore,
    WebhookOutbox,
    WorkerDirectory,
)
from taskserve.engine.store_adapter import StoreAdapter
from taskserve.errors import (
    ArgumentBindingError,
    BrokerUnavailable,
    ConfigError,
    IdempotencyKeyReused,
    IgnoredSettingWarning,
    InvalidArgument,
    NonRetryableError,
    PayloadError,
    RecordingFailed,
    TaskCancelled,
    TaskIdInUse,
    TaskNotFound,
    TaskserveError,
    UndecodableMessage,
    UnknownTask,
    UnsupportedCapability,
    warn_ignored,
)
from taskserve.lazy import lazy_attributes
from taskserve.models import (
    AdapterMetrics,
    CancelOutcome,
    DeadLetter,
    DeadLetterKind,
    HealthReport,
    NotRedriven,
    RedriveOutcome,
    RemoteTaskError,
    TaskError,
    TaskProgress,
    TaskResult,
)
from taskserve.redaction import REVEAL_SECRETS, RedactedUrl, SecretUrl, redact_url, secret_value
from taskserve.scheduling import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    PRIORITY_LEVEL_SUFFIX,
    PRIORITY_LEVELS,
    priority_level_name,
    task_priority,
)
from taskserve.serialization import WIRE_VERSION, TaskMessage, dumps_json, new_task_id
from taskserve.states import TaskState
from taskserve.webhooks.events import WebhookDelivery
from taskserve.webhooks.settings import WebhookEvent, WebhookSettings

if TYPE_CHECKING:
    from taskserve.engine.redis.store import RedisTaskStore, redis_unavailable

_NEEDS_REDIS = ("RedisTaskStore", "redis_unavailable")


def __getattr__(name: str) -> Any:
    """Import :class:`RedisTaskStore` and :func:`redis_unavailable` on first use
    (they need the ``redis`` package)."""
    if name in _NEEDS_REDIS:
        from taskserve.engine.redis import store

        value = getattr(store, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'taskserve.kit' has no attribute '{name}'")


__all__ = [
    "MAX_PRIORITY",
    "MAX_TASK_LIST_LIMIT",
    "MAX_TICK_S",
    "MIN_PRIORITY",
    "PRIORITY_LEVELS",
    "PRIORITY_LEVEL_SUFFIX",
    "REVEAL_SECRETS",
    "SCHEMA_VERSION",
    "WIRE_VERSION",
    "AdapterConfig",
    "AdapterMetrics",
    "ArgumentBindingError",
    "BatchItem",
    "BatchOptions",
    "Begun",
    "BrokerUnavailable",
    "CancelOutcome",
    "Capability",
    "Claimed",
    "ConfigError",
    "ConsumerBase",
    "Cursor",
    "DaemonThreadExecutor",
    "DeadLetter",
    "DeadLetterKind",
    "Delivery",
    "DeliveryRecorder",
    "EnqueueOptions",
    "Executor",
    "Handler",
    "HealthReport",
    "IdempotencyKeyReused",
    "IgnoredSettingWarning",
    "Inserted",
    "InvalidArgument",
    "LeaseKeeper",
    "LedgerStore",
    "NonRetryableError",
    "NotRedriven",
    "Outcome",
    "PayloadError",
    "PollingConsumer",
    "QueueCounts",
    "QueueStore",
    "Reconciler",
    "RecordingFailed",
    "RedactedUrl",
    "RedisTaskStore",
    "RedriveOutcome",
    "RemoteTaskError",
    "Republish",
    "RunningConsumer",
    "SecretUrl",
    "Settlement",
    "SqlDialect",
    "SqlLedgerStore",
    "SqlTaskStore",
    "SqliteDialect",
    "StoreAdapter",
    "StoreRecorder",
    "TaskCancelled",
    "TaskContext",
    "TaskError",
    "TaskIdInUse",
    "TaskMessage",
    "TaskNotFound",
    "TaskProcessorAdapter",
    "TaskProcessorConfig",
    "TaskProgress",
    "TaskResult",
    "TaskRunner",
    "TaskState",
    "TaskStore",
    "TaskserveError",
    "UndecodableMessage",
    "UnknownTask",
    "UnsupportedCapability",
    "WebhookDelivery",
    "WebhookEvent",
    "WebhookOutbox",
    "WebhookSettings",
    "WorkerDirectory",
    "batch_options",
    "current_task",
    "decode",
    "dumps_json",
    "lazy_attributes",
    "listing_limit",
    "new_task_id",
    "priority_level_name",
    "redact_url",
    "redis_unavailable",
    "result_json",
    "secret_value",
    "task_priority",
    "warn_ignored",
    "with_engine_time_limit",
]
