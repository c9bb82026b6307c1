"""Configuration of the RQ adapter."""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field, field_validator

from taskserve.kit import AdapterConfig, RedactedUrl

_PREFIX = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")

LEVEL_SUFFIX = "@priority-"
"""What the RQ queue of a priority level above 0 adds to the queue name."""

_LEVEL_NAME = re.compile(re.escape(LEVEL_SUFFIX) + r"[1-9]\Z")


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
                f"'{LEVEL_SUFFIX}' and a digit from 1 to 9 are those of the RQ queues "
                "of priority levels"
            )
