"""A FastAPI router exposing a queue over HTTP.

``task_router(config)`` returns an ``APIRouter`` with the task endpoints
(named after BentoML's task API):

======  =============================  ==============================================
POST    ``/submit``                    enqueue; 202 with the task id and status URL
GET     ``/status/{task_id}``          status, attempts, last error
GET     ``/get/{task_id}``             result of a finished task (409 while running)
POST    ``/cancel/{task_id}``          cancel
POST    ``/retry/{task_id}``           enqueue the task's payload again (PUT too)
GET     ``/dead-letters``              list dead letters (``?kind=failed&limit=``)
POST    ``/dead-letters/redrive``      enqueue dead letters again
GET     ``/health``                    broker health (503 when unreachable)
======  =============================  ==============================================

Bad input gets a 4xx whose JSON body has a ``detail`` message: 404 unknown
task id, 422 invalid body or arguments JSON cannot carry, 409 a state or
setting that does not allow the request, 501 a capability the adapter does
not declare (named in ``capability``), 503 broker unreachable.

It is usable in any FastAPI app and as a Serve ingress::

    app = FastAPI()
    app.include_router(task_router(config))

    @serve.deployment
    @serve.ingress(app)
    class API: ...

The adapter is created on the first request, so the router can be built at
import time and pickled by Serve.
"""

# No "from __future__ import annotations": FastAPI must see the endpoints' real
# annotations even after Serve has pickled the app by value.

import threading
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from taskserve.adapter import TaskProcessorAdapter
from taskserve.config import TaskProcessorConfig
from taskserve.errors import (
    AdapterNotFound,
    BrokerUnavailable,
    ConfigError,
    PayloadError,
    TaskNotFound,
    TaskserveError,
    UnsupportedCapability,
)
from taskserve.factory import instantiate_adapter_from_config
from taskserve.http.models import (
    DeadLetterResponse,
    ErrorResponse,
    RedriveRequest,
    SubmitRequest,
    SubmitResponse,
    TaskResultResponse,
    TaskStatusResponse,
)
from taskserve.models import CancelOutcome, DeadLetterKind, HealthReport, TaskResult
from taskserve.states import TaskState

_T = TypeVar("_T")

IDEMPOTENCY_HEADER = "Idempotency-Key"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        404: "No task with this id (never enqueued, or its result expired).",
        409: "The task's state or the server's settings do not allow this request.",
        422: "The request body is invalid, or its arguments cannot be carried as JSON.",
        501: "The adapter does not declare the capability this request needs.",
        503: "The broker cannot be reached.",
    }.items()
}


class AdapterSource:
    """Creates the adapter on first use; pickles without it."""

    def __init__(self, target: TaskProcessorConfig | TaskProcessorAdapter | Mapping[str, Any]):
        self._lock = threading.Lock()
        self._adapter: TaskProcessorAdapter | None = None
        self._config: TaskProcessorConfig | None = None
        if isinstance(target, TaskProcessorAdapter):
            self._adapter = target
            self._config = target.config
        elif isinstance(target, TaskProcessorConfig):
            self._config = target
        elif isinstance(target, Mapping):
            self._config = TaskProcessorConfig.from_dict(target)
        else:
            raise ConfigError(
                "task_router needs a TaskProcessorConfig, a mapping of its fields or an "
                f"adapter, got {type(target).__name__}"
            )

    def get(self) -> TaskProcessorAdapter:
        """The adapter, created and initialized on first call."""
        with self._lock:
            if self._adapter is None:
                assert self._config is not None
                self._adapter = instantiate_adapter_from_config(self._config)
            return self._adapter

    def __getstate__(self) -> dict[str, Any]:
        return {"_config": self._config, "_adapter": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def error_status(error: Exception) -> int:
    """The HTTP status code for a taskserve error."""
    if isinstance(error, TaskNotFound):
        return 404
    if isinstance(error, UnsupportedCapability):
        return 501
    if isinstance(error, PayloadError):
        return 422
    if isinstance(error, (BrokerUnavailable, AdapterNotFound)):
        return 503
    if isinstance(error, ConfigError):
        return 409
    return 400


def error_response(error: Exception, status: Any = None) -> JSONResponse:
    """A JSON error response for ``error``."""
    code = error_status(error)
    body = ErrorResponse(
        detail=str(error),
        capability=error.capability if isinstance(error, UnsupportedCapability) else None,
        status=status,
    )
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=code)


def _guard(call: Callable[[], _T]) -> _T | JSONResponse:
    try:
        return call()
    except TaskserveError as e:
        return error_response(e)
    except (ConnectionError, TimeoutError, OSError) as e:
        return error_response(BrokerUnavailable(f"broker call failed: {type(e).__name__}: {e}"))


def task_router(
    target: TaskProcessorConfig | TaskProcessorAdapter | Mapping[str, Any],
    *,
    prefix: str = "",
    task_names: Collection[str] | None = None,
    tags: list[str] | None = None,
    name: str = "taskserve",
    dead_letters: bool = True,
) -> APIRouter:
    """An ``APIRouter`` exposing the queue of ``target`` (config or adapter).

    ``task_names`` restricts which tasks ``/submit`` accepts (default: any);
    ``name`` prefixes the route names, so two routers can share one app;
    ``dead_letters=False`` leaves out the dead-letter endpoints.
    """
    source = AdapterSource(target)
    allowed = frozenset(task_names) if task_names is not None else None
    router = APIRouter(prefix=prefix, tags=list(tags or ["tasks"]), responses=ERROR_RESPONSES)
    status_route, result_route = f"{name}_status", f"{name}_get"

    def accepted(request: Request, task: TaskResult) -> SubmitResponse:
        return SubmitResponse(
            task_id=task.id,
            status=task.status,
            status_url=str(request.url_for(status_route, task_id=task.id)),
            result_url=str(request.url_for(result_route, task_id=task.id)),
            retried_from=task.retried_from,
        )

    @router.post(
        "/submit",
        status_code=202,
        response_model=SubmitResponse,
        name=f"{name}_submit",
        summary="Enqueue a task",
    )
    def submit(
        body: SubmitRequest,
        request: Request,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias=IDEMPOTENCY_HEADER,
                min_length=1,
                max_length=200,
                description="Repeat a submit safely: the same key returns the first task.",
            ),
        ] = None,
    ) -> Any:
        if allowed is not None and body.task_name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            return JSONResponse(
                {"detail": f"unknown task '{body.task_name}'; this endpoint accepts: {known}"},
                status_code=422,
            )
        return _guard(
            lambda: accepted(
                request,
                source.get().enqueue_task_sync(
                    body.task_name, body.args, body.kwargs, idempotency_key=idempotency_key
                ),
            )
        )

    @router.get(
        "/status/{task_id}",
        response_model=TaskStatusResponse,
        name=status_route,
        summary="A task's status",
    )
    def status(task_id: str) -> Any:
        return _guard(lambda: TaskStatusResponse.of(source.get().get_task_status_sync(task_id)))

    @router.get(
        "/get/{task_id}",
        response_model=TaskResultResponse,
        name=result_route,
        summary="A finished task's result",
    )
    def get(task_id: str) -> Any:
        def read() -> Any:
            task = source.get().get_task_status_sync(task_id)
            if not task.status.is_terminal:
                return JSONResponse(
                    ErrorResponse(
                        detail=f"task {task_id} is {task.status.value}; its result is not ready",
                        status=task.status,
                    ).model_dump(mode="json", exclude_none=True),
                    status_code=409,
                )
            return TaskResultResponse(
                id=task.id,
                status=task.status,
                # On FAILURE ``result`` holds the rebuilt exception; ``error`` says it all.
                result=task.result if task.status is TaskState.SUCCESS else None,
                error=task.error,
                attempts=task.attempts,
            )

        return _guard(read)

    @router.post(
        "/cancel/{task_id}",
        response_model=CancelOutcome,
        name=f"{name}_cancel",
        summary="Cancel a task",
    )
    def cancel(task_id: str) -> Any:
        return _guard(lambda: source.get().cancel_task_sync(task_id))

    def retry(task_id: str, request: Request) -> Any:
        return _guard(lambda: accepted(request, source.get().retry_task_sync(task_id)))

    for method in ("POST", "PUT"):  # BentoML's clients use PUT
        router.add_api_route(
            "/retry/{task_id}",
            retry,
            methods=[method],
            status_code=202,
            response_model=SubmitResponse,
            name=f"{name}_retry" if method == "POST" else f"{name}_retry_put",
            summary="Run a task's payload again under a new id",
        )

    if dead_letters:

        @router.get(
            "/dead-letters",
            response_model=list[DeadLetterResponse],
            name=f"{name}_dead_letters",
            summary="List dead letters",
        )
        def list_dead_letters(
            kind: DeadLetterKind = DeadLetterKind.FAILED,
            limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        ) -> Any:
            return _guard(
                lambda: [
                    DeadLetterResponse.of(record)
                    for record in source.get().list_dead_letters_sync(kind, limit)
                ]
            )

        @router.post(
            "/dead-letters/redrive",
            status_code=202,
            response_model=list[SubmitResponse],
            name=f"{name}_redrive",
            summary="Enqueue dead letters again",
        )
        def redrive(body: RedriveRequest, request: Request) -> Any:
            return _guard(
                lambda: [
                    accepted(request, task)
                    for task in source.get().redrive_dead_letters_sync(body.ids, body.kind)
                ]
            )

    @router.get(
        "/health",
        response_model=HealthReport,
        name=f"{name}_health",
        summary="Whether the broker answers",
        responses={503: {"model": HealthReport}},
    )
    def health() -> Any:
        def check() -> Any:
            report = source.get().health_check_sync()
            if report.healthy:
                return report
            return JSONResponse(report.model_dump(mode="json"), status_code=503)

        return _guard(check)

    return router
