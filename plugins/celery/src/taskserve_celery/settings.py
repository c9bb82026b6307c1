"""What each Celery setting of ``app_custom_config`` does under taskserve-celery.

The adapter uses Celery to move messages: it publishes through its app and
runs Celery's consumer (connection, prefetch, reconnects) in the replica. A
task is never a Celery task, so nothing of Celery's request machinery, pools,
events, remote control, beat or result backends runs. Every setting given in
``app_custom_config`` therefore either takes effect or is refused, naming
why and what to use instead; none is accepted and then silently dropped:

* :data:`ALLOWED_APP_SETTINGS` reach the Celery app and take effect with
  Celery's meaning (broker connection, reconnects, producer pool, publish
  retries);
* :data:`MAPPED_APP_SETTINGS` are taskserve's equivalents under Celery's
  name: ``task_time_limit`` is the core time limit
  (``TaskProcessorConfig.task_time_limit_s``);
* :data:`KEPT_APP_SETTINGS` are what the adapter always does: that value is
  accepted, any other is refused;
* every other Celery setting (:data:`REFUSED_APP_SETTINGS`,
  :data:`REFUSED_APP_PREFIXES`) is refused with its reason, and a key that is
  no Celery setting at all is refused too (a misspelling Celery would keep
  without a word).

Nothing here imports Celery: validating a configuration never does.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

_RAY = "(Ray Serve's Celery adapter refuses it too)"

_CONCURRENCY = (
    "tasks run in threads of the replica's process: set how many run at once with "
    "TaskProcessorConfig.consumer_concurrency or Serve's max_ongoing_requests, and "
    "scale with Serve's replicas and autoscaling"
)
_DELIVERY = (
    "the adapter keeps its delivery promises with it: a message is acknowledged only "
    "after its outcome is recorded in taskserve's store, and a consumer never holds more "
    "messages than it runs at once (TaskProcessorConfig.consumer_concurrency or Serve's "
    "max_ongoing_requests)"
)
_CONNECTION_LOSS = (
    "a task running when the broker connection drops runs to its end and its outcome is "
    "recorded in taskserve's store; a copy the broker delivers again meanwhile is not run "
    "a second time"
)
_WIRE = (
    "tasks travel as uncompressed Celery protocol-2 JSON messages and are never "
    "unpickled: task arguments and results must be JSON values"
)
_EAGER = (
    "tasks always travel through the broker and run in a consumer; for tests without a "
    "server use the filesystem broker ('filesystem://') or the sqlite adapter"
)
_QUEUES = (
    "the adapter declares its queues itself: classic queues with x-max-priority 9, each "
    "bound to a direct exchange of its name (TaskProcessorConfig.queue_name and the "
    "dead-letter queues)"
)
_ROUTES = (
    "every task goes to TaskProcessorConfig.queue_name (the queue of the @task_consumer "
    "that handles it) and its consumer takes tasks of that queue only"
)
_URL = "give one broker in broker_url, with its host, port, credentials and virtual host"
_MONITORING = (
    "the embedded worker sends no Celery events and answers no remote control, so "
    "`celery events`, `celery inspect`, `celery control` and Flower do not see taskserve's "
    "consumers or tasks; use get_metrics_sync() and health_check_sync() (CLI `taskserve "
    "metrics`), a task's status (get_task_status_sync(), CLI `taskserve show`, "
    "GET /status/<task_id>) and the lifecycle hooks (entry-point group 'taskserve.hooks')"
)
_LOGGING = (
    "the replica's process owns logging and its standard streams: configure Python "
    "logging (the adapter logs under 'taskserve' and 'taskserve_celery')"
)
_LEASE = (
    "on RabbitMQ the consumer's heartbeat is its lease, ceil(TaskProcessorConfig.lease_s) "
    "seconds: set lease_s"
)
_SOFT_LIMIT = (
    "taskserve has one time limit per attempt: set TaskProcessorConfig.task_time_limit_s "
    "(or @task_handler(time_limit_s=...)), or Celery's task_time_limit, which is that "
    "limit. At the limit a sync handler gets TaskTimeLimitExceeded raised in its thread "
    "(catch it to clean up, as Celery's SoftTimeLimitExceeded), an async one is "
    "cancelled, and the attempt fails; a handler still running "
    "task_time_limit_grace_s later makes its consumer be replaced"
)
_RATE_LIMITS = (
    "Celery's rate limits are applied by its request machinery, which taskserve-celery "
    "does not use, so tasks would run unthrottled: bound throughput with "
    "TaskProcessorConfig.consumer_concurrency (or Serve's max_ongoing_requests) and the "
    "number of replicas"
)
_ANNOTATIONS = (
    "annotations change Celery tasks, and taskserve's handlers are not Celery tasks: set "
    "options per handler with @task_handler(max_retries=..., retry_backoff_s=..., "
    "time_limit_s=...)"
)
_PRIORITY = (
    "every task is published with its own priority: enqueue_task_sync(priority=...) (0 to "
    "9, higher first), or task_custom_config's 'priority' for tasks enqueued without one"
)
_CRASH = (
    "a task whose consumer dies is delivered again within about a lease and the crash "
    "counts as an attempt: set TaskProcessorConfig.lease_s and max_retries"
)
_RESULTS = (
    "taskserve-celery uses no Celery result backend: status, results and errors (with "
    "their tracebacks) live in taskserve's store at backend_url, results for "
    "TaskProcessorConfig.result_ttl_s"
)
_REDIS_RESULTS = (
    _RESULTS + "; these settings are Celery's Redis result backend's, not the state "
    "store's, whose connection is backend_url (a 'rediss://' URL for TLS)"
)
_CANVAS = "taskserve tasks are single tasks: there are no chains, groups or chords"
_ETA = (
    "the adapter sends no Celery ETA or countdown messages: delayed tasks and retry "
    "backoffs wait in taskserve's store (enqueue with countdown, delay_s or eta; "
    "TaskProcessorConfig.retry_backoff_s)"
)
_TIMES = (
    "the adapter sends no Celery ETA, countdown or expiry: countdown and expires in seconds "
    "and eta or expires as timezone-aware datetimes are kept by taskserve, in UTC"
)
_TRACKING = "STARTED is always recorded, in taskserve's store"
_NO_RATE_LIMITS = "there are no Celery rate limits in taskserve-celery"
_IMPORTS = (
    "handlers are registered with @task_handler (or register_task_handle); Celery tasks in "
    "imported modules are never run by taskserve-celery"
)
_POOL = (
    "no Celery pool, child process or autoscaler runs: " + _CONCURRENCY + "; Serve "
    "replaces a replica that must restart"
)
_NOT_RUN = (
    "the embedded worker runs Celery's connection, prefetch and consumer only, not this "
    "part of Celery's worker"
)
_SHUTDOWN = (
    "stopping is taskserve's: stop_consumer(timeout) (for Serve, its "
    "graceful_shutdown_timeout_s) lets running tasks finish and hands the rest back"
)
_STATE = (
    "taskserve keeps cancel requests in its store, and a task never runs again once "
    "finished, nor twice at once"
)
_SECURITY = (
    "message signing is not supported (messages are JSON); protect the broker with TLS "
    "('amqps://', 'rediss://', broker_use_ssl) and credentials"
)
_BEAT = (
    "no beat scheduler runs in taskserve-celery: enqueue periodic tasks from a scheduler "
    "of your own (cron, a Serve deployment), or delay one task with countdown or eta"
)
_ARGSREPR = "the adapter writes the argsrepr of its messages itself ('[<task name>]')"

ALLOWED_APP_SETTINGS: dict[str, str] = {
    "broker_channel_error_retry": "the consumer also reconnects after a channel error",
    "broker_connection_max_retries": "how many times the consumer retries connecting",
    "broker_connection_retry": "whether the consumer reconnects after losing the broker",
    "broker_connection_retry_on_startup": (
        "whether a starting consumer retries connecting (taskserve's default: True; with "
        "False, start_consumer raises BrokerUnavailable at once when the broker is down)"
    ),
    "broker_connection_timeout": "seconds to wait for a broker connection",
    "broker_failover_strategy": "the order of the brokers, with several in broker_url",
    "broker_heartbeat_checkrate": "heartbeat frames per heartbeat interval (RabbitMQ)",
    "broker_login_method": "the AMQP login method",
    "broker_pool_acquire_timeout": "seconds to wait for a pooled producer connection",
    "broker_pool_limit": "the size of the producer connection pool",
    "broker_use_ssl": "TLS options of the broker connection",
    "task_default_delivery_mode": "persistent (2, the default) or transient (1) messages",
    "task_publish_retry": "whether publishing retries on connection errors",
    "task_publish_retry_policy": "how publishing retries on connection errors",
}
"""Settings that reach the Celery app and take effect with Celery's meaning, each
with what it does here."""

MAPPED_APP_SETTINGS: dict[str, str] = {
    "task_time_limit": "TaskProcessorConfig.task_time_limit_s",
}
"""Celery settings that are taskserve settings under Celery's name: the value is
taskserve's (see :func:`celery_time_limit`), and is not passed to Celery."""

KEPT_APP_SETTINGS: dict[str, tuple[Any, str]] = {
    "accept_content": (["json"], _WIRE),
    "enable_utc": (True, _TIMES),
    "result_accept_content": (["json"], _WIRE),
    "result_serializer": ("json", _WIRE),
    "task_acks_on_failure_or_timeout": (False, _DELIVERY),
    "task_always_eager": (False, _EAGER),
    "task_compression": (None, _WIRE),
    "task_create_missing_queues": (False, _QUEUES),
    "task_protocol": (2, _WIRE),
    "task_send_sent_event": (False, _MONITORING),
    "task_serializer": ("json", _WIRE),
    "task_track_started": (True, _TRACKING),
    "worker_cancel_long_running_tasks_on_connection_loss": (False, _CONNECTION_LOSS),
    "worker_disable_prefetch": (False, _DELIVERY),
    "worker_disable_rate_limits": (True, _NO_RATE_LIMITS),
    "worker_enable_prefetch_count_reduction": (False, _DELIVERY),
    "worker_enable_remote_control": (False, _MONITORING),
    "worker_hijack_root_logger": (False, _LOGGING),
    "worker_prefetch_multiplier": (1, _DELIVERY),
    "worker_redirect_stdouts": (False, _LOGGING),
    "worker_send_task_events": (False, _MONITORING),
}
"""Settings whose value is what the adapter always does (each with why): that value
is accepted, another one is refused."""

REFUSED_APP_SETTINGS: dict[str, str] = {
    # Ray Serve's five
    "task_acks_late": f"{_DELIVERY} {_RAY}",
    "task_ignore_result": f"{_RESULTS} {_RAY}",
    "task_reject_on_worker_lost": f"{_CRASH} {_RAY}",
    "worker_concurrency": f"{_CONCURRENCY} {_RAY}",
    "worker_pool": f"{_CONCURRENCY} {_RAY}",
    # where messages go
    "broker_url": "set the broker_url field",
    "broker_transport_options": "set the broker_transport_options field",
    "result_backend": "set backend_url, where taskserve keeps task state",
    "broker_transport": "the transport follows the scheme of broker_url",
    "broker_read_url": _URL,
    "broker_write_url": _URL,
    "broker_host": _URL,
    "broker_port": _URL,
    "broker_user": _URL,
    "broker_password": _URL,
    "broker_vhost": _URL,
    "task_default_queue": _ROUTES,
    "task_queues": _ROUTES,
    "task_routes": _ROUTES,
    "task_default_exchange": _QUEUES,
    "task_default_exchange_type": _QUEUES,
    "task_default_routing_key": _QUEUES,
    "task_default_queue_type": _QUEUES,
    "task_create_missing_queue_type": _QUEUES,
    "task_create_missing_queue_exchange_type": _QUEUES,
    "task_queue_max_priority": _QUEUES,
    "worker_detect_quorum_queues": _QUEUES,
    "worker_direct": _ROUTES,
    "worker_consumer": "the embedded worker's consumer is the adapter's",
    # running tasks
    "broker_heartbeat": _LEASE,
    "task_soft_time_limit": _SOFT_LIMIT,
    "task_default_rate_limit": _RATE_LIMITS,
    "task_annotations": _ANNOTATIONS,
    "task_default_priority": _PRIORITY,
    "task_inherit_parent_priority": _PRIORITY,
    "task_acks_on_failure": _DELIVERY,
    "task_acks_on_timeout": _DELIVERY,
    "task_retry_on_worker_lost": _CRASH,
    "task_eager_propagates": _EAGER,
    "task_store_eager_result": _EAGER,
    "task_remote_tracebacks": _RESULTS,
    "task_store_errors_even_if_ignored": _RESULTS,
    "task_allow_error_cb_on_chord_header": _CANVAS,
    "task_repr_maxlevels": _ARGSREPR,
    "timezone": _TIMES,
    "imports": _IMPORTS,
    "include": _IMPORTS,
    "broker_native_delayed_delivery_queue_type": _ETA,
    "worker_eta_task_limit": _ETA,
    "cache_backend": _RESULTS,
    "cache_backend_options": _RESULTS,
    "worker_state_db": _STATE,
    "worker_deduplicate_successful_tasks": _STATE,
    "worker_autoscaler": _POOL,
    "worker_lost_wait": _POOL,
    "worker_max_memory_per_child": _POOL,
    "worker_max_tasks_per_child": _POOL,
    "worker_pool_putlocks": _POOL,
    "worker_pool_restarts": _POOL,
    "worker_pool_start_method": _POOL,
    "worker_proc_alive_timeout": _POOL,
    "worker_agent": _NOT_RUN,
    "worker_timer": _NOT_RUN,
    "worker_timer_precision": _NOT_RUN,
    "worker_enable_soft_shutdown_on_idle": _SHUTDOWN,
    "worker_soft_shutdown_timeout": _SHUTDOWN,
    "worker_log_color": _LOGGING,
    "worker_log_datefmt": _LOGGING,
    "worker_log_format": _LOGGING,
    "worker_redirect_stdouts_level": _LOGGING,
    "worker_task_log_datefmt": _LOGGING,
    "worker_task_log_format": _LOGGING,
}
"""Celery settings refused whatever their value, each with why and what to use."""

REFUSED_APP_PREFIXES: tuple[tuple[str, str], ...] = (
    ("event_", _MONITORING),
    ("control_", _MONITORING),
    ("beat_", _BEAT),
    ("security_", _SECURITY),
    ("result_", _RESULTS),
    ("redis_", _REDIS_RESULTS),
    ("arangodb_", _RESULTS),
    ("azureblockblob_", _RESULTS),
    ("cassandra_", _RESULTS),
    ("cosmosdbsql_", _RESULTS),
    ("couchbase_", _RESULTS),
    ("database_", _RESULTS),
    ("elasticsearch_", _RESULTS),
    ("gcs_", _RESULTS),
    ("mongodb_", _RESULTS),
    ("s3_", _RESULTS),
)
"""Families of Celery settings refused whatever their value: events and remote
control, beat, message signing, and the result backends'."""

CLASSIFIED_APP_SETTINGS = frozenset(
    set(ALLOWED_APP_SETTINGS)
    | set(MAPPED_APP_SETTINGS)
    | set(KEPT_APP_SETTINGS)
    | set(REFUSED_APP_SETTINGS)
)
"""Every Celery setting named one by one above (the prefixed families aside)."""


def _comparable(value: Any) -> Any:
    """Lists, tuples and sets of content types compare as sorted lists, with
    'application/json' as 'json'."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return sorted("json" if v == "application/json" else v for v in value)
    return value


def _same(given: Any, kept: Any) -> bool:
    # bool is an int: True must not pass for 1, nor 1 for True
    if isinstance(given, bool) is not isinstance(kept, bool):
        return False
    return bool(_comparable(given) == _comparable(kept))


def _suggestion(key: str) -> str:
    """The Celery setting ``key`` may have been meant as, or '': the lowercase
    name of one of Celery's old upper-case names (``BROKER_POOL_LIMIT``,
    ``CELERY_TASK_SERIALIZER``, ``CELERYD_CONCURRENCY``), or a close spelling."""
    if key != key.lower():
        old = key.lower()
        rest = old.removeprefix("celery_")
        candidates = [old, rest, "task_" + rest]
        if old.startswith("celeryd_"):
            candidates.append("worker_" + old.removeprefix("celeryd_"))
        if old.startswith("celerybeat_"):
            candidates.append("beat_" + old.removeprefix("celerybeat_"))
        for candidate in candidates:
            if _known(candidate):
                return candidate
    close = difflib.get_close_matches(key, sorted(CLASSIFIED_APP_SETTINGS), n=1, cutoff=0.8)
    return close[0] if close else ""


def _known(key: str) -> bool:
    return key in CLASSIFIED_APP_SETTINGS or any(
        key.startswith(prefix) for prefix, _ in REFUSED_APP_PREFIXES
    )


def refusal(key: str, value: Any) -> str | None:
    """Why ``app_custom_config`` cannot take ``key`` = ``value`` and what to use
    instead, or None if it takes effect (allowed, mapped, or the value kept)."""
    if key in ALLOWED_APP_SETTINGS or key in MAPPED_APP_SETTINGS:
        return None
    if key in KEPT_APP_SETTINGS:
        kept, reason = KEPT_APP_SETTINGS[key]
        if _same(value, kept):
            return None
        return f"taskserve-celery keeps {key}={kept!r}: {reason}"
    if key in REFUSED_APP_SETTINGS:
        return REFUSED_APP_SETTINGS[key]
    for prefix, reason in REFUSED_APP_PREFIXES:
        if key.startswith(prefix):
            return reason
    suggestion = _suggestion(key)
    if suggestion:
        return (
            "unknown Celery setting (Celery would keep it without using it); did you mean "
            f"'{suggestion}'?"
        )
    return (
        "not a Celery setting (Celery would keep it without using it); the settings that "
        f"take effect here are {', '.join(sorted(ALLOWED_APP_SETTINGS))}, and "
        f"{', '.join(sorted(MAPPED_APP_SETTINGS))}"
    )


def app_settings_problems(settings: dict[str, Any]) -> list[str]:
    """One line per key of ``app_custom_config`` that cannot take effect, naming
    it, why, and what to use instead; empty if every key takes effect."""
    problems = []
    for key in sorted(settings, key=str):
        reason = refusal(str(key), settings[key])
        if reason is not None:
            problems.append(f"{key}: {reason}")
    problems.extend(_time_limit_problem("app_custom_config.task_time_limit", settings))
    return problems


def _time_limit_problem(
    name: str, settings: dict[str, Any], key: str = "task_time_limit"
) -> list[str]:
    value = settings.get(key)
    if value is None:
        return []
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        return [
            f"{key}: {name} is TaskProcessorConfig.task_time_limit_s, seconds above 0 (None "
            f"for no limit); got {value!r}"
        ]
    return []


def task_time_limit_problems(options: dict[str, Any]) -> list[str]:
    """The problems of ``task_custom_config``'s ``time_limit`` (see
    :func:`app_settings_problems`)."""
    return _time_limit_problem("task_custom_config.time_limit", options, "time_limit")


def celery_time_limit(
    app_settings: dict[str, Any] | None, task_options: dict[str, Any] | None
) -> float | None:
    """The core time limit (``TaskProcessorConfig.task_time_limit_s``) that Celery's
    ``task_time_limit`` (``app_custom_config``) or ``time_limit``
    (``task_custom_config``) sets, or None; raise ValueError if both are given
    and differ (one of them would be dropped)."""
    app_limit = (app_settings or {}).get("task_time_limit")
    task_limit = (task_options or {}).get("time_limit")
    if app_limit is not None and task_limit is not None and app_limit != task_limit:
        raise ValueError(
            f"app_custom_config.task_time_limit ({app_limit!r}) and "
            f"task_custom_config.time_limit ({task_limit!r}) are both the time limit of "
            "every task (TaskProcessorConfig.task_time_limit_s); give one"
        )
    limit = app_limit if app_limit is not None else task_limit
    return None if limit is None else float(limit)
