"""Configuration of the Dramatiq adapter.

Every field takes effect (see each one's description), ``time_limit_s`` as
the core time limit under Dramatiq's name (:meth:`DramatiqAdapterConfig.processor_config`).
Every other key is refused, and Dramatiq's own option names (of its
middleware, actors, messages, workers and brokers) are refused saying what
takes their place, at the top of the config and in ``broker_options`` alike
(:mod:`taskserve_dramatiq.settings`): no Dramatiq option is accepted and then
silently dropped.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from taskserve.kit import (
    MAX_PRIORITY,
    AdapterConfig,
    RedactedUrl,
    TaskProcessorConfig,
    redact_url,
    warn_ignored,
    with_engine_time_limit,
)
from taskserve_dramatiq.settings import (
    BROKER_OPTIONS,
    RABBITMQ_MAX_PRIORITY,
    broker_option_problems,
    ignored_environment,
    option_refusal,
)

__all__ = [
    "BROKER_OPTIONS",
    "QUEUE_NAME",
    "RABBITMQ_MAX_PRIORITY",
    "RABBITMQ_SCHEMES",
    "REDIS_SCHEMES",
    "DramatiqAdapterConfig",
    "broker_kind",
]

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
"""URL schemes served by Dramatiq's Redis broker (and usable as results store)."""

RABBITMQ_SCHEMES = frozenset({"amqp", "amqps"})
"""URL schemes served by Dramatiq's RabbitMQ broker."""


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

    Every field takes effect; any other key is refused, Dramatiq's own option
    names with what takes their place (:mod:`taskserve_dramatiq.settings`).
    ``time_limit_s`` is the core time limit: see :meth:`processor_config`.
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
            "'dramatiq'), dead_message_ttl (ms a message stays in Dramatiq's dead-letter "
            "queue <queue>.XQ, where only plain Dramatiq workers put messages, before queue "
            "maintenance deletes it). RabbitMQ: confirm_delivery (default true: publishes "
            "wait for the broker's confirm), max_priority (the queue's x-max-priority, "
            f"{MAX_PRIORITY} to {RABBITMQ_MAX_PRIORITY}, default {MAX_PRIORITY}: every task "
            "priority its own). Any other key is refused saying what to use instead "
            "(connection parameters go in broker_url)."
        ),
    )
    worker_timeout_s: float = Field(
        default=0.5,
        gt=0,
        le=10,
        allow_inf_nan=False,
        description=(
            "How long an idle Dramatiq consumer waits before polling again (Dramatiq's "
            "worker_timeout, in seconds); bounds the pickup latency on Redis and the "
            "reaction time of a stop."
        ),
    )
    time_limit_s: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Dramatiq's name for TaskProcessorConfig.task_time_limit_s (in seconds, where "
            "Dramatiq's time_limit is milliseconds), used as it when that is not set (the "
            "core limit: sync handlers interrupted, async ones cancelled, the attempt "
            "failing with TaskTimeLimitExceeded and retried); a different "
            "task_time_limit_s is a ConfigError. None, the default, sets no limit: unlike "
            "plain Dramatiq, long inference is never killed after 10 minutes."
        ),
    )
    delay_prefetch: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Messages of Dramatiq's delay queue <queue>.DQ a consumer holds in memory until "
            "they are due (Dramatiq's delay-queue prefetch): messages published again one "
            "second after their outcome could not be recorded, and those plain Dramatiq "
            "producers send with a delay (taskserve's retries and delayed tasks wait in its "
            "store instead). Default: Dramatiq's, 1000 per worker thread, or the "
            "environment variable dramatiq_delay_queue_prefetch."
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
    def _refuse_dramatiq_options(cls, data: Any) -> Any:
        """Refuse Dramatiq's own option names given as fields, each saying what
        takes its place (:func:`~taskserve_dramatiq.settings.option_refusal`)."""
        if not isinstance(data, dict):
            return data
        problems = []
        for key in sorted(data, key=str):
            reason = None if key in cls.model_fields else option_refusal(str(key))
            if reason is not None:
                problems.append(f"{key}: {reason}")
        if problems:
            raise ValueError(
                "these Dramatiq options are not taken by taskserve-dramatiq: " + "; ".join(problems)
            )
        return data

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
        """Refuse every key that cannot take effect on the broker, each with why and
        what to use instead (:func:`~taskserve_dramatiq.settings.broker_option_problems`)."""
        broker_url = info.data.get("broker_url")
        if not isinstance(broker_url, str):
            return options  # broker_url itself is invalid and reported
        kind = broker_kind(broker_url)
        problems = broker_option_problems(kind, options)
        if problems:
            raise ValueError(
                f"these options cannot take effect on Dramatiq's {kind} broker: "
                + "; ".join(problems)
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

    @model_validator(mode="after")
    def _warn_ignored_environment(self) -> DramatiqAdapterConfig:
        """Warn (once per process and variable) about Dramatiq environment
        variables that are set but have no effect on the adapter's consumers."""
        ignored = ignored_environment(
            os.environ, delay_prefetch_set=self.delay_prefetch is not None
        )
        for name, why in ignored.items():
            warn_ignored(
                f"the environment variable {name}",
                f"taskserve-dramatiq's consumers do not read it: {why}",
            )
        return self

    def processor_config(self, config: TaskProcessorConfig) -> TaskProcessorConfig:
        """``config`` (whose adapter_config is this one) with ``time_limit_s`` as its
        ``task_time_limit_s`` when that is not set; ``config`` itself when
        ``time_limit_s`` is not set or both are equal. Raise ConfigError if both
        are set and differ, since one of them would be silently lost: this is how
        Celery's ``task_time_limit`` maps onto the same limit."""
        return with_engine_time_limit(
            config,
            self.time_limit_s,
            "Dramatiq's time limit, adapter_config.time_limit_s,",
        )

    @property
    def kind(self) -> str:
        """The broker: ``"redis"`` or ``"rabbitmq"``."""
        return broker_kind(self.broker_url)

    @property
    def namespace(self) -> str:
        """Key prefix of Dramatiq's Redis broker."""
        return str(self.broker_options.get("namespace", "dramatiq"))
