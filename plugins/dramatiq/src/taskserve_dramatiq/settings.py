"""What each Dramatiq option does under taskserve-dramatiq.

The adapter uses Dramatiq to move messages: a broker of its own (Redis or
RabbitMQ) and an embedded ``dramatiq.Worker`` whose threads hand every
message to taskserve's runner through one actor that serves every task name.
None of Dramatiq's middleware is installed (no ``Retries``, ``TimeLimit``,
``AgeLimit``, ``Callbacks``, ``Pipelines``, ``Results``,
``ShutdownNotifications``, ``CurrentMessage`` or ``Prometheus``): taskserve's
runner and store keep those promises. So every Dramatiq option a
configuration can name either takes effect or is refused, saying why and
what to use instead; none is accepted and then silently dropped:

* :data:`BROKER_OPTIONS`, given in ``broker_options``, reach Dramatiq's broker
  and take effect with Dramatiq's meaning;
* ``time_limit_s`` (a field of the adapter config) is taskserve's time limit
  under Dramatiq's name, ``TaskProcessorConfig.task_time_limit_s``;
* :data:`DERIVED_BROKER_OPTIONS` are the broker arguments the adapter sets
  itself, and :data:`OTHER_BROKER_OPTIONS` those of the other broker;
* :data:`REDIS_CONNECTION_PARAMETERS` and :data:`PIKA_CONNECTION_PARAMETERS`
  (what Dramatiq passes on to redis-py and pika) belong in ``broker_url``;
* :data:`DRAMATIQ_OPTIONS`, the options of Dramatiq's middleware, actors,
  messages and workers, are refused wherever they are given, each naming
  taskserve's equivalent;
* a key that is none of these is refused too, with the likely name.

Dramatiq also reads a few environment variables; :data:`IGNORED_ENVIRONMENT`
are those that have no effect on the adapter (see
:func:`ignored_environment`).

Nothing here imports Dramatiq, redis or pika: validating a configuration
never does.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from taskserve.kit import MAX_PRIORITY

RABBITMQ_MAX_PRIORITY = 255
"""The largest ``x-max-priority`` RabbitMQ (and Dramatiq) accepts."""

BROKER_OPTIONS: dict[str, dict[str, type]] = {
    "redis": {"namespace": str, "dead_message_ttl": int},
    "rabbitmq": {"confirm_delivery": bool, "max_priority": int},
}
"""``broker_options`` that reach each Dramatiq broker and take effect, with
their types: Redis ``namespace`` (the prefix of Dramatiq's keys) and
``dead_message_ttl`` (ms a message stays in Dramatiq's dead-letter queue
``<queue>.XQ`` before queue maintenance deletes it); RabbitMQ
``confirm_delivery`` (publishes wait for the broker's confirm) and
``max_priority`` (the queues' ``x-max-priority``)."""

_MIDDLEWARE = (
    "the adapter installs the middleware it needs and none of Dramatiq's: taskserve "
    "retries (max_retries), limits time (task_time_limit_s), keeps results and statuses "
    "(state_url), stops gracefully (stop_consumer) and reports (lifecycle hooks, "
    "get_metrics_sync) itself; current_task() replaces CurrentMessage, and async def "
    "handlers run without Dramatiq's AsyncIO middleware"
)
_LEASE = (
    "it is derived from TaskProcessorConfig.lease_s: consumers heartbeat every quarter "
    "lease, and a dead consumer's messages are delivered again after about one lease"
)

DERIVED_BROKER_OPTIONS: dict[str, str] = {
    "url": "it is broker_url",
    "middleware": _MIDDLEWARE,
    "client": "the adapter builds the client from broker_url",
    "parameters": "put connection parameters in broker_url",
    "heartbeat_timeout": _LEASE,
    "maintenance_chance": (
        "the adapter runs queue maintenance on a timer derived from "
        "TaskProcessorConfig.lease_s, not on a share of Redis commands"
    ),
}
"""Arguments of Dramatiq's brokers that the adapter sets itself, each with why."""

OTHER_BROKER_OPTIONS: dict[str, dict[str, str]] = {
    "redis": {
        "confirm_delivery": (
            "an option of Dramatiq's RabbitMQ broker: Redis answers every write, and a "
            "publish Redis refuses raises BrokerUnavailable"
        ),
        "max_priority": (
            "an option of Dramatiq's RabbitMQ broker: a Redis queue always has the ten "
            f"priority levels 0 to {MAX_PRIORITY} (one list each); give a task its priority "
            "with enqueue_task_sync(..., priority=p)"
        ),
    },
    "rabbitmq": {
        "namespace": (
            "an option of Dramatiq's Redis broker: RabbitMQ queues are named after "
            "TaskProcessorConfig.queue_name (and <queue>.DQ, <queue>.XQ)"
        ),
        "dead_message_ttl": (
            "an option of Dramatiq's Redis broker: Dramatiq's RabbitMQ broker reads the TTL "
            "of <queue>.XQ from the environment variable dramatiq_dead_message_ttl, and the "
            "adapter never dead-letters a message there (taskserve's dead letters are kept "
            "in the state store)"
        ),
    },
}
"""For each broker, the options of the other one, each with why it does not apply."""

REDIS_CONNECTION_PARAMETERS = frozenset(
    {
        "cache",
        "cache_config",
        "client_name",
        "connection_pool",
        "credential_provider",
        "db",
        "decode_responses",
        "driver_info",
        "encoding",
        "encoding_errors",
        "event_dispatcher",
        "health_check_interval",
        "host",
        "legacy_responses",
        "lib_name",
        "lib_version",
        "maint_notifications_config",
        "max_connections",
        "metadata_resolver",
        "oss_cluster_maint_notifications_handler",
        "password",
        "port",
        "protocol",
        "redis_connect_func",
        "retry",
        "retry_on_error",
        "retry_on_timeout",
        "single_connection_client",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "socket_read_size",
        "socket_timeout",
        "ssl",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_cert_reqs",
        "ssl_certfile",
        "ssl_check_hostname",
        "ssl_ciphers",
        "ssl_exclude_verify_flags",
        "ssl_include_verify_flags",
        "ssl_keyfile",
        "ssl_min_version",
        "ssl_ocsp_context",
        "ssl_ocsp_expected_cert",
        "ssl_password",
        "ssl_validate_ocsp",
        "ssl_validate_ocsp_stapled",
        "unix_socket_path",
        "username",
    }
)
"""Keyword arguments of ``redis.Redis``, which Dramatiq's Redis broker passes on
(and drops without a word when it is given a URL)."""

_REDIS_CONNECTION = (
    "a redis-py connection parameter: the adapter builds its Redis client from broker_url "
    "alone, so give it in the URL, where it takes effect: username and password in the "
    "URL itself, 'rediss://' for TLS, the others in its query string "
    "(redis://host:6379/0?socket_timeout=5&health_check_interval=10; the adapter's "
    "defaults are socket_connect_timeout=5, socket_timeout=30, health_check_interval=30); "
    "parameters that take Python objects (retry, credential_provider, ...) cannot be set"
)

PIKA_CONNECTION_PARAMETERS = frozenset(
    {
        "blocked_connection_timeout",
        "channel_max",
        "client_properties",
        "connection_attempts",
        "credentials",
        "frame_max",
        "heartbeat",
        "host",
        "locale",
        "port",
        "retry_delay",
        "socket_timeout",
        "ssl_options",
        "stack_timeout",
        "tcp_options",
        "virtual_host",
    }
)
"""Keyword arguments of ``pika.ConnectionParameters``, which Dramatiq's RabbitMQ
broker takes instead of a URL (it refuses both at once)."""

_PIKA_CONNECTION = (
    "a pika connection parameter: Dramatiq takes pika parameters only instead of a URL, "
    "so give it in broker_url, where it takes effect: credentials, host, port and virtual "
    "host in the URL itself, 'amqps://' for TLS, the others in its query string "
    "(amqp://user:password@host:5672/%2F?connection_attempts=3&retry_delay=2; a heartbeat= "
    "there replaces the consumers' default heartbeat of one lease)"
)

_RETRIES = (
    "retries are taskserve's (Dramatiq's Retries middleware is not installed): set "
    "TaskProcessorConfig.max_retries (None retries without limit), or "
    "@task_handler(max_retries=...) per handler"
)
_BACKOFF = (
    "retry delays are taskserve's, in seconds (Dramatiq's are milliseconds): set "
    "TaskProcessorConfig.retry_backoff_s (the first delay, doubled at each retry), "
    "retry_backoff_max_s (its cap) and retry_jitter, or @task_handler(retry_backoff_s=..., "
    "retry_backoff_max_s=...) per handler"
)
_NON_RETRYABLE = (
    "a failure that must not be retried is one raising taskserve.NonRetryableError, or one "
    "of the exception types of @task_handler(non_retryable=...); max_retries bounds the rest"
)
_EXHAUSTED = (
    "a task that fails every attempt goes to the failed dead-letter queue "
    "(TaskProcessorConfig.failed_task_queue_name) and reaches the lifecycle hook "
    "taskserve_task_dead_lettered (entry-point group 'taskserve.hooks')"
)
_TIME_LIMIT = (
    "Dramatiq's time_limit is in milliseconds: set time_limit_s (seconds; Dramatiq's name "
    "for the core limit) or TaskProcessorConfig.task_time_limit_s, or "
    "@task_handler(time_limit_s=...) per handler"
)
_AGE = (
    "taskserve drops no waiting task for its age: a task waits until a consumer takes it "
    "or it is cancelled (cancel_task_sync, CLI `taskserve cancel`)"
)
_SHUTDOWN = (
    "stopping is taskserve's, and no Shutdown exception is raised in handlers: "
    "stop_consumer(timeout) (Serve: graceful_shutdown_timeout_s; `taskserve worker "
    "--graceful-timeout`) lets running tasks finish, then hands the rest back to the "
    "queue to run again"
)
_CALLBACKS = (
    "no Dramatiq callback actor runs: react to outcomes with the lifecycle hooks "
    "(entry-point group 'taskserve.hooks': taskserve_task_succeeded, taskserve_task_failed, "
    "taskserve_task_dead_lettered, ...), or enqueue the next task from the handler"
)
_PIPELINES = (
    "taskserve tasks are single tasks, without pipelines or groups: enqueue the next task "
    "from the handler, with its result as an argument"
)
_RESULTS = (
    "results and errors are always kept, in taskserve's state store (state_url), for "
    "TaskProcessorConfig.result_ttl_s seconds: get_task_status_sync(task_id), CLI "
    "`taskserve show`, GET /status/{task_id}; Dramatiq's Results middleware is not installed"
)
_RESULT_TTL = (
    "Dramatiq's result_ttl is in milliseconds, for its Results middleware, which is not "
    "installed: set TaskProcessorConfig.result_ttl_s (seconds)"
)
_PRIORITY = (
    "give each task its priority with enqueue_task_sync(..., priority=p) (0 to 9, higher "
    "first), published as Dramatiq's broker_priority; Dramatiq's actor priority (lower "
    "first, within one worker) is not used"
)
_DELAY = (
    "delay a task with enqueue_task_sync(..., delay_s=seconds) or eta=<an aware "
    "datetime> (Dramatiq's delay is milliseconds): it waits in taskserve's store, "
    "PENDING and cancelable, never started early"
)
_TASK_NAME = (
    "a task's name is its handler's (@task_handler(name=...), register_task_handle): one "
    "actor of the adapter serves every task name on the queue"
)
_QUEUE = (
    "a consumer takes the tasks of TaskProcessorConfig.queue_name only: one adapter (or "
    "@task_consumer) per queue"
)
_BROKER = "the adapter builds a broker of its own from broker_url and broker_options"
_CONCURRENCY = (
    "tasks run in threads of the replica's process: set how many run at once with "
    "TaskProcessorConfig.consumer_concurrency or Serve's max_ongoing_requests, and scale "
    "with Serve's replicas"
)
_PREFETCH = (
    "a consumer's prefetch is its concurrency (TaskProcessorConfig.consumer_concurrency), "
    "so that it never holds more tasks than it runs"
)
_PROCESSES = (
    "no Dramatiq command line or forked process runs: the replica's process (or "
    "`taskserve worker`) is the worker, and Serve replaces a replica that must restart"
)
_LOGGING = (
    "the process owns logging: configure Python logging (the adapter logs under "
    "'taskserve' and 'taskserve_dramatiq'; `taskserve worker --log-level`)"
)
_IMPORTS = (
    "handlers are registered with @task_handler on a @task_consumer class, "
    "register_task_handle, or `taskserve worker --handlers module:NAME`; Dramatiq actors in "
    "imported modules are never run"
)
_IN_BROKER_OPTIONS = "an option of Dramatiq's broker: give it in broker_options"

DRAMATIQ_OPTIONS: dict[str, str] = {
    # Retries
    "max_retries": _RETRIES,
    "min_backoff": _BACKOFF,
    "max_backoff": _BACKOFF,
    "retry_when": _NON_RETRYABLE,
    "throws": _NON_RETRYABLE,
    "on_retry_exhausted": _EXHAUSTED,
    # TimeLimit, AgeLimit, ShutdownNotifications
    "time_limit": _TIME_LIMIT,
    "interval": "taskserve watches time limits itself, several times a second",
    "max_age": _AGE,
    "notify_shutdown": _SHUTDOWN,
    # Callbacks, Pipelines, Results
    "on_success": _CALLBACKS,
    "on_failure": _CALLBACKS,
    "pipe_target": _PIPELINES,
    "pipe_ignore": _PIPELINES,
    "store_results": _RESULTS,
    "result_ttl": _RESULT_TTL,
    "backend": _RESULTS,
    "rate_limiter_backend": _PIPELINES,
    "barrier_ttl": _PIPELINES,
    # actors and messages
    "actor_name": _TASK_NAME,
    "actor_class": _TASK_NAME,
    "queue_name": _QUEUE,
    "priority": _PRIORITY,
    "broker_priority": _PRIORITY,
    "broker": _BROKER,
    "delay": _DELAY,
    "eta": _DELAY,
    "retries": (
        "taskserve counts the attempts itself: TaskResult and current_task().attempt show "
        "them, and max_retries bounds them"
    ),
    "encoder": "messages are Dramatiq's JSON messages, never pickle",
    # workers and the command line
    "queues": _QUEUE,
    "worker_threads": _CONCURRENCY,
    "threads": _CONCURRENCY,
    "processes": _CONCURRENCY,
    "worker_timeout": "Dramatiq's worker_timeout is in milliseconds: set worker_timeout_s",
    "queue_prefetch": _PREFETCH,
    "prefetch": _PREFETCH,
    "delay_queue_prefetch": "set delay_prefetch",
    "worker_shutdown_timeout": _SHUTDOWN,
    "modules": _IMPORTS,
    "fork_function": _PROCESSES,
    "forks": _PROCESSES,
    "use_spawn": _PROCESSES,
    "worker_fork_timeout": _PROCESSES,
    "watch": _PROCESSES,
    "watch_use_polling": _PROCESSES,
    "include_patterns": _PROCESSES,
    "exclude_patterns": _PROCESSES,
    "pid_file": _PROCESSES,
    "path": _PROCESSES,
    "log_file": _LOGGING,
    "skip_logging": _LOGGING,
    "verbose": _LOGGING,
}
"""Options of Dramatiq's middleware (``Retries``, ``TimeLimit``, ``AgeLimit``,
``ShutdownNotifications``, ``Callbacks``, ``Pipelines``, ``Results``,
``GroupCallbacks``: their actor options and constructor arguments), actors,
messages, workers and command line, each with what takes its place: refused
at the top of the adapter config and in ``broker_options`` alike."""

IGNORED_ENVIRONMENT: dict[str, str] = {
    "dramatiq_queue_prefetch": _PREFETCH,
    "dramatiq_worker_timeout": "the adapter config's worker_timeout_s sets it",
    "dramatiq_prom_host": "the Prometheus middleware is not installed",
    "dramatiq_prom_port": "the Prometheus middleware is not installed",
    "dramatiq_prom_db": "the Prometheus middleware is not installed",
    "dramatiq_group_callback_barrier_ttl": _PIPELINES,
}
"""Environment variables Dramatiq reads that have no effect on the adapter's
consumers, each with why. ``dramatiq_delay_queue_prefetch`` joins them when
``delay_prefetch`` is set; the others Dramatiq reads
(``dramatiq_restart_delay``, ``dramatiq_lua_max_stack``,
``dramatiq_dead_message_ttl``) take effect."""


def _type_problem(key: str, value: Any, expected: type) -> str | None:
    """What is wrong with ``value`` for the broker option ``key``, or None."""
    # exact types: True must not pass for 1, nor 1 for True
    if type(value) is not expected:
        return f"must be of type {expected.__name__}, got {type(value).__name__}"
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if key == "max_priority" and not MAX_PRIORITY <= value <= RABBITMQ_MAX_PRIORITY:
        return (
            f"must be from {MAX_PRIORITY} to {RABBITMQ_MAX_PRIORITY}, got {value}: below "
            f"{MAX_PRIORITY} RabbitMQ would merge task priorities"
        )
    if key == "dead_message_ttl" and value < 1:
        return f"must be at least 1 (milliseconds), got {value}"
    return None


def _likely(key: str, names: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.6)
    return close[0] if close else ""


def broker_option_refusal(kind: str, key: str, value: Any) -> str | None:
    """Why ``broker_options`` of Dramatiq's ``kind`` broker (``"redis"`` or
    ``"rabbitmq"``) cannot take ``key`` = ``value`` and what to use instead, or
    None if it takes effect (:data:`BROKER_OPTIONS`)."""
    allowed = BROKER_OPTIONS[kind]
    if key in allowed:
        return _type_problem(key, value, allowed[key])
    if key in DERIVED_BROKER_OPTIONS:
        return f"cannot be set: {DERIVED_BROKER_OPTIONS[key]}"
    if key in OTHER_BROKER_OPTIONS[kind]:
        return OTHER_BROKER_OPTIONS[kind][key]
    if kind == "redis" and key in REDIS_CONNECTION_PARAMETERS:
        return _REDIS_CONNECTION
    if kind == "rabbitmq" and key in PIKA_CONNECTION_PARAMETERS:
        return _PIKA_CONNECTION
    if key in DRAMATIQ_OPTIONS:
        return f"not a broker option: {DRAMATIQ_OPTIONS[key]}"
    likely = _likely(key, set(allowed))
    hint = f"did you mean '{likely}'? " if likely else ""
    return (
        f"not an option of Dramatiq's {kind} broker; {hint}the options that take effect "
        f"are {', '.join(sorted(allowed))}"
    )


def broker_option_problems(kind: str, options: Mapping[str, Any]) -> list[str]:
    """One line per key of ``broker_options`` that cannot take effect on
    Dramatiq's ``kind`` broker, naming it, why, and what to use instead; empty
    if every key takes effect."""
    problems = []
    for key in sorted(options, key=str):
        reason = broker_option_refusal(kind, str(key), options[key])
        if reason is not None:
            problems.append(f"{key}: {reason}")
    return problems


def option_refusal(key: str) -> str | None:
    """Why the adapter config cannot take ``key``, one of Dramatiq's own option
    names (of its middleware, actors, messages, workers or brokers), and what
    to use instead; None if ``key`` is no Dramatiq option (an unknown field
    then, refused as such)."""
    if key in DRAMATIQ_OPTIONS:
        return DRAMATIQ_OPTIONS[key]
    if key == "url":
        return "set broker_url"
    if key in DERIVED_BROKER_OPTIONS:
        return DERIVED_BROKER_OPTIONS[key]
    if any(key in options for options in BROKER_OPTIONS.values()):
        return _IN_BROKER_OPTIONS
    return None


def ignored_environment(environ: Mapping[str, str], *, delay_prefetch_set: bool) -> dict[str, str]:
    """The Dramatiq environment variables set in ``environ`` that have no effect
    on the adapter's consumers, each with why (:data:`IGNORED_ENVIRONMENT`;
    ``dramatiq_delay_queue_prefetch`` too when ``delay_prefetch`` is set)."""
    ignored = {name: why for name, why in IGNORED_ENVIRONMENT.items() if name in environ}
    if delay_prefetch_set and "dramatiq_delay_queue_prefetch" in environ:
        ignored["dramatiq_delay_queue_prefetch"] = "the adapter config's delay_prefetch is set"
    return ignored
