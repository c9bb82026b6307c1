"""Value objects returned by adapters: task results, errors, dead letters."""

from __future__ import annotations

import ast
import builtins
import contextlib
import enum
import time
import traceback as traceback_module
from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from taskserve import errors as taskserve_errors
from taskserve.states import TaskState

CELERY_STATE_NAMES: dict[str, TaskState] = {
    "REVOKED": TaskState.CANCELLED,
    "RECEIVED": TaskState.PENDING,
    "REJECTED": TaskState.FAILURE,
}
"""Celery's state names that are not taskserve's, and the state they mean; a
:class:`TaskResult` built with one (by an adapter written against Ray Serve's
interface, say) gets the taskserve state."""


class RemoteTaskError(Exception):
    """The exception of a failed task, rebuilt from its recorded type name and
    message when the type is not one taskserve rebuilds by name (builtins and
    taskserve's own errors). ``str()`` is the recorded message; ``type_name``
    the qualified name of the original type."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __repr__(self) -> str:
        return f"RemoteTaskError({self.type_name}: {str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, str(self)))


def _exception_type(type_name: str) -> type[Exception] | None:
    """The class a recorded type name denotes, looked up by name only (no module
    is imported): a builtin exception, or one of taskserve's errors."""
    module, _, name = type_name.rpartition(".")
    if module == "":
        found = getattr(builtins, name, None)
    elif module == taskserve_errors.__name__:
        found = getattr(taskserve_errors, name, None)
    else:
        return None
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


def rebuild_exception(type_name: str, message: str) -> Exception:
    """An exception instance for a recorded failure, never unpickled: the builtin
    or taskserve error of that name when it can be built with the message (so
    ``str()`` gives the message back), else a :class:`RemoteTaskError`."""
    found = _exception_type(type_name)
    if found is not None:
        candidates: list[Any] = [message]
        # KeyError('x') records "'x'": rebuild it from the literal it shows.
        with contextlib.suppress(ValueError, SyntaxError, MemoryError, RecursionError):
            candidates.append(ast.literal_eval(message))
        for argument in candidates:
            try:
                exc = found(argument)
            except Exception:
                continue
            if str(exc) == message:
                return exc
    return RemoteTaskError(type_name, message)


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

    def to_exception(self) -> Exception:
        """This error as an exception instance (see :func:`rebuild_exception`)."""
        return rebuild_exception(self.type, self.message)


class TaskID(BaseModel):
    """A task identifier, as the reference API passes it around."""

    id: str


class TaskProgress(BaseModel):
    """How far a running task is, as its handler last reported it with
    :meth:`~taskserve.TaskContext.report_progress`.

    ``fraction`` is from 0 to 1; ``message`` a short text and ``data`` a JSON
    value the handler attached (both optional); ``updated_at`` the unix time
    of the report (the handler's clock). A task keeps its last report once it
    has finished.
    """

    model_config = ConfigDict(frozen=True)

    fraction: float = Field(ge=0.0, le=1.0, description="How far the task is, from 0 to 1.")
    message: str | None = Field(default=None, description="A short text of the handler's.")
    data: Any = Field(default=None, description="A JSON value the handler attached.")
    updated_at: float = Field(description="When the handler made this report (unix time).")


class TaskResult(BaseModel):
    """What an adapter knows about one task.

    ``status`` is the normalized :class:`TaskState`; ``result`` is the handler's
    return value once the task succeeded and, once it failed, the exception
    (rebuilt from the recorded type and message, as Ray Serve's ``TaskResult``
    holds it; it is ``null`` in JSON, where ``error`` says it all); ``error``
    describes the last failed attempt (type, message, traceback); ``attempts``
    counts started runs, crashed ones included; ``progress`` is the handler's
    last :class:`TaskProgress` report, if it made one.
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
    due_at: float | None = Field(
        default=None,
        description=(
            "For a PENDING or RETRY task kept back until a time (enqueued with delay_s or "
            "eta, a retry waiting for its backoff, a task handed back): that time (unix); "
            "null for a task deliverable at once or no longer waiting."
        ),
    )
    progress: TaskProgress | None = Field(
        default=None,
        description=(
            "The last progress the task's handler reported (current_task().report_progress); "
            "null when it never reported. Kept once the task has finished."
        ),
    )

    @field_validator("status", mode="before")
    @classmethod
    def _celery_state_names(cls, value: Any) -> Any:
        if isinstance(value, str) and value.upper() in CELERY_STATE_NAMES:
            return CELERY_STATE_NAMES[value.upper()]
        return value

    @model_validator(mode="after")
    def _failure_as_exception(self) -> TaskResult:
        if self.status is TaskState.FAILURE and self.result is None and self.error is not None:
            self.result = self.error.to_exception()
        return self

    @field_serializer("result", when_used="json")
    def _result_as_json(self, value: Any) -> Any:
        return None if isinstance(value, BaseException) else value

    def _comparable(self) -> dict[str, Any]:
        fields = dict(self.__dict__)
        result = fields.get("result")
        if isinstance(result, BaseException):
            fields["result"] = (type(result), str(result))
        return fields

    def __eq__(self, other: object) -> bool:
        """Field by field; a failed task's exception compares by type and message."""
        if not isinstance(other, TaskResult):
            return NotImplemented
        return type(self) is type(other) and self._comparable() == other._comparable()

    __hash__ = None  # type: ignore[assignment]

    def dict(self, **kwargs: Any) -> dict[str, Any]:
        """``model_dump(**kwargs)``, under the name Ray Serve's PDF template calls
        (``task_id.dict()``), without pydantic's deprecation warning."""
        return self.model_dump(**kwargs)

    def json(self, **kwargs: Any) -> str:
        """``model_dump_json(**kwargs)``, without pydantic's deprecation warning."""
        return self.model_dump_json(**kwargs)

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
    priority: int | None = Field(
        default=None, description="The task's priority (0-9), kept for a redrive; None: none."
    )


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
    """Whether an adapter can do its work right now.

    It also behaves as the list Ray Serve's Celery adapter returns (Celery's
    ``control.ping()``): ``len(report)``, iteration and indexing go over
    ``workers``, one ``{name: {"ok": "pong"}}`` per consumer of the queue alive
    now, wherever it runs. A report is always true (``bool``), even with no
    worker: test ``len(report)`` or ``report.healthy``.
    """

    healthy: bool
    broker_reachable: bool
    consumer_running: bool | None = Field(
        default=None, description="None when no consumer was started."
    )
    detail: str = ""
    workers: list[dict[str, dict[str, str]]] = Field(
        default_factory=list,
        description="One ping reply per consumer of the queue alive now: {name: {'ok': 'pong'}}.",
    )

    def __len__(self) -> int:
        return len(self.workers)

    def __iter__(self) -> Iterator[dict[str, dict[str, str]]]:  # type: ignore[override]
        return iter(self.workers)

    def __getitem__(self, index: int) -> dict[str, dict[str, str]]:
        return self.workers[index]

    def __bool__(self) -> bool:
        return True


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
    workers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "Each consumer of the queue alive now, by name, with its statistics in the "
            "layout of Celery's inspect().stats(): pool (max-concurrency, threads), "
            "total (handler runs by task name), broker (transport), pid, uptime."
        ),
    )

    # It also behaves as the mapping Ray Serve's Celery adapter returns (Celery's
    # ``inspect().stats()``): worker name -> statistics. Always true (``bool``).
    def __len__(self) -> int:
        return len(self.workers)

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self.workers)

    def __getitem__(self, name: str) -> dict[str, Any]:
        return self.workers[name]

    def __contains__(self, name: object) -> bool:
        return name in self.workers

    def __bool__(self) -> bool:
        return True

    def keys(self) -> KeysView[str]:
        """Names of the consumers alive now."""
        return self.workers.keys()

    def values(self) -> ValuesView[dict[str, Any]]:
        """Statistics of each consumer."""
        return self.workers.values()

    def items(self) -> ItemsView[str, dict[str, Any]]:
        """(name, statistics) of each consumer."""
        return self.workers.items()

    def get(self, name: str, default: Any = None) -> Any:
        """Statistics of consumer ``name``, or ``default``."""
        return self.workers.get(name, default)
