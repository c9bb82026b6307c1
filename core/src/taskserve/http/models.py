"""Request and response bodies of the task HTTP API (published in its OpenAPI schema)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from taskserve.http.settings import ID_PATTERN, TASK_NAME_PATTERN
from taskserve.models import (
    DeadLetter,
    DeadLetterKind,
    NotRedriven,
    TaskError,
    TaskProgress,
    TaskResult,
)
from taskserve.scheduling import MAX_DELAY_S, MAX_PRIORITY, MIN_PRIORITY
from taskserve.states import TaskState
from taskserve.webhooks.settings import WebhookEvent
from taskserve.webhooks.targets import MAX_WEBHOOK_URL_LENGTH


class SubmitRequest(BaseModel):
    """A task to enqueue (the router narrows ``task_name`` to its settings)."""

    model_config = ConfigDict(
        extra="forbid",
        # delay_s and eta exclude each other, in the schema as in validation.
        json_schema_extra={"not": {"required": ["delay_s", "eta"]}},
    )

    task_name: str = Field(
        min_length=1,
        max_length=200,
        pattern=TASK_NAME_PATTERN,
        description="Name of the task handler to run (printable text).",
    )
    args: list[Any] = Field(default_factory=list, description="Positional arguments (JSON).")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments (JSON).")
    delay_s: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY_S,
        allow_inf_nan=False,
        strict=True,  # a JSON number, not text or a boolean
        description="Run the task no earlier than this many seconds from now.",
    )
    eta: AwareDatetime | None = Field(
        default=None,
        description=(
            "Run the task no earlier than this time (RFC 3339 with an offset, e.g. "
            "2026-01-31T12:00:00Z); not together with delay_s."
        ),
    )
    priority: int | None = Field(
        default=None,
        ge=MIN_PRIORITY,
        le=MAX_PRIORITY,
        description=(
            "Priority within the queue, 0 (lowest, the default) to 9: a consumer with a "
            "free slot starts higher priorities first."
        ),
    )
    webhook_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_WEBHOOK_URL_LENGTH,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[\x21-\x7e]+$",
        description=(
            "Where to POST the task's webhook events (http or https), signed the Standard "
            "Webhooks way; a host that is or resolves to a private address is refused "
            "unless the queue allows private targets."
        ),
    )
    webhook_events: list[WebhookEvent] | None = Field(
        default=None,
        min_length=1,
        max_length=len(WebhookEvent),
        description=(
            "The events the webhook is sent for (default: succeeded, failed, cancelled); "
            "needs webhook_url. A queue without a signing secret refuses webhooks (409)."
        ),
    )

    @field_validator("eta", mode="before")
    @classmethod
    def _eta_is_text(cls, value: Any) -> Any:
        # RFC 3339 text only: pydantic would read a number as a unix time.
        if value is not None and not isinstance(value, (str, datetime)):
            raise ValueError("eta must be an RFC 3339 time with an offset, as text")
        return value

    @field_validator("priority", mode="before")
    @classmethod
    def _priority_is_a_number(cls, value: Any) -> Any:
        # A JSON integer (6.0 is one, to JSON Schema); not text or a boolean.
        if isinstance(value, bool) or (value is not None and not isinstance(value, (int, float))):
            raise ValueError("priority must be an integer from 0 to 9")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @model_validator(mode="after")
    def _one_delay(self) -> SubmitRequest:
        if self.delay_s is not None and self.eta is not None:
            raise ValueError("give delay_s or eta, not both")
        return self


class SubmitResponse(BaseModel):
    """An accepted task."""

    task_id: str
    status: TaskState
    status_url: str = Field(description="Where to poll the task's status.")
    result_url: str = Field(description="Where to fetch the task's result once it ended.")
    retried_from: str | None = None
    due_at: float | None = Field(
        default=None, description="When a delayed task is due (unix time), else null."
    )


class TaskStatusResponse(BaseModel):
    """A task's status, without its result."""

    id: str
    name: str | None = None
    queue_name: str | None = None
    status: TaskState
    created_at: float | None = None
    updated_at: float | None = None
    attempts: int = 0
    error: TaskError | None = None
    retried_from: str | None = None
    due_at: float | None = Field(
        default=None,
        description=(
            "For a PENDING or RETRY task kept back until a time (a delay, an eta, a "
            "retry's backoff): that time (unix); null otherwise."
        ),
    )

    progress: TaskProgress | None = Field(
        default=None,
        description=(
            "The last progress the task's handler reported (fraction from 0 to 1, message, "
            "data, updated_at); null when it never reported. Kept once the task has finished."
        ),
    )

    @classmethod
    def of(cls, result: TaskResult) -> TaskStatusResponse:
        """The status part of a :class:`TaskResult`."""
        return cls.model_validate(result.model_dump(exclude={"result"}))


class TaskResultResponse(BaseModel):
    """A finished task's outcome: ``result`` on SUCCESS, ``error`` on FAILURE."""

    id: str
    status: TaskState
    result: Any = None
    error: TaskError | None = None
    attempts: int = 0


RecordId = Annotated[str, Field(min_length=1, max_length=200, pattern=ID_PATTERN)]


class RedriveRequest(BaseModel):
    """Which dead letters to enqueue again."""

    model_config = ConfigDict(extra="forbid")

    ids: list[RecordId] | None = Field(
        default=None,
        max_length=1000,
        description="Dead-letter record ids; null redrives the whole queue.",
    )
    kind: DeadLetterKind = DeadLetterKind.FAILED


class RedrivenTask(SubmitResponse):
    """A dead letter enqueued again."""

    dead_letter_id: str = Field(description="The record it came from.")
    record_removed: bool = Field(
        default=True,
        description=(
            "False when the new task is enqueued but the record could not be removed: "
            "redriving it again returns this same task."
        ),
    )


class RedriveResponse(BaseModel):
    """What a redrive did: every requested record is in one of the two lists."""

    redriven: list[RedrivenTask]
    not_redriven: list[NotRedriven] = Field(
        description="Records left in their queue, each with the reason."
    )


class PurgeIds(BaseModel):
    """Delete these dead-letter records."""

    model_config = ConfigDict(extra="forbid")

    ids: list[RecordId] = Field(max_length=1000)
    kind: DeadLetterKind = DeadLetterKind.FAILED


class PurgeAll(BaseModel):
    """Delete every dead-letter record of ``kind``."""

    model_config = ConfigDict(extra="forbid")

    all: Literal[True]
    kind: DeadLetterKind = DeadLetterKind.FAILED


PurgeRequest = PurgeIds | PurgeAll
"""Which dead letters to delete: ``{"ids": [...]}`` or ``{"all": true}``."""


class PurgeResponse(BaseModel):
    """How many records were deleted."""

    purged: int


class DeadLetterResponse(BaseModel):  # type: ignore[no-redef,unused-ignore]
    """A dead-letter record; undecodable bytes are given in base64."""

    id: str
    kind: DeadLetterKind
    queue_name: str
    source_queue: str
    task_id: str | None
    task_name: str | None
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    raw_base64: str | None = None
    error: TaskError
    attempts: int
    enqueued_at: float | None
    failed_at: float

    @classmethod
    def of(cls, record: DeadLetter) -> DeadLetterResponse:
        """The JSON form of a :class:`DeadLetter`."""
        data = record.model_dump(exclude={"raw"})
        data["raw_base64"] = base64.b64encode(record.raw).decode() if record.raw else None
        return cls.model_validate(data)

    @staticmethod
    def jsonable(record: DeadLetter, error: TaskError) -> dict[str, Any]:
        """The record as a JSON-ready dict, its arguments as they are (never
        through pydantic's serializer, which stops at 255 levels)."""
        data = record.model_dump(mode="json", exclude={"raw", "args", "kwargs", "error"})
        data["args"], data["kwargs"] = record.args, record.kwargs
        data["raw_base64"] = base64.b64encode(record.raw).decode() if record.raw else None
        data["error"] = error.model_dump(mode="json")
        return data


class ErrorResponse(BaseModel):
    """Why a request was refused."""

    detail: str
    capability: str | None = Field(
        default=None, description="The adapter capability the request needs, if missing."
    )
    status: TaskState | None = Field(default=None, description="The task's status, if relevant.")
