"""Configuration of the Celery adapter.

The fields are those of Ray Serve's ``CeleryAdapterConfig`` (``broker_url``,
``backend_url``, ``app_custom_config``, ``task_custom_config``,
``broker_transport_options``), so existing configs validate unchanged, plus
``key_prefix`` for the task-state keys. Settings that the adapter manages to
keep its delivery promises (acks, prefetch, serializer, visibility timeout)
cannot be overridden, and saying so is an error rather than a silent no-op.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from taskserve.kit import AdapterConfig, RedactedUrl, secret_value

REDIS_SCHEMES = frozenset({"redis", "rediss"})
"""Broker URL schemes of the Redis transport."""

AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
"""Broker URL schemes of the RabbitMQ (AMQP 0-9-1) transport."""

STATE_STORE_SCHEMES = frozenset({"redis", "rediss", "unix"})
"""URL schemes accepted for ``backend_url`` (the Redis state store)."""

MANAGED_APP_SETTINGS = frozenset(
    {
        "accept_content",
        "broker_url",
        "broker_transport_options",
        "result_accept_content",
        "result_backend",
        "result_serializer",
        "task_acks_late",
        "task_acks_on_failure_or_timeout",
        "task_always_eager",
        "task_compression",
        "task_create_missing_queues",
        "task_default_queue",
        "task_ignore_result",
        "task_protocol",
        "task_queues",
        "task_reject_on_worker_lost",
        "task_routes",
        "task_serializer",
        "worker_cancel_long_running_tasks_on_connection_loss",
        "worker_concurrency",
        "worker_consumer",
        "worker_disable_prefetch",
        "worker_enable_prefetch_count_reduction",
        "worker_enable_remote_control",
        "worker_pool",
        "worker_prefetch_multiplier",
    }
)
"""Celery settings the adapter sets itself; ``app_custom_config`` may not change them."""

MANAGED_TRANSPORT_OPTIONS = frozenset(
    {
        "unacked_index_key",
        "unacked_key",
        "unacked_mutex_expire",
        "unacked_mutex_key",
        "visibility_timeout",
    }
)
"""Redis transport options derived from ``TaskProcessorConfig.lease_s`` and the queue."""

SUPPORTED_TASK_OPTIONS = frozenset({"priority"})
"""Keys of ``task_custom_config`` the adapter applies (as publish options)."""


class BrokerKind(enum.StrEnum):
    """The two transports the adapter is proven on."""

    REDIS = "redis"
    AMQP = "amqp"


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower().split("+", 1)[0]


class CeleryAdapterConfig(AdapterConfig):
    """Where the Celery adapter's broker and state store are, and Celery tweaks.

    ``backend_url`` is the Redis database holding task status, results, cancel
    requests and dead letters; it defaults to ``broker_url`` when the broker is
    Redis, and is required with RabbitMQ.
    """

    adapter_alias: ClassVar[str | None] = "celery"

    broker_url: RedactedUrl = Field(
        description="Celery broker: 'redis://host:6379/0' or 'amqp://user:pass@host:5672//'."
    )
    backend_url: RedactedUrl | None = Field(
        default=None,
        description=(
            "Redis URL of the task state store (status, results, dead letters). "
            "Defaults to broker_url when the broker is Redis."
        ),
    )
    app_custom_config: dict[str, Any] | None = Field(
        default=None,
        description="Extra Celery settings (app.conf), except those the adapter manages.",
    )
    task_custom_config: dict[str, Any] | None = Field(
        default=None,
        description="Options applied to every published task; supported: 'priority'.",
    )
    broker_transport_options: dict[str, Any] | None = Field(
        default=None,
        description=(
            "kombu transport options (for example 'global_keyprefix' on Redis, "
            "'confirm_publish' on RabbitMQ); the visibility timeout comes from lease_s."
        ),
    )
    key_prefix: str = Field(
        default="taskserve",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:\-]+$",
        description="Prefix of the state-store keys in the backend Redis.",
    )

    @field_validator("broker_url")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        scheme = _scheme(value)
        if scheme not in REDIS_SCHEMES | AMQP_SCHEMES:
            raise ValueError(
                f"unsupported broker scheme '{scheme}'; taskserve-celery runs on Redis "
                "('redis://', 'rediss://') or RabbitMQ ('amqp://', 'amqps://')"
            )
        return value

    @field_validator("app_custom_config")
    @classmethod
    def _check_app_config(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value:
            managed = sorted(set(value) & MANAGED_APP_SETTINGS)
            if managed:
                raise ValueError(
                    f"{', '.join(managed)} cannot be set here: the adapter sets them to keep "
                    "its delivery promises (use TaskProcessorConfig for retries, leases "
                    "and concurrency)"
                )
        return value

    @field_validator("broker_transport_options")
    @classmethod
    def _check_transport_options(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value:
            managed = sorted(set(value) & MANAGED_TRANSPORT_OPTIONS)
            if managed:
                raise ValueError(
                    f"{', '.join(managed)} cannot be set here: the visibility timeout is "
                    "TaskProcessorConfig.lease_s, and the unacked keys are per queue"
                )
        return value

    @field_validator("task_custom_config")
    @classmethod
    def _check_task_options(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value:
            unknown = sorted(set(value) - SUPPORTED_TASK_OPTIONS)
            if unknown:
                raise ValueError(
                    f"unsupported task option(s) {', '.join(unknown)}; supported: "
                    f"{', '.join(sorted(SUPPORTED_TASK_OPTIONS))}. Retries and backoff are "
                    "set in TaskProcessorConfig (max_retries, retry_backoff_s, ...)"
                )
        return value

    @model_validator(mode="after")
    def _check_backend(self) -> CeleryAdapterConfig:
        if self.backend_url is None:
            if self.broker_kind is not BrokerKind.REDIS:
                raise ValueError(
                    "backend_url is required with a RabbitMQ broker: taskserve keeps task "
                    "state in Redis, so set backend_url='redis://host:6379/0'"
                )
            return self
        scheme = _scheme(self.backend_url)
        if scheme not in STATE_STORE_SCHEMES:
            raise ValueError(
                f"backend_url must be a Redis URL ('redis://', 'rediss://' or 'unix://'), "
                f"got scheme '{scheme}': taskserve-celery keeps task status, results and "
                "dead letters in Redis instead of a Celery result backend"
            )
        return self

    @property
    def broker_kind(self) -> BrokerKind:
        """Whether the broker is Redis or RabbitMQ."""
        return BrokerKind.REDIS if _scheme(self.broker_url) in REDIS_SCHEMES else BrokerKind.AMQP

    @property
    def state_url(self) -> str:
        """The real URL of the Redis state store (``backend_url``, else the Redis
        broker), password included: for the store's client, never for messages."""
        return str(
            secret_value(self.backend_url if self.backend_url is not None else self.broker_url)
        )
