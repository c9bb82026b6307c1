"""Optional features an adapter may declare.

Each adapter class lists what it offers in ``capabilities``; the list is data
on the class, readable without connecting to a broker. Calling a feature the
adapter does not declare raises :class:`~taskserve.errors.UnsupportedCapability`,
and the conformance suite skips that feature's tests, naming it.
"""

from __future__ import annotations

import enum


class Capability(enum.StrEnum):
    """One optional feature; ``question`` says what declaring it promises."""

    question: str

    def __new__(cls, value: str, question: str) -> Capability:
        member = str.__new__(cls, value)
        member._value_ = value
        member.question = question
        return member

    CANCEL_PENDING = (
        "cancel_pending",
        "Can a queued task be cancelled durably, even with no consumer online?",
    )
    CANCEL_RUNNING = (
        "cancel_running",
        "Can a running task be cancelled (async handlers interrupted, sync ones flagged)?",
    )
    CRASH_REDELIVERY = (
        "crash_redelivery",
        "Is a task whose consumer died delivered again within the lease?",
    )
    LEASE_EXTENSION = (
        "lease_extension",
        "Is a running task's lease extended, so a long task is not run twice?",
    )
    RETRY_BACKOFF = ("retry_backoff", "Are retries delayed by the configured backoff?")
    DELAYED_TASKS = (
        "delayed_tasks",
        "Does a task enqueued with delay_s or eta wait durably, cancelable, until it is due?",
    )
    PRIORITIES = (
        "priorities",
        "Does a consumer with a free slot start a ready task of a higher priority (0-9) "
        "before any ready task of a lower one of its queue?",
    )
    DEAD_LETTERS = (
        "dead_letters",
        "Are failed and unprocessable tasks kept, listable, redrivable and purgeable?",
    )
    RESULT_TTL = ("result_ttl", "Are results removed once the result TTL has passed?")
    IDEMPOTENCY_KEYS = (
        "idempotency_keys",
        "Does enqueue with the same idempotency key return the first task?",
    )
    QUEUE_METRICS = (
        "queue_metrics",
        "Does get_metrics_sync report queue depth and in-flight count?",
    )
    GRACEFUL_STOP = (
        "graceful_stop",
        "Does stop_consumer drain running tasks and hand back unstarted ones at once?",
    )
    PROGRESS = (
        "progress",
        "Is a running handler's current_task().report_progress() kept in the task's "
        "status, rate-limited, and left unchanged once the task has finished?",
    )
    TIME_LIMITS = (
        "time_limits",
        "Is a handler running past task_time_limit_s (or its time_limit_s) interrupted and "
        "failed with TaskTimeLimitExceeded, and does one that outlives the limit by the "
        "grace period make its consumer unhealthy and its task run again elsewhere?",
    )
    BATCHING = (
        "batching",
        "Does a handler declared with batch_max_size get the ready tasks of its name in "
        "one call, up to that many or what arrived within batch_wait_timeout_s, each task "
        "keeping its own status, result, attempts, lease and cancel?",
    )
    WEBHOOKS = (
        "webhooks",
        "Are the webhooks a task asks for (enqueue with webhook_url) sent signed the "
        "Standard Webhooks way, retried until accepted, at least once across consumer "
        "crashes under stable event ids, and refused for private targets unless allowed?",
    )
    TASK_LISTING = (
        "task_listing",
        "Does list_tasks_sync list the queue's live task records newest first, filtered by "
        "status, at most limit of them, and page with before, never another queue's tasks "
        "or an expired one?",
    )
