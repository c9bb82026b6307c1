"""taskserve: asynchronous inference for Ray Serve with pluggable queue engines.

The public API is re-exported here; modules whose names start with an
underscore are internal. The Ray Serve integration (``task_consumer``,
``task_handler`` ...), the HTTP ingress (``task_router``) and the clients
(``TaskClient``) are imported lazily, on first use, so ``import taskserve``
needs neither Ray nor FastAPI nor httpx.
"""

from typing import Any

from taskserve.adapter import MAX_TASK_LIST_LIMIT, TaskProcessorAdapter
from taskserve.adapter_config import AdapterConfig
from taskserve.batch import BatchItem, BatchOptions, BatchResultError
from taskserve.capabilities import Capability
from taskserve.config import TaskProcessorConfig
from taskserve.context import TaskContext, current_task
from taskserve.engine.runner import DeliveryRecorder, Outcome, TaskRunner
from taskserve.errors import (
    AdapterNotFound,
    ArgumentBindingError,
    BrokerUnavailable,
    ConfigError,
    ConsumerLost,
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
    TaskTimeLimitExceeded,
    UndecodableMessage,
    UnknownTask,
    UnsupportedCapability,
)
from taskserve.factory import instantiate_adapter_from_config
from taskserve.hooks import TaskEvent, hookimpl
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
    TaskID,
    TaskProgress,
    TaskResult,
)
from taskserve.policy import NOT_GIVEN, HandlerPolicy, RetryPolicy
from taskserve.redaction import REVEAL_SECRETS, SecretUrl, redact_url, secret_value
from taskserve.registry import installed_adapters, resolve_adapter
from taskserve.serialization import TaskMessage
from taskserve.states import TaskState
from taskserve.webhooks.settings import DEFAULT_WEBHOOK_EVENTS, WebhookEvent, WebhookSettings

_LAZY: dict[str, str] = {
    # Ray Serve integration (Ray is imported only when a Serve feature is used).
    "task_consumer": "taskserve.serve",
    "task_handler": "taskserve.serve",
    "get_consumer": "taskserve.serve",
    "TaskAdapter": "taskserve.serve",
    "ConsumerUnhealthy": "taskserve.serve",
    "QueueDepthAutoscalingPolicy": "taskserve.serve",
    "queue_depth_autoscaling_policy": "taskserve.serve",
    "RayMetricsPlugin": "taskserve.serve",
    # HTTP ingress (FastAPI) and clients (httpx).
    "task_router": "taskserve.http",
    "create_task_app": "taskserve.http",
    "TaskClient": "taskserve.client",
    "AsyncTaskClient": "taskserve.client",
    "TaskHandle": "taskserve.client",
    "AsyncTaskHandle": "taskserve.client",
    "TaskFailed": "taskserve.client",
    "ClientError": "taskserve.client",
}


def __getattr__(name: str) -> Any:
    """Import the Serve, HTTP and client names on first use."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'taskserve' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AdapterConfig",
    "AdapterMetrics",
    "AdapterNotFound",
    "ArgumentBindingError",
    "BatchItem",
    "BatchOptions",
    "BatchResultError",
    "BrokerUnavailable",
    "CancelOutcome",
    "Capability",
    "DEFAULT_WEBHOOK_EVENTS",
    "ConfigError",
    "IdempotencyKeyReused",
    "InvalidArgument",
    "MAX_TASK_LIST_LIMIT",
    "ConsumerLost",
    "DeadLetter",
    "DeadLetterKind",
    "DeliveryRecorder",
    "HandlerPolicy",
    "HealthReport",
    "NOT_GIVEN",
    "NotRedriven",
    "RedriveOutcome",
    "IgnoredSettingWarning",
    "NonRetryableError",
    "Outcome",
    "PayloadError",
    "RecordingFailed",
    "REVEAL_SECRETS",
    "RemoteTaskError",
    "RetryPolicy",
    "SecretUrl",
    "TaskCancelled",
    "TaskContext",
    "TaskError",
    "TaskEvent",
    "TaskID",
    "TaskIdInUse",
    "TaskProgress",
    "TaskMessage",
    "TaskNotFound",
    "TaskTimeLimitExceeded",
    "TaskProcessorAdapter",
    "TaskProcessorConfig",
    "TaskResult",
    "TaskRunner",
    "TaskState",
    "TaskserveError",
    "UndecodableMessage",
    "UnknownTask",
    "UnsupportedCapability",
    "WebhookEvent",
    "WebhookSettings",
    "current_task",
    "hookimpl",
    "installed_adapters",
    "instantiate_adapter_from_config",
    "redact_url",
    "secret_value",
    "resolve_adapter",
    *_LAZY,
]
