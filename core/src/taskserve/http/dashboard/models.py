"""JSON bodies of the dashboard's own endpoints (published in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from taskserve.models import DeadLetterKind


class DashboardConfig(BaseModel):
    """What the dashboard page may offer on this router."""

    actions: bool = Field(
        description=(
            "Whether the page offers redrive and purge: true only when the admin routes "
            "are protected (HttpSettings.admin_token or admin_dependencies)."
        )
    )
    token_required: bool = Field(
        description="Whether the admin routes need 'Authorization: Bearer <admin token>'."
    )
    task_listing: bool = Field(description="Whether the router serves GET /tasks.")
    dead_letter_kinds: list[DeadLetterKind] = Field(
        description="The dead-letter queues the router lists (none without dead_letters)."
    )
    expose_tracebacks: bool = Field(description="Whether task errors carry their traceback.")


class FinishedCounts(BaseModel):
    """Tasks of the queue that ended within the last ``window_s`` seconds."""

    window_s: float
    succeeded: int
    failed: int
    cancelled: int
    at_least: bool = Field(
        description=(
            "True when the count comes from a full page of the newest finished tasks "
            "(older ones that ended in the window are not counted)."
        )
    )


class QueueOverview(BaseModel):
    """The queue at a glance: depth, in-flight, consumers, finish rate and dead
    letters; a figure the adapter cannot give is null, with the reason in
    ``unavailable``."""

    queue_name: str
    queue_depth: int | None = Field(description="Tasks waiting to run (PENDING or RETRY).")
    in_flight: int | None = Field(description="Tasks fetched by a consumer and running.")
    consumers: int | None = Field(description="Consumers of the queue alive now.")
    dead_letters_failed: int | None
    dead_letters_unprocessable: int | None
    failed_queue_name: str | None
    unprocessable_queue_name: str | None
    finished: FinishedCounts | None = Field(
        description="Tasks that ended in the last minute (from the task listing)."
    )
    unavailable: dict[str, str] = Field(
        default_factory=dict,
        description="Capability -> why the figures that need it are null.",
    )


class TaskPayload(BaseModel):  # type: ignore[no-redef,unused-ignore]
    """A task as first enqueued."""

    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue_name: str
    priority: int | None = None
    enqueued_at: float
    retried_from: str | None = None
    not_before: float | None = Field(
        default=None, description="The earliest time it may run (unix), if delayed."
    )
    expires_at: float | None = Field(
        default=None, description="The time after which it is not run any more (unix)."
    )
