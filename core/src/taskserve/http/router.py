"""A FastAPI router exposing a queue over HTTP.

``task_router(config)`` returns an ``APIRouter`` with the task endpoints
(named after BentoML's task API):

======  =============================  ==============================================
POST    ``/submit``                    enqueue; 202 with the task id and status URL
GET     ``/status/{task_id}``          status, attempts, last error, progress
GET     ``/get/{task_id}``             result of a finished task (409 while running)
POST    ``/cancel/{task_id}``          cancel
POST    ``/retry/{task_id}``           enqueue the task's payload again (PUT too)
GET     ``/tasks``                     the queue's recent tasks, newest first
                                       (``?status=&limit=&before=``); admin
GET     ``/dead-letters``              list dead letters (``?kind=failed&limit=``); admin
POST    ``/dead-letters/redrive``      enqueue dead letters again; admin
POST    ``/dead-letters/purge``        delete dead letters; admin
GET     ``/health``                    broker health (503 when unreachable)
GET     ``/dashboard/``                the operator dashboard (``dashboard=True``;
                                       see :mod:`taskserve.http.dashboard`)
======  =============================  ==============================================

Every request gets a documented answer, never a 500 or a dropped
connection: 2xx, or a JSON body whose ``detail`` names what is wrong - 400
an unreadable body, 401 an admin route without its token, 404 unknown task
id, 408 a body that stopped arriving, 409 a state or setting that does not
allow the request (an id already in use...), 413 a body over the limit, 415
a body that is not JSON, 422 an invalid body, path or query (too deep, a
task name with control characters, arguments JSON cannot carry, an
idempotency key reused with another payload), 501 a capability the adapter
does not declare (named in ``capability``), 503 the broker is unreachable,
paused, read-only or refuses the credentials. The limits are
:class:`~taskserve.http.HttpSettings`; they appear in the OpenAPI schema.

Idempotency keys (``Idempotency-Key`` header on ``/submit``): the key names
its first task for as long as that task's record lives (until the result TTL
after the task ends). Sent again with the same task name, args and kwargs, it
returns the first task (202, nothing new enqueued); with a different payload,
422. Once the first task's record expired, the key is free and enqueues anew.
Concurrent submits with one key create one task. A submit whose publish
failed (503) leaves no key behind: retry it with the same key.

``GET /tasks`` lists task records (ids, names, statuses, errors; not results)
of every client of the queue, so it is an admin route; ``task_listing=False``
leaves it out.

Admin routes (the task listing and the dead-letter ones) require
``Authorization: Bearer <token>``
when ``HttpSettings.admin_token`` is set, and run ``admin_dependencies``
(any FastAPI dependencies: your own auth) either way; both appear in the
OpenAPI schema.

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

import hmac
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Path, Query, Request
from fastapi.params import Depends as DependsParam
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field, ValidationError, create_model

from taskserve.adapter import DEFAULT_TASK_LIST_LIMIT, MAX_TASK_LIST_LIMIT, TaskProcessorAdapter
from taskserve.config import TaskProcessorConfig
from taskserve.errors import (
    AdapterNotFound,
    BrokerUnavailable,
    ConfigError,
    InvalidArgument,
    PayloadError,
    TaskIdInUse,
    TaskNotFound,
    TaskserveError,
    UnsupportedCapability,
)
from taskserve.factory import instantiate_adapter_from_config
from taskserve.http.dashboard import add_dashboard_routes
from taskserve.http.edge import (
    SafeJSONResponse,
    guarded_route,
    present_error,
    problem,
    redacted,
)
from taskserve.http.models import (
    DeadLetterResponse,
    ErrorResponse,
    PurgeIds,
    PurgeRequest,
    PurgeResponse,
    RedriveRequest,
    RedriveResponse,
    SubmitRequest,
    SubmitResponse,
    TaskResultResponse,
    TaskStatusResponse,
)
from taskserve.http.settings import ID_PATTERN, TASK_NAME_PATTERN, HttpSettings
from taskserve.models import CancelOutcome, DeadLetterKind, HealthReport, TaskResult
from taskserve.states import TaskState

_T = TypeVar("_T")

IDEMPOTENCY_HEADER = "Idempotency-Key"

_STATUS_TEXT = {
    400: "The body cannot be read (a bad Content-Length, or not UTF-8 JSON).",
    404: "No task with this id (never enqueued, or its result expired).",
    408: "The body did not arrive within body_timeout_s.",
    409: "The task's state or the server's settings do not allow this request.",
    413: "The body is over max_body_bytes.",
    415: "The body is not JSON (Content-Type application/json, UTF-8).",
    422: "The body, a path or query parameter is invalid, or the arguments cannot be "
    "carried as JSON.",
    501: "The adapter does not declare the capability this request needs.",
    503: "The broker cannot be reached or used (down, paused, read-only, refusing "
    "credentials, locked).",
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse, "description": _STATUS_TEXT[code]} for code in codes}


_COMMON = (404, 409, 422, 501, 503)
_BODY = (400, 408, 413, 415)


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

    @property
    def config(self) -> TaskProcessorConfig:
        """The queue's configuration."""
        assert self._config is not None
        return self._config

    def get(self) -> TaskProcessorAdapter:
        """The adapter, created and initialized on first call."""
        with self._lock:
            if self._adapter is None:
                self._adapter = instantiate_adapter_from_config(self.config)
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
    if isinstance(error, (PayloadError, InvalidArgument)):
        return 422
    if isinstance(error, (BrokerUnavailable, AdapterNotFound)):
        return 503
    if isinstance(error, (ConfigError, TaskIdInUse)):
        return 409
    return 400


def error_response(error: Exception, status: Any = None, *, expose: bool = False) -> Response:
    """A JSON error response for ``error`` (passwords hidden; server paths
    shortened unless ``expose``)."""
    code = error_status(error)
    body = ErrorResponse(
        detail=redacted(str(error), expose),
        capability=error.capability if isinstance(error, UnsupportedCapability) else None,
        status=status,
    )
    return SafeJSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=code)


def _settings(settings: HttpSettings | Mapping[str, Any] | None) -> HttpSettings:
    if settings is None:
        return HttpSettings()
    if isinstance(settings, HttpSettings):
        return settings
    if not isinstance(settings, Mapping):
        raise ConfigError(
            f"settings must be an HttpSettings or a mapping of its fields, got "
            f"{type(settings).__name__}"
        )
    try:
        return HttpSettings.model_validate(dict(settings))
    except ValidationError as e:
        from taskserve.config import describe_validation_error

        raise ConfigError(
            "Invalid HttpSettings: "
            + describe_validation_error(e, known_fields=HttpSettings.model_fields)
        ) from None


def admin_guard(token: str | None) -> list[Any]:
    """The dependencies that make a route need ``Authorization: Bearer <token>``
    (none without a token); the scheme appears in the OpenAPI schema."""
    if token is None:
        return []
    expected = token.encode()
    bearer = HTTPBearer(
        auto_error=False,
        scheme_name="taskserveAdmin",
        description="The admin token (HttpSettings.admin_token) of the admin routes.",
    )

    def require_admin(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                status_code=401,
                detail="this admin route needs 'Authorization: Bearer <admin token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return [Depends(require_admin)]


def task_router(
    target: TaskProcessorConfig | TaskProcessorAdapter | Mapping[str, Any],
    *,
    prefix: str = "",
    task_names: Collection[str] | None = None,
    tags: list[str] | None = None,
    name: str = "taskserve",
    dead_letters: bool = True,
    task_listing: bool = True,
    dashboard: bool = False,
    settings: HttpSettings | Mapping[str, Any] | None = None,
    admin_dependencies: Sequence[Any] = (),
    dependencies: Sequence[Any] = (),
) -> APIRouter:
    """An ``APIRouter`` exposing the queue of ``target`` (config or adapter).

    ``task_names`` restricts which tasks ``/submit`` accepts (default: any);
    ``name`` prefixes the route names, so two routers can share one app;
    ``dead_letters=False`` leaves out the dead-letter endpoints and
    ``task_listing=False`` the task listing (``GET /tasks``); ``dashboard=True``
    adds the operator dashboard at ``dashboard/`` (:mod:`taskserve.http.dashboard`;
    read-only unless the admin routes are protected). ``settings``
    (:class:`HttpSettings`) holds the limits, what errors show and the admin
    token; ``admin_dependencies`` are FastAPI dependencies (``Depends(...)``)
    every admin route runs, ``dependencies`` those every route runs.
    """
    source = AdapterSource(target)
    http = _settings(settings)
    expose = http.expose_tracebacks
    allowed = frozenset(task_names) if task_names is not None else None
    for extra in (*admin_dependencies, *dependencies):
        if not isinstance(extra, DependsParam):
            raise ConfigError(
                f"dependencies must be FastAPI Depends(...) objects, got {type(extra).__name__}"
            )
    token = http.admin_token.get_secret_value() if http.admin_token is not None else None
    admin = [*admin_guard(token), *admin_dependencies]
    admin_responses: dict[int | str, dict[str, Any]] = (
        {401: {"model": ErrorResponse, "description": "The admin token is missing or wrong."}}
        if admin
        else {}
    )

    def render(error: TaskserveError) -> Response:
        return error_response(error, expose=expose)

    router = APIRouter(
        prefix=prefix,
        tags=list(tags or ["tasks"]),
        responses=_responses(*_COMMON),
        dependencies=list(dependencies),
        route_class=guarded_route(http, http.body_limit(source.config.max_payload_bytes), render),
    )
    status_route, result_route = f"{name}_status", f"{name}_get"
    TaskId = Annotated[
        str,
        Path(
            min_length=1,
            max_length=http.max_id_length,
            pattern=ID_PATTERN,
            description="A task id (letters, digits, '_', '.', ':', '-').",
        ),
    ]
    Submit: Any = create_model(
        "SubmitRequest",
        __base__=SubmitRequest,
        task_name=(
            str,
            Field(
                min_length=1,
                max_length=http.max_task_name_length,
                pattern=TASK_NAME_PATTERN,
                description="Name of the task handler to run (printable text).",
            ),
        ),
    )

    def guard(call: Callable[[], _T]) -> _T | Response:
        try:
            return call()
        except TaskserveError as e:
            return error_response(e, expose=expose)
        except (ConnectionError, TimeoutError, OSError) as e:
            return error_response(
                BrokerUnavailable(f"broker call failed: {type(e).__name__}: {e}"), expose=expose
            )

    def ok(model: Any, status_code: int = 200) -> Response:
        return SafeJSONResponse(model.model_dump(mode="json"), status_code=status_code)

    def accepted(request: Request, task: TaskResult) -> SubmitResponse:
        return SubmitResponse(
            task_id=task.id,
            status=task.status,
            status_url=str(request.url_for(status_route, task_id=task.id)),
            result_url=str(request.url_for(result_route, task_id=task.id)),
            retried_from=task.retried_from,
            due_at=task.due_at,
        )

    @router.post(
        "/submit",
        status_code=202,
        response_model=SubmitResponse,
        name=f"{name}_submit",
        summary="Enqueue a task",
        responses=_responses(*_BODY),
    )
    def submit(
        body: Submit,
        request: Request,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias=IDEMPOTENCY_HEADER,
                min_length=1,
                max_length=200,
                pattern=r"^[\x21-\x7e]+$",
                description=(
                    "Repeat a submit safely: the same key and payload return the first "
                    "task while its record lives; the same key with another payload is "
                    "refused (422)."
                ),
            ),
        ] = None,
    ) -> Any:
        if allowed is not None and body.task_name not in allowed:
            return problem(422, f"unknown task '{body.task_name}': this endpoint does not run it")

        def enqueue() -> Response:
            task = source.get().enqueue_task_sync(
                body.task_name,
                body.args,
                body.kwargs,
                idempotency_key=idempotency_key,
                delay_s=body.delay_s,
                eta=body.eta,
                priority=body.priority,
                webhook_url=body.webhook_url,
                webhook_events=body.webhook_events,
            )
            return ok(accepted(request, task), 202)

        return guard(enqueue)

    @router.get(
        "/status/{task_id}",
        response_model=TaskStatusResponse,
        name=status_route,
        summary="A task's status",
    )
    def status(task_id: TaskId) -> Any:
        def read() -> Response:
            task = source.get().get_task_status_sync(task_id)
            shown = TaskStatusResponse.of(task.model_copy(update={"result": None}))
            return ok(shown.model_copy(update={"error": present_error(shown.error, expose)}))

        return guard(read)

    @router.get(
        "/get/{task_id}",
        response_model=TaskResultResponse,
        name=result_route,
        summary="A finished task's result",
    )
    def get(task_id: TaskId) -> Any:
        def read() -> Response:
            task = source.get().get_task_status_sync(task_id)
            if not task.status.is_terminal:
                return SafeJSONResponse(
                    ErrorResponse(
                        detail=f"task {task_id} is {task.status.value}; its result is not ready",
                        status=task.status,
                    ).model_dump(mode="json", exclude_none=True),
                    status_code=409,
                )
            error = present_error(task.error, expose)
            return SafeJSONResponse(
                {
                    "id": task.id,
                    "status": task.status.value,
                    # As stored, never through pydantic; on FAILURE ``result`` holds the
                    # rebuilt exception and ``error`` says it all.
                    "result": task.result if task.status is TaskState.SUCCESS else None,
                    "error": error.model_dump(mode="json") if error else None,
                    "attempts": task.attempts,
                }
            )

        return guard(read)

    @router.post(
        "/cancel/{task_id}",
        response_model=CancelOutcome,
        name=f"{name}_cancel",
        summary="Cancel a task",
    )
    def cancel(task_id: TaskId) -> Any:
        return guard(lambda: ok(source.get().cancel_task_sync(task_id)))

    def retry(task_id: TaskId, request: Request) -> Any:
        return guard(lambda: ok(accepted(request, source.get().retry_task_sync(task_id)), 202))

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
    for route in router.routes[-2:]:
        route.allow_methods = frozenset({"POST", "PUT"})  # type: ignore[attr-defined]

    if task_listing:

        @router.get(
            "/tasks",
            response_model=list[TaskStatusResponse],
            name=f"{name}_tasks",
            summary="List the queue's recent tasks",
            description=(
                "The queue's live task records, newest first (by created_at, then id), "
                "without their results. Page with before: the created_at of a page's last "
                "task lists the tasks created strictly before it."
            ),
            dependencies=admin,
            responses=admin_responses,
        )
        def list_tasks(
            status: Annotated[
                list[TaskState] | None,
                Query(
                    max_length=len(TaskState),
                    description="Only tasks in these states (repeat the parameter for more).",
                ),
            ] = None,
            limit: Annotated[
                int,
                Query(
                    ge=1,
                    le=min(http.max_list_limit, MAX_TASK_LIST_LIMIT),
                    description="Most tasks to list.",
                ),
            ] = DEFAULT_TASK_LIST_LIMIT,
            before: Annotated[
                float | None,
                Query(
                    allow_inf_nan=False,
                    description="Only tasks created strictly before this unix time.",
                ),
            ] = None,
        ) -> Any:
            def read() -> Response:
                tasks = source.get().list_tasks_sync(status, limit, before)
                return SafeJSONResponse(
                    [
                        TaskStatusResponse.of(task.model_copy(update={"result": None}))
                        .model_copy(update={"error": present_error(task.error, expose)})
                        .model_dump(mode="json")
                        for task in tasks
                    ]
                )

            return guard(read)

    if dead_letters:

        @router.get(
            "/dead-letters",
            response_model=list[DeadLetterResponse],
            name=f"{name}_dead_letters",
            summary="List dead letters",
            dependencies=admin,
            responses=admin_responses,
        )
        def list_dead_letters(
            kind: DeadLetterKind = DeadLetterKind.FAILED,
            limit: Annotated[int, Query(ge=1, le=http.max_list_limit)] = 100,
        ) -> Any:
            def read() -> Response:
                records = source.get().list_dead_letters_sync(kind, limit)
                return SafeJSONResponse(
                    [
                        DeadLetterResponse.jsonable(r, present_error(r.error, expose) or r.error)
                        for r in records
                    ]
                )

            return guard(read)

        @router.post(
            "/dead-letters/redrive",
            status_code=202,
            response_model=RedriveResponse,
            name=f"{name}_redrive",
            summary="Enqueue dead letters again",
            description=(
                "All or nothing per record: a record leaves its queue only once its new "
                "task is recorded. Every requested record is listed, redriven (with its "
                "new task id) or not (with the reason). 202 when at least one was "
                "enqueued, 200 when none was."
            ),
            dependencies=admin,
            responses={200: {"model": RedriveResponse}, **admin_responses, **_responses(*_BODY)},
        )
        def redrive(
            request: Request,
            body: Annotated[RedriveRequest, Body(default_factory=RedriveRequest)],
        ) -> Any:
            if body.ids is not None and len(body.ids) > http.max_ids:
                return problem(422, f"ids: at most {http.max_ids} ids per call")

            def run() -> Response:
                outcome = source.get().redrive_dead_letters_sync(body.ids, body.kind)
                kept = set(outcome.kept)
                redriven = [
                    {
                        **accepted(request, task).model_dump(mode="json"),
                        "dead_letter_id": record,
                        "record_removed": record not in kept,
                    }
                    for record, task in zip(outcome.dead_letter_ids, outcome, strict=True)
                ]
                content = {
                    "redriven": redriven,
                    "not_redriven": [
                        {"id": n.id, "reason": redacted(n.reason, expose)}
                        for n in outcome.not_redriven
                    ],
                }
                return SafeJSONResponse(content, status_code=202 if redriven else 200)

            return guard(run)

        @router.post(
            "/dead-letters/purge",
            response_model=PurgeResponse,
            name=f"{name}_purge",
            summary="Delete dead letters",
            dependencies=admin,
            responses={**admin_responses, **_responses(*_BODY)},
        )
        def purge(body: PurgeRequest) -> Any:
            ids = body.ids if isinstance(body, PurgeIds) else None
            if ids is not None and len(ids) > http.max_ids:
                return problem(422, f"ids: at most {http.max_ids} ids per call")
            return guard(
                lambda: ok(
                    PurgeResponse(purged=source.get().purge_dead_letters_sync(body.kind, ids))
                )
            )

    @router.get(
        "/health",
        response_model=HealthReport,
        name=f"{name}_health",
        summary="Whether the broker answers",
        responses={503: {"model": HealthReport, "description": _STATUS_TEXT[503]}},
    )
    def health() -> Any:
        def check() -> Response:
            report = source.get().health_check_sync()
            shown = report.model_copy(update={"detail": redacted(report.detail, expose)})
            return ok(shown, 200 if report.healthy else 503)

        return guard(check)

    if dashboard:
        add_dashboard_routes(
            router,
            adapter=source.get,
            config=source.config,
            settings=http,
            admin=admin,
            admin_responses=admin_responses,
            guard=guard,
            name=name,
            dead_letters=dead_letters,
            task_listing=task_listing,
        )
    return router
