"""Request and response bodies of the task HTTP API (published in its OpenAPI schema)."""

from __future__ import annotations

import base64
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskserve.models import DeadLetter, DeadLetterKind, TaskError, TaskResult
from taskserve.states import TaskState


class SubmitRequest(BaseModel):
    """A task to enqueue."""

    model_config = ConfigDict(extra="forbid")

    task_name: str = Field(min_length=1, description="Name of the task handler to run.")
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


class RedriveRequest(BaseModel):
    """Which dead letters to enqueue again."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(
        default=None, description="Dead-letter record ids; null redrives the whole queue."
    )
    kind: DeadLetterKind = DeadLetterKind.FAILED


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


class ErrorResponse(BaseModel):
    """Why a request was refused."""

    detail: str
    capability: str | None = Field(
        default=None, description="The adapter capability the request needs, if missing."
    )
    status: TaskState | None = Field(default=None, description="The task's status, if relevant.")
