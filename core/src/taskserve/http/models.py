"""Request and response bodies of the task HTTP API (published in its OpenAPI schema)."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskserve.http.settings import ID_PATTERN, TASK_NAME_PATTERN
from taskserve.models import DeadLetter, DeadLetterKind, NotRedriven, TaskError, TaskResult
from taskserve.states import TaskState


class SubmitRequest(BaseModel):
    """A task to enqueue (the router narrows ``task_name`` to its settings)."""

    model_config = ConfigDict(extra="forbid")

    task_name: str = Field(
        min_length=1,
        max_length=200,
        pattern=TASK_NAME_PATTERN,
        description="Name of the task handler to run (printable text).",
    )
    args: list[Any] = Field(default_factory=list, description="Positional arguments (JSON).")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments (JSON).")


class SubmitResponse(BaseModel):
    """An accepted task."""

    task_id: str
    status: TaskState
    status_url: str = Field(description="Where to poll the task's status.")
    result_url: str = Field(description="Where to fetch the task's result once it ended.")
    retried_from: str | None = None


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
