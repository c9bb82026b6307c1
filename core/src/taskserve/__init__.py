"""taskserve: asynchronous inference for Ray Serve with pluggable queue engines.

The public API is re-exported here; modules whose names start with an
underscore are internal.
"""

from taskserve.adapter import TaskProcessorAdapter
from taskserve.capabilities import Capability
from taskserve.config import AdapterConfig, TaskProcessorConfig
from taskserve.context import TaskContext, current_task
from taskserve.errors import (
    AdapterNotFound,
    ArgumentBindingError,
    BrokerUnavailable,
    ConfigError,
    ConsumerLost,
    NonRetryableError,
    PayloadError,
    TaskCancelled,
    TaskNotFound,
    TaskserveError,
    UndecodableMessage,
    UnknownTask,
    UnsupportedCapability,
)
from taskserve.execution import DeliveryRecorder, Outcome, TaskRunner
from taskserve.factory import instantiate_adapter_from_config
from taskserve.hooks import TaskEvent, hookimpl
from taskserve.models import (
    AdapterMetrics,
    CancelOutcome,
    DeadLetter,
    DeadLetterKind,
    HealthReport,
    TaskError,
    TaskID,
    TaskResult,
)
from taskserve.registry import installed_adapters, resolve_adapter
from taskserve.secrets import SecretUrl, redact_url
from taskserve.serialization import TaskMessage
from taskserve.states import TaskState

__all__ = [
    "AdapterConfig",
    "AdapterMetrics",
    "AdapterNotFound",
    "ArgumentBindingError",
    "BrokerUnavailable",
    "CancelOutcome",
    "Capability",
    "ConfigError",
    "ConsumerLost",
    "DeadLetter",
    "DeadLetterKind",
    "DeliveryRecorder",
    "HealthReport",
    "NonRetryableError",
    "Outcome",
    "PayloadError",
    "SecretUrl",
    "TaskCancelled",
    "TaskContext",
    "TaskError",
    "TaskEvent",
    "TaskID",
    "TaskMessage",
    "TaskNotFound",
    "TaskProcessorAdapter",
    "TaskProcessorConfig",
    "TaskResult",
    "TaskRunner",
    "TaskState",
    "TaskserveError",
    "UndecodableMessage",
    "UnknownTask",
    "UnsupportedCapability",
    "current_task",
    "hookimpl",
    "installed_adapters",
    "instantiate_adapter_from_config",
    "redact_url",
    "resolve_adapter",
]
