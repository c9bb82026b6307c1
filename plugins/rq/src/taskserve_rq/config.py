"""Configuration of the RQ adapter.

Every field takes effect (see each one's description); any other key is
refused, and RQ's own option names (:data:`RQ_OPTIONS`) are refused saying
what takes their place, so that nothing RQ users are used to passing is
accepted and then silently dropped.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from taskserve.kit import PRIORITY_LEVEL_SUFFIX, AdapterConfig, RedactedUrl

_PREFIX = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")


_LEVEL_NAME = re.compile(re.escape(PRIORITY_LEVEL_SUFFIX) + r"[1-9]\Z")

_TIMEOUT = (
    "set job_timeout_s (RQ's job timeout), or the core limit "
    "TaskProcessorConfig.task_time_limit_s (@task_handler(time_limit_s=...) per handler)"
)
_RESULT_TTL = (
    "set job_result_ttl_s: how long RQ keeps its own job record, finished and failed alike; "
    "taskserve keeps results for TaskProcessorConfig.result_ttl_s"
)
_CLASSES = (
    "the adapter's own RQ classes carry its promises (its job class, a thread-safe death "
    "penalty, SimpleWorkers in threads of the replica)"
)
_RUNNING = (
    "consumers run until stop_consumer; delayed tasks and retries are scheduled by "
    "taskserve's store, not RQ's scheduler"
)
_LOGGING = "configure Python logging (the adapter logs under 'taskserve' and 'taskserve_rq')"

RQ_OPTIONS: dict[str, str] = {
    "timeout": _TIMEOUT,
    "job_timeout": _TIMEOUT,
    "default_timeout": _TIMEOUT,
    "result_ttl": _RESULT_TTL,
    "failure_ttl": _RESULT_TTL,
    "ttl": "a queued task waits until a consumer takes it or it is cancelled (cancel_task_sync)",
    "retry": (
        "retries are taskserve's: set TaskProcessorConfig.max_retries, retry_backoff_s, "
        "retry_backoff_max_s and retry_jitter (or @task_handler(...) per handler)"
    ),
    "serializer": "jobs are stored with RQ's JSONSerializer, never pickle",
    "is_async": ("jobs always run in a consumer; for tests without Redis use the sqlite adapter"),
    "connection": "set redis_url",
    "connection_class": "set redis_url",
    "worker_ttl": "it follows dequeue_timeout_s (dequeue_timeout_s + 15 s)",
    "job_class": _CLASSES,
    "queue_class": _CLASSES,
    "worker_class": _CLASSES,
    "death_penalty_class": _CLASSES,
    "burst": _RUNNING,
    "with_scheduler": _RUNNING,
    "max_jobs": _RUNNING,
    "max_idle_time": _RUNNING,
    "exception_handlers": (
        "failures are recorded by taskserve (TaskResult.error, the failed dead-letter "
        "queue) and reported to its lifecycle hooks (entry-point group 'taskserve.hooks')"
    ),
    "queues": "set TaskProcessorConfig.queue_name",
    "queue_name": "set TaskProcessorConfig.queue_name",
    "logging_level": _LOGGING,
    "log_format": _LOGGING,
    "date_format": _LOGGING,
}
"""RQ's queue, job and worker options an RQ user may pass, each with what takes
its place; refused."""


class RQAdapterConfig(AdapterConfig):
    """Where the RQ adapter keeps its queue and task records, and how RQ runs jobs.

    Passing an instance as ``TaskProcessorConfig.adapter_config`` selects the
    ``rq`` adapter. Unknown keys are rejected.
    """

    adapter_alias: ClassVar[str | None] = "rq"

    redis_url: RedactedUrl = Field(
        default="redis://localhost:6379/0",
        description="Redis holding the RQ queue, its registries and taskserve's task records.",
    )
    key_prefix: str = Field(
        default="taskserve",
        description=(
            "Prefix of taskserve's own keys (task records, leases, dead letters); "
            "RQ's keys keep RQ's names (rq:queue:<queue_name>, "
            "rq:queue:<queue_name>@priority-<n>, rq:job:<id>, ...)."
        ),
    )
    job_timeout_s: int | None = Field(
        default=None,
        ge=1,
        description=(
            "RQ job timeout: a handler running longer fails with JobTimeoutException "
            "(then it is retried or dead-lettered like any failure), as RQ's own records "
            "show it. None: no limit. TaskProcessorConfig.task_time_limit_s (and a "
            "handler's time_limit_s) applies as well, the same on every engine: the "
            "shorter limit ends the attempt, and only the core one also replaces a "
            "consumer whose handler outlives it; prefer it unless RQ's job timeout "
            "is wanted."
        ),
    )
    job_result_ttl_s: int = Field(
        default=0,
        ge=0,
        description=(
            "How long RQ's own job record (status, finished/failed/canceled registries, "
            "as `rq info` and dashboards show them) is kept after a task ends; 0 deletes "
            "it at once. Task results are kept by taskserve for result_ttl_s either way."
        ),
    )
    dequeue_timeout_s: int = Field(
        default=1,
        ge=1,
        le=30,
        description=(
            "Longest blocking wait of one idle fetch; an idle worker notices a stop "
            "request within this time."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_rq_options(cls, data: Any) -> Any:
        """Refuse RQ's own option names (:data:`RQ_OPTIONS`), saying what to use."""
        if isinstance(data, dict):
            given = sorted(key for key in data if key in RQ_OPTIONS)
            if given:
                raise ValueError(
                    "; ".join(
                        f"{key}: RQ's option is not taken by the rq adapter: {RQ_OPTIONS[key]}"
                        for key in given
                    )
                )
        return data

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError("must be 1-100 characters of letters, digits, '_', '.', ':' or '-'")
        return value

    def check_queue_name(self, name: str, field: str) -> None:
        """A queue's tasks of priority 1 to 9 wait in RQ queues named
        ``<queue_name>@priority-<n>``: a queue name of that form is refused, as it
        could be another queue's level. Dead-letter queues are records in the
        task store, and take any name."""
        if field == "queue_name" and _LEVEL_NAME.search(name):
            raise ValueError(
                f"{name!r} cannot be an RQ adapter queue: names ending in "
                f"'{PRIORITY_LEVEL_SUFFIX}' and a digit from 1 to 9 are those of the RQ queues "
                "of priority levels"
            )
