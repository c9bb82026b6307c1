"""Configuration of the Dramatiq adapter."""

from __future__ import annotations

import re
import warnings
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from taskserve.kit import MAX_PRIORITY, AdapterConfig, RedactedUrl, redact_url

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
"""URL schemes served by Dramatiq's Redis broker (and usable as results store)."""

RABBITMQ_SCHEMES = frozenset({"amqp", "amqps"})
"""URL schemes served by Dramatiq's RabbitMQ broker."""

BROKER_OPTIONS: dict[str, dict[str, type]] = {
    "redis": {"namespace": str, "dead_message_ttl": int},
    "rabbitmq": {"confirm_delivery": bool, "max_priority": int},
}
"""``broker_options`` each broker accepts, with their types."""

RABBITMQ_MAX_PRIORITY = 255
"""The largest ``x-max-priority`` RabbitMQ (and Dramatiq) accepts."""

_DERIVED_OPTIONS = {
    "url": "it is broker_url",
    "middleware": "the adapter installs the middleware it needs",
    "client": "the adapter builds the client from broker_url",
    "parameters": "put connection parameters in broker_url",
    "heartbeat_timeout": "it is derived from TaskProcessorConfig.lease_s",
    "maintenance_chance": "the adapter runs maintenance on a timer derived from lease_s",
}


QUEUE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")
"""The queue names Dramatiq accepts (its actors refuse any other)."""

_RENAMED = {"results_url": "state_url", "results_prefix": "key_prefix"}
"""Former field names, still accepted (with a DeprecationWarning)."""


def broker_kind(url: str) -> str:
    """``"redis"`` or ``"rabbitmq"`` for a broker URL; ValueError otherwise."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in REDIS_SCHEMES:
        return "redis"
    if scheme in RABBITMQ_SCHEMES:
        return "rabbitmq"
    raise ValueError(
        f"'{redact_url(url)}' is not a Dramatiq broker URL; expected redis://, rediss://, "
        "unix:// (Redis) or amqp://, amqps:// (RabbitMQ)"
    )


class DramatiqAdapterConfig(AdapterConfig):
    """How the Dramatiq adapter reaches its broker and where it keeps task state.

    Messages travel through Dramatiq's Redis or RabbitMQ broker; task status,
    results, cancel requests and dead letters are kept in Redis
    (``state_url``), which is the broker itself when the broker is Redis.
    """

    adapter_alias: ClassVar[str | None] = "dramatiq"

    broker_url: RedactedUrl = Field(
        description="Dramatiq broker: redis://host:6379/0 or amqp://user:password@host:5672/vhost."
    )
    state_url: RedactedUrl | None = Field(
        default=None,
        description=(
            "Redis URL of the task state store (status, results, cancel requests, dead "
            "letters, the message ledger). Defaults to broker_url when the broker is Redis; "
            "required with RabbitMQ. Formerly results_url."
        ),
    )
    key_prefix: str = Field(
        default="taskserve",
        min_length=1,
        description="Prefix of every key the adapter writes under state_url. Formerly "
        "results_prefix.",
    )
    broker_options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Options passed to Dramatiq's broker. Redis: namespace (key prefix, default "
            "'dramatiq'), dead_message_ttl (ms). RabbitMQ: confirm_delivery (default true: "
            "publishes wait for the broker's confirm), max_priority (the queue's "
            f"x-max-priority, {MAX_PRIORITY} to {RABBITMQ_MAX_PRIORITY}, default "
            f"{MAX_PRIORITY}: every task priority its own)."
        ),
    )
    worker_timeout_s: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description=(
            "How long an idle Dramatiq consumer waits before polling again; bounds the "
            "pickup latency on Redis and the reaction time of a stop."
        ),
    )
    time_limit_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Dramatiq's name for TaskProcessorConfig.task_time_limit_s, used as it when "
            "that is not set (the core limit: sync handlers interrupted, async ones "
            "cancelled, the attempt failing with TaskTimeLimitExceeded and retried). None, "
            "the default, sets no limit: unlike plain Dramatiq, long inference is never "
            "killed after 10 minutes."
        ),
    )
    delay_prefetch: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Delayed retries a consumer holds in memory until they are due (Dramatiq's "
            "delay-queue prefetch). Default: Dramatiq's, 1000 per worker thread."
        ),
    )

    def check_queue_name(self, name: str, field: str) -> None:
        """Dramatiq's own rule for the queue it consumes (dead-letter queues are
        records in the state store, and take any name)."""
        if field == "queue_name" and not QUEUE_NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} cannot be a Dramatiq queue: Dramatiq takes only names that "
                "start with a letter or '_' followed by letters, digits, '.', '_' or '-'"
            )

    @model_validator(mode="before")
    @classmethod
    def _default_state_url(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for old, new in _RENAMED.items():
            if old in data:
                if new in data:
                    raise ValueError(f"'{old}' is the former name of '{new}'; give only '{new}'")
                warnings.warn(
                    f"DramatiqAdapterConfig: '{old}' is deprecated, use '{new}'",
                    DeprecationWarning,
                    stacklevel=2,
                )
                data[new] = data.pop(old)
        if data.get("state_url") is None:
            broker_url = data.get("broker_url")
            if isinstance(broker_url, str) and urlsplit(broker_url).scheme in REDIS_SCHEMES:
                data["state_url"] = broker_url
        return data

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, url: str) -> str:
        broker_kind(url)
        return url

    @field_validator("broker_options")
    @classmethod
    def _check_broker_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        broker_url = info.data.get("broker_url")
        if not isinstance(broker_url, str):
            return options  # broker_url itself is invalid and reported
        kind = broker_kind(broker_url)
        allowed = BROKER_OPTIONS[kind]
        for key, value in options.items():
            if key in _DERIVED_OPTIONS:
                raise ValueError(f"'{key}' cannot be set: {_DERIVED_OPTIONS[key]}")
            if key not in allowed:
                raise ValueError(
                    f"'{key}' is not an option of Dramatiq's {kind} broker; "
                    f"allowed: {', '.join(sorted(allowed))}"
                )
            expected = allowed[key]
            if type(value) is not expected:
                raise ValueError(
                    f"'{key}' must be of type {expected.__name__}, got {type(value).__name__}"
                )
            if key == "max_priority" and not MAX_PRIORITY <= options[key] <= RABBITMQ_MAX_PRIORITY:
                raise ValueError(
                    f"'max_priority' must be from {MAX_PRIORITY} to {RABBITMQ_MAX_PRIORITY}, "
                    f"got {value}: below {MAX_PRIORITY} RabbitMQ would merge task priorities"
                )
        return options

    @model_validator(mode="after")
    def _check_state_url(self) -> DramatiqAdapterConfig:
        if self.state_url is None:
            raise ValueError(
                "state_url is required when the broker is RabbitMQ: give a redis:// URL "
                "where task status, results and dead letters are kept"
            )
        if urlsplit(self.state_url).scheme not in REDIS_SCHEMES:
            raise ValueError(
                f"state_url '{redact_url(self.state_url)}' must be a Redis URL "
                "(redis://, rediss:// or unix://)"
            )
        return self

    @property
    def kind(self) -> str:
        """The broker: ``"redis"`` or ``"rabbitmq"``."""
        return broker_kind(self.broker_url)

    @property
    def namespace(self) -> str:
        """Key prefix of Dramatiq's Redis broker."""
        return str(self.broker_options.get("namespace", "dramatiq"))
