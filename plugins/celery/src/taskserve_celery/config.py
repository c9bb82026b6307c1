"""Configuration of the Celery adapter.

The fields are those of Ray Serve's ``CeleryAdapterConfig`` (``broker_url``,
``backend_url``, ``app_custom_config``, ``task_custom_config``,
``broker_transport_options``, and ``worker_concurrency``, which Ray 2.60
accepts and ignores), so Ray's configs validate unchanged, plus
``key_prefix`` for the task-state keys and ``mirror_dead_letters``.

No setting is accepted and then silently dropped. Each Celery setting of
``app_custom_config`` takes effect or is refused saying why and what to use
instead (:mod:`taskserve_celery.settings`); Celery's ``task_time_limit`` and
``task_custom_config``'s ``time_limit`` are the core time limit
(``TaskProcessorConfig.task_time_limit_s``). The transport options the
adapter derives from the lease are refused; on Redis, other values of the
priority options are ignored with a warning.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator, model_validator

from taskserve.kit import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    AdapterConfig,
    InvalidArgument,
    RedactedUrl,
    TaskProcessorConfig,
    secret_value,
    task_priority,
    warn_ignored,
    with_engine_time_limit,
)
from taskserve_celery.settings import (
    app_settings_problems,
    celery_time_limit,
    task_time_limit_problems,
)

REDIS_SCHEMES = frozenset({"redis", "rediss"})
"""Broker URL schemes of the Redis transport."""

AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
"""Broker URL schemes of the RabbitMQ (AMQP 0-9-1) transport."""

FILESYSTEM_SCHEMES = frozenset({"filesystem"})
"""Broker URL scheme of kombu's filesystem transport (local testing)."""

REDIS_STATE_SCHEMES = frozenset({"redis", "rediss", "unix"})
"""``backend_url`` schemes of the Redis state store."""

SQLITE_STATE_SCHEMES = frozenset({"file", "db+sqlite"})
"""``backend_url`` schemes of the sqlite state store: ``file:///dir`` (a
directory, as Celery's file result backend takes) and ``db+sqlite:///file``."""

STATE_STORE_SCHEMES = REDIS_STATE_SCHEMES | SQLITE_STATE_SCHEMES
"""URL schemes accepted for ``backend_url``."""

SQLITE_STATE_FILE = "taskserve-state.sqlite3"
"""The database file of the sqlite state store inside a ``file://`` directory."""

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

REDIS_PRIORITY_OPTIONS: dict[str, Any] = {
    "priority_steps": list(range(MIN_PRIORITY, MAX_PRIORITY + 1)),
    "queue_order_strategy": "priority",
}
"""Redis transport options of task priorities: a list for each of the ten
priorities (kombu's default of four steps would merge them), popped lowest
kombu priority first. In ``broker_transport_options`` the same values are
accepted (as Celery's guide to Redis priorities sets them), others are ignored
with a warning."""

SUPPORTED_TASK_OPTIONS = frozenset({"priority", "time_limit"})
"""Keys of ``task_custom_config`` the adapter applies: ``priority``, the priority
(0 to 9, higher first) of tasks enqueued without one, and ``time_limit``, the
time limit of every task (``TaskProcessorConfig.task_time_limit_s``)."""

REFUSED_TASK_OPTIONS: dict[str, str] = {
    "soft_time_limit": (
        "taskserve has one time limit per attempt, TaskProcessorConfig.task_time_limit_s "
        "(or 'time_limit' here, which is that limit): at the limit a sync handler gets "
        "TaskTimeLimitExceeded raised in its thread (catch it to clean up, as Celery's "
        "SoftTimeLimitExceeded) and the attempt fails"
    ),
}
"""Keys of ``task_custom_config`` refused with why and what to use instead (the
retry options aside, :data:`RETRY_TASK_OPTIONS`)."""

RETRY_TASK_OPTIONS = frozenset(
    {
        "autoretry_for",
        "default_retry_delay",
        "max_retries",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "retry_kwargs",
    }
)
"""Celery's retry options; retries are TaskProcessorConfig's."""

FILESYSTEM_FOLDERS = ("data_folder_in", "data_folder_out")
"""Transport options the filesystem broker needs: where messages are read from
and written to, one directory shared by every producer and consumer."""

_FILESYSTEM_QUEUE = re.compile(r"[A-Za-z0-9._-]+")
"""Queue names the filesystem broker carries (kombu names a file after the
queue's exchange, and takes only these characters)."""


class BrokerKind(enum.StrEnum):
    """The transports the adapter runs on."""

    REDIS = "redis"
    AMQP = "amqp"
    FILESYSTEM = "filesystem"
    """kombu's filesystem transport: messages are files in a local directory
    (local testing; see the plugin README for its limits)."""


class StateKind(enum.StrEnum):
    """Where the adapter keeps task state."""

    REDIS = "redis"
    SQLITE = "sqlite"


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower().split("+", 1)[0]


def broker_kind_of(broker_url: str) -> BrokerKind:
    """Whether ``broker_url`` names Redis, the filesystem or (any other scheme)
    RabbitMQ; the URL is not checked (the config's validation does that)."""
    scheme = _scheme(broker_url)
    if scheme in REDIS_SCHEMES:
        return BrokerKind.REDIS
    if scheme in FILESYSTEM_SCHEMES:
        return BrokerKind.FILESYSTEM
    return BrokerKind.AMQP


def _backend_scheme(url: str) -> str:
    """The whole scheme: Celery backends name a driver after '+' ('db+sqlite')."""
    return urlsplit(url).scheme.lower()


class CeleryAdapterConfig(AdapterConfig):
    """Where the Celery adapter's broker and state store are, and Celery tweaks.

    ``backend_url`` is the Redis database holding task status, results, cancel
    requests and dead letters; it defaults to ``broker_url`` when the broker is
    Redis, and is required with RabbitMQ.
    """

    adapter_alias: ClassVar[str | None] = "celery"

    broker_url: RedactedUrl = Field(
        description=(
            "Celery broker: 'redis://host:6379/0', 'amqp://user:pass@host:5672//', or "
            "'filesystem://' (local testing; needs data_folder_in/out transport options)."
        )
    )
    backend_url: RedactedUrl | None = Field(
        default=None,
        description=(
            "Where task state lives (status, results, dead letters): a Redis URL, or "
            "'file:///directory' (or 'db+sqlite:///file') for a sqlite database every "
            "producer and consumer can open. Defaults to broker_url when the broker is Redis."
        ),
    )
    app_custom_config: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Celery settings (app.conf) that take effect here (broker connection and "
            "publishing; task_time_limit, which is task_time_limit_s); any other is refused "
            "saying why and what to use (taskserve_celery.settings)."
        ),
    )
    task_custom_config: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Options of every task; supported: 'priority', the priority (0 to 9, higher "
            "first) of tasks enqueued without one, and 'time_limit', the time limit of "
            "every task (TaskProcessorConfig.task_time_limit_s)."
        ),
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
    worker_concurrency: int | None = Field(
        default=None,
        description=(
            "Accepted as Ray Serve 2.60 accepts it, and ignored as it ignores it (with a "
            "warning): a replica runs max_ongoing_requests tasks at once, or "
            "TaskProcessorConfig.consumer_concurrency."
        ),
    )
    mirror_dead_letters: bool = Field(
        default=True,
        description=(
            "Also publish each dead letter, in Ray Serve's layout, to the broker queue named "
            "after its dead-letter queue (failed_task_queue_name, "
            "unprocessable_task_queue_name), for code that consumes those queues."
        ),
    )

    @field_validator("broker_url")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        scheme = _scheme(value)
        if scheme == "memory":
            raise ValueError(
                "the 'memory://' broker lives inside one process, and a Serve consumer runs "
                "in another: use 'filesystem://' for local testing without a server"
            )
        if scheme not in REDIS_SCHEMES | AMQP_SCHEMES | FILESYSTEM_SCHEMES:
            raise ValueError(
                f"unsupported broker scheme '{scheme}'; taskserve-celery runs on Redis "
                "('redis://', 'rediss://'), RabbitMQ ('amqp://', 'amqps://') or, for local "
                "testing, the filesystem ('filesystem://')"
            )
        return value

    @field_validator("worker_concurrency")
    @classmethod
    def _ignore_worker_concurrency(cls, value: int | None) -> int | None:
        if value is not None:
            warn_ignored(
                "CeleryAdapterConfig.worker_concurrency",
                "as in Ray Serve 2.60, a replica runs max_ongoing_requests tasks at once; "
                "set that (or TaskProcessorConfig.consumer_concurrency) instead",
            )
        return value

    @field_validator("app_custom_config")
    @classmethod
    def _check_app_config(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """Refuse every setting that would not take effect, each named with why
        and what to use instead (:func:`~taskserve_celery.settings.app_settings_problems`)."""
        if not value:
            return value
        problems = app_settings_problems(value)
        if problems:
            raise ValueError(
                "these Celery settings cannot take effect in taskserve-celery: "
                + "; ".join(problems)
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
            for key in sorted(set(value) & set(REDIS_PRIORITY_OPTIONS)):
                given = value[key]
                if isinstance(given, tuple):
                    given = list(given)
                if given != REDIS_PRIORITY_OPTIONS[key]:
                    warn_ignored(
                        f"broker_transport_options.{key}={value[key]!r}",
                        f"taskserve-celery keeps {key}={REDIS_PRIORITY_OPTIONS[key]!r} so that "
                        "each of the ten task priorities has its own Redis list",
                    )
        return value

    @field_validator("task_custom_config")
    @classmethod
    def _check_task_options(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if not value:
            return value
        retry = sorted(set(value) & RETRY_TASK_OPTIONS)
        if retry:
            raise ValueError(
                f"{', '.join(retry)}: retries and backoff are set in TaskProcessorConfig "
                "(max_retries, retry_backoff_s, retry_backoff_max_s, retry_jitter)"
            )
        refused = sorted(set(value) & set(REFUSED_TASK_OPTIONS))
        if refused:
            raise ValueError(f"{refused[0]}: {REFUSED_TASK_OPTIONS[refused[0]]}")
        unknown = sorted(set(value) - SUPPORTED_TASK_OPTIONS)
        if unknown:
            raise ValueError(
                f"unsupported task option(s) {', '.join(unknown)}; supported: "
                f"{', '.join(sorted(SUPPORTED_TASK_OPTIONS))}"
            )
        try:
            task_priority(value.get("priority"))
        except InvalidArgument as e:
            raise ValueError(
                f"task_custom_config.priority is the priority of tasks enqueued without one: {e}"
            ) from None
        problems = task_time_limit_problems(value)
        if problems:
            raise ValueError(problems[0])
        return value

    @model_validator(mode="after")
    def _check_time_limits(self) -> CeleryAdapterConfig:
        _ = self.time_limit_s  # both Celery time limits given, and different, is an error
        return self

    @model_validator(mode="after")
    def _check_backend(self) -> CeleryAdapterConfig:
        if self.broker_kind is BrokerKind.FILESYSTEM:
            self._check_filesystem_broker()
        if self.backend_url is None:
            if self.broker_kind is not BrokerKind.REDIS:
                broker = "RabbitMQ" if self.broker_kind is BrokerKind.AMQP else "filesystem"
                raise ValueError(
                    f"backend_url is required with a {broker} broker: set a "
                    "Redis URL ('redis://host:6379/0') or, on one machine, a directory "
                    "('file:///var/lib/taskserve') for the task state"
                )
            return self
        scheme = _backend_scheme(self.backend_url)
        if scheme not in STATE_STORE_SCHEMES:
            raise ValueError(
                f"backend_url scheme '{scheme}' is not supported: taskserve-celery keeps task "
                "status, results and dead letters in its own store, not in a Celery result "
                "backend. Use a Redis URL ('redis://', 'rediss://', 'unix://') or, on one "
                "machine, a directory every producer and consumer can write "
                "('file:///path/to/dir') or a sqlite file ('db+sqlite:///path/to/file.db')"
            )
        if scheme in SQLITE_STATE_SCHEMES:
            _ = self.state_path
        return self

    def _check_filesystem_broker(self) -> None:
        options = self.broker_transport_options or {}
        missing = [key for key in FILESYSTEM_FOLDERS if not options.get(key)]
        if missing:
            raise ValueError(
                "the filesystem broker needs broker_transport_options "
                f"{' and '.join(repr(k) for k in missing)}: one directory that every producer "
                "and consumer reads and writes messages in (give both the same path)"
            )
        folder_in, folder_out = (Path(str(options[key])) for key in FILESYSTEM_FOLDERS)
        if folder_in != folder_out:
            raise ValueError(
                "broker_transport_options 'data_folder_in' and 'data_folder_out' must be the "
                "same directory: producers write messages to data_folder_out and consumers "
                "read data_folder_in, with one config for both"
            )

    def check_queue_name(self, name: str, field: str) -> None:
        """The filesystem broker names a file after each queue's exchange and takes
        only letters, digits, '.', '_' and '-'; RabbitMQ reserves names starting
        with 'amq.'. Redis takes any name. Dead-letter queues are broker queues
        too when ``mirror_dead_letters`` is on."""
        if field != "queue_name" and not self.mirror_dead_letters:
            return
        kind = self.broker_kind
        if kind is BrokerKind.FILESYSTEM and not _FILESYSTEM_QUEUE.fullmatch(name):
            raise ValueError(
                f"{name!r} cannot be a queue of the filesystem broker: kombu names a file after "
                "the queue's exchange and takes only letters, digits, '.', '_' and '-'"
            )
        if kind is BrokerKind.AMQP and name.startswith("amq."):
            raise ValueError(f"{name!r}: RabbitMQ reserves queue names starting with 'amq.'")

    @property
    def time_limit_s(self) -> float | None:
        """The time limit of every task that Celery's ``task_time_limit``
        (``app_custom_config``) or ``time_limit`` (``task_custom_config``) sets:
        the adapter's ``TaskProcessorConfig.task_time_limit_s`` when that is not
        set (:meth:`processor_config`). None when neither is given; ValueError if
        both are, with different values."""
        return celery_time_limit(self.app_custom_config, self.task_custom_config)

    def processor_config(self, config: TaskProcessorConfig) -> TaskProcessorConfig:
        """``config`` (whose adapter_config is this one) with Celery's time limit
        (:attr:`time_limit_s`) as its ``task_time_limit_s``; raise ConfigError if
        ``config`` sets another limit, which one of them would silently lose."""
        return with_engine_time_limit(
            config,
            self.time_limit_s,
            "Celery's time limit in adapter_config (app_custom_config's task_time_limit "
            "or task_custom_config's time_limit)",
        )

    @property
    def broker_kind(self) -> BrokerKind:
        """Whether the broker is Redis, RabbitMQ or the filesystem."""
        return broker_kind_of(self.broker_url)

    @property
    def state_kind(self) -> StateKind:
        """Whether task state lives in Redis or in a sqlite file."""
        if (
            self.backend_url is not None
            and _backend_scheme(self.backend_url) in SQLITE_STATE_SCHEMES
        ):
            return StateKind.SQLITE
        return StateKind.REDIS

    @property
    def state_url(self) -> str:
        """The real URL of the Redis state store (``backend_url``, else the Redis
        broker), password included: for the store's client, never for messages."""
        return str(
            secret_value(self.backend_url if self.backend_url is not None else self.broker_url)
        )

    @property
    def state_path(self) -> str:
        """The sqlite database file of a ``file://`` or ``db+sqlite://`` backend."""
        url = secret_value(self.backend_url) or ""
        parts = urlsplit(url)
        scheme = _backend_scheme(url)
        if scheme not in SQLITE_STATE_SCHEMES:
            raise ValueError(f"backend_url '{scheme}://...' is not a sqlite state store")
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                "backend_url: a file:// or db+sqlite:// URL names a path on this machine "
                "('file:///path/to/dir'), not a host"
            )
        path = unquote(parts.path)
        if not path or path == "/":
            raise ValueError("backend_url: give the path, as in 'file:///path/to/dir'")
        if scheme == "file":
            return str(Path(path) / SQLITE_STATE_FILE)
        return path
