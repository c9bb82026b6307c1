"""Value objects returned by adapters: task results, errors, dead letters."""

from __future__ import annotations

import enum
import time
import traceback as traceback_module
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskserve.states import TaskState


class TaskError(BaseModel):
    """Why a task attempt failed."""

    model_config = ConfigDict(frozen=True)

    type: str = Field(description="Qualified name of the exception class.")
    message: str = Field(description="str() of the exception.")
    traceback: str = Field(default="", description="Formatted traceback, if any.")

    @classmethod
    def from_exception(cls, exc: BaseException) -> TaskError:
        """Describe ``exc`` with its type, message and traceback."""
        exc_type = type(exc)
        name = exc_type.__qualname__
        if exc_type.__module__ not in ("builtins", "__main__"):
            name = f"{exc_type.__module__}.{name}"
        return cls(
            type=name,
            message=str(exc),
            traceback="".join(traceback_module.format_exception(exc)),
        )


class TaskID(BaseModel):
    """A task identifier, as the reference API passes it around."""

    id: str


class TaskResult(BaseModel):
    """What an adapter knows about one task.

    ``status`` is the normalized :class:`TaskState`; ``result`` is the handler's
    return value once the task succeeded; ``error`` describes the last failed
    attempt; ``attempts`` counts started runs, crashed ones included.
    """

    model_config = ConfigDict(populate_by_name=True)

    id: str
    status: TaskState
    created_at: float | None = None
    result: Any = None
    error: TaskError | None = None
    attempts: int = 0
    name: str | None = None
    queue_name: str | None = None
    updated_at: float | None = None
    retried_from: str | None = Field(
        default=None, description="Id of the task this one re-runs, if any."
    )

    @property
    def state(self) -> TaskState:
        """Alias of ``status`` (the reference template reads ``.state``)."""
        return self.status

    @property
    def task_id(self) -> TaskID:
        """This task's id as a :class:`TaskID`."""
        return TaskID(id=self.id)


class CancelOutcome(BaseModel):
    """What a cancel request did.

    ``cancelled`` is true when the task is (or will be, once its running handler
    stops) CANCELLED; false when it had already finished, in which case
    ``status`` is its unchanged terminal state.
    """

    id: str
    cancelled: bool
    status: TaskState
    message: str


class DeadLetterKind(enum.StrEnum):
    """Which dead-letter queue a record is in."""

    FAILED = "failed"
    UNPROCESSABLE = "unprocessable"


class DeadLetter(BaseModel):  # type: ignore[no-redef,unused-ignore]
    """One dead-lettered task, kept exactly as it was enqueued.

    ``args`` and ``kwargs`` are the original values (a JSON round-trip); for an
    undecodable message they are ``None`` and ``raw`` holds the original bytes
    (base64 in JSON).
    """

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    id: str = Field(description="Id of this dead-letter record.")
    kind: DeadLetterKind
    queue_name: str = Field(description="The dead-letter queue holding the record.")
    source_queue: str = Field(description="The queue the task was consumed from.")
    task_id: str | None
    task_name: str | None
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    raw: bytes | None = None
    error: TaskError
    attempts: int
    enqueued_at: float | None
    failed_at: float = Field(default_factory=time.time)


class NotRedriven(BaseModel):
    """A dead letter a redrive left in place, and why."""

    id: str = Field(description="Id of the dead-letter record (still in its queue).")
    reason: str = Field(description="Why it was not enqueued again.")


class RedriveOutcome(list[TaskResult]):
    """What a redrive did: the new tasks (this list, in the order of their
    records), the dead-letter record each came from (``dead_letter_ids``),
    and the records left in place with the reason (``not_redriven``).

    A record leaves its dead-letter queue only once its new task is recorded;
    a record whose new task is enqueued but that could not be removed stays
    (``kept``), and redriving it again returns the same task (its dead-letter
    id is the new task's idempotency key where the adapter has them).
    """

    def __init__(self) -> None:
        super().__init__()
        self.dead_letter_ids: list[str] = []
        self.kept: list[str] = []
        self.not_redriven: list[NotRedriven] = []

    def add(self, dead_letter_id: str, task: TaskResult, *, removed: bool = True) -> None:
        """Record that ``dead_letter_id`` was enqueued again as ``task``."""
        self.append(task)
        self.dead_letter_ids.append(dead_letter_id)
        if not removed:
            self.kept.append(dead_letter_id)

    def refuse(self, dead_letter_id: str, reason: str) -> None:
        """Record that ``dead_letter_id`` was left in place, and why."""
        self.not_redriven.append(NotRedriven(id=dead_letter_id, reason=reason))

    def __repr__(self) -> str:
        return (
            f"RedriveOutcome(redriven={[t.id for t in self]!r}, "
            f"not_redriven={[n.id for n in self.not_redriven]!r})"
        )


class HealthReport(BaseModel):
    """Whether an adapter can do its work right now."""

    healthy: bool
    broker_reachable: bool
    consumer_running: bool | None = Field(
        default=None, description="None when no consumer was started."
    )
    detail: str = ""


class AdapterMetrics(BaseModel):
    """Point-in-time counters of a queue, used for autoscaling and dashboards."""

    queue_name: str
    queue_depth: int = Field(description="Tasks waiting to run (PENDING or RETRY).")
    in_flight: int = Field(description="Tasks fetched by some consumer and running.")
    dead_letters_failed: int | None = None
    dead_letters_unprocessable: int | None = None
    consumer_concurrency: int | None = None
    local_in_flight: int | None = Field(
        default=None, description="Tasks running in this process's consumer."
    )
