"""The dashboard's routes, added to a task router by ``task_router(...,
dashboard=True)``:

======  ======================================  ==========================================
GET     ``/dashboard``                          redirect to ``dashboard/``
GET     ``/dashboard/``                         the page (and its ``dashboard.js``, ``.css``)
GET     ``/dashboard/api/config``               what the page may offer (no data)
GET     ``/dashboard/api/queue``                depth, in-flight, consumers, finish rate,
                                                dead-letter counts; admin
GET     ``/dashboard/api/payload/{task_id}``    a task as first enqueued; admin
======  ======================================  ==========================================

Everything else the page shows comes from the task routes themselves
(``/tasks``, ``/status/{id}``, ``/dead-letters``, their redrive and purge), so
it sees what an HTTP client sees: the same admin protection and the same
redaction of errors.
"""

# No "from __future__ import annotations": FastAPI must see the endpoints' real
# annotations even after Serve has pickled the app by value.

import functools
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import RedirectResponse, Response

from taskserve.adapter import MAX_TASK_LIST_LIMIT, TaskProcessorAdapter
from taskserve.config import TaskProcessorConfig
from taskserve.errors import UnsupportedCapability
from taskserve.http.dashboard.models import (
    DashboardConfig,
    FinishedCounts,
    QueueOverview,
    TaskPayload,
)
from taskserve.http.edge import SafeJSONResponse
from taskserve.http.settings import ID_PATTERN, HttpSettings
from taskserve.models import AdapterMetrics, DeadLetterKind
from taskserve.states import TERMINAL_STATES, TaskState

RATE_WINDOW_S = 60.0
"""The finish rate counts the tasks that ended within this many seconds."""

_ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}

PAGE_HEADERS = {
    # The page loads its own script and style only, and talks to its own origin.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def asset(name: str) -> bytes:
    """A file of the page, as shipped in the package."""
    return resources.files("taskserve.http.dashboard").joinpath("static", name).read_bytes()


def queue_overview(adapter: TaskProcessorAdapter, now: float) -> QueueOverview:
    """The queue's figures from its metrics and its task listing; a capability
    the adapter lacks leaves its figures null and is named in ``unavailable``."""
    config = adapter.config
    unavailable: dict[str, str] = {}
    metrics: AdapterMetrics | None = None
    try:
        metrics = adapter.get_metrics_sync()
    except UnsupportedCapability as e:
        unavailable[e.capability] = str(e)
    finished: FinishedCounts | None = None
    try:
        ended = adapter.list_tasks_sync(TERMINAL_STATES, MAX_TASK_LIST_LIMIT)
    except UnsupportedCapability as e:
        unavailable[e.capability] = str(e)
    else:
        recent = [t.status for t in ended if (t.updated_at or 0.0) >= now - RATE_WINDOW_S]
        finished = FinishedCounts(
            window_s=RATE_WINDOW_S,
            succeeded=recent.count(TaskState.SUCCESS),
            failed=recent.count(TaskState.FAILURE),
            cancelled=recent.count(TaskState.CANCELLED),
            at_least=len(ended) >= MAX_TASK_LIST_LIMIT,
        )
    return QueueOverview(
        queue_name=config.queue_name,
        queue_depth=metrics.queue_depth if metrics else None,
        in_flight=metrics.in_flight if metrics else None,
        consumers=len(metrics.workers) if metrics else None,
        dead_letters_failed=metrics.dead_letters_failed if metrics else None,
        dead_letters_unprocessable=metrics.dead_letters_unprocessable if metrics else None,
        failed_queue_name=config.failed_task_queue_name,
        unprocessable_queue_name=config.unprocessable_task_queue_name,
        finished=finished,
        unavailable=unavailable,
    )


def add_dashboard_routes(
    router: APIRouter,
    *,
    adapter: Callable[[], TaskProcessorAdapter],
    config: TaskProcessorConfig,
    settings: HttpSettings,
    admin: Sequence[Any],
    admin_responses: dict[int | str, dict[str, Any]],
    guard: Callable[[Callable[[], Response]], Any],
    name: str,
    dead_letters: bool,
    task_listing: bool,
) -> None:
    """Add the dashboard page and its JSON endpoints to ``router``.

    ``adapter`` returns the router's adapter, ``admin`` are the dependencies
    of the admin routes (the page offers redrive and purge only when there
    are some), ``guard`` turns taskserve and broker errors into their answers.
    """
    kinds = [
        kind
        for kind, queue in (
            (DeadLetterKind.FAILED, config.failed_task_queue_name),
            (DeadLetterKind.UNPROCESSABLE, config.unprocessable_task_queue_name),
        )
        if dead_letters and queue is not None
    ]
    page_config = DashboardConfig(
        actions=bool(admin),
        token_required=settings.admin_token is not None,
        task_listing=task_listing,
        dead_letter_kinds=kinds,
        expose_tracebacks=settings.expose_tracebacks,
    )
    TaskId = Annotated[
        str,
        Path(
            min_length=1,
            max_length=settings.max_id_length,
            pattern=ID_PATTERN,
            description="A task id (letters, digits, '_', '.', ':', '-').",
        ),
    ]

    @router.get("/dashboard", include_in_schema=False, name=f"{name}_dashboard_redirect")
    def dashboard_redirect() -> Any:
        # Relative, so that it works under any prefix and any proxy's root path.
        return RedirectResponse("dashboard/", status_code=307)

    @router.get("/dashboard/", include_in_schema=False, name=f"{name}_dashboard")
    def dashboard_page() -> Any:
        return Response(asset("index.html"), media_type="text/html", headers=PAGE_HEADERS)

    def serve_asset(file: str) -> Callable[[], Response]:
        def read() -> Response:
            return Response(asset(file), media_type=_ASSETS[file], headers=PAGE_HEADERS)

        return read

    for file in _ASSETS:
        router.add_api_route(
            f"/dashboard/{file}",
            serve_asset(file),
            methods=["GET"],
            include_in_schema=False,
            name=f"{name}_dashboard_{file.replace('.', '_')}",
        )

    @router.get(
        "/dashboard/api/config",
        response_model=DashboardConfig,
        name=f"{name}_dashboard_config",
        summary="What the dashboard may offer",
        tags=["dashboard"],
    )
    def dashboard_config() -> Any:
        return SafeJSONResponse(page_config.model_dump(mode="json"))

    @router.get(
        "/dashboard/api/queue",
        response_model=QueueOverview,
        name=f"{name}_dashboard_queue",
        summary="The queue at a glance",
        description=(
            "Depth, in-flight count, consumers alive and dead-letter counts (the "
            "adapter's metrics), and the tasks that ended in the last minute (from the "
            "task listing). A figure the adapter cannot give is null, its capability "
            "named in unavailable."
        ),
        tags=["dashboard"],
        dependencies=list(admin),
        responses=admin_responses,
    )
    def dashboard_queue() -> Any:
        return guard(
            lambda: SafeJSONResponse(queue_overview(adapter(), time.time()).model_dump(mode="json"))
        )

    @router.get(
        "/dashboard/api/payload/{task_id}",
        response_model=TaskPayload,
        name=f"{name}_dashboard_payload",
        summary="A task as first enqueued",
        description=(
            "The task's name, arguments, priority and times, as enqueued, while its "
            "record lives. An admin route, like the dead-letter list, which shows "
            "arguments too."
        ),
        tags=["dashboard"],
        dependencies=list(admin),
        responses=admin_responses,
    )
    def dashboard_payload(task_id: TaskId) -> Any:
        def read() -> Response:
            message = adapter().get_task_payload_sync(task_id)
            return SafeJSONResponse(
                {
                    "id": message.id,
                    "name": message.name,
                    # As stored, never through pydantic (deep values, raw JSON).
                    "args": message.args,
                    "kwargs": message.kwargs,
                    "queue_name": message.queue_name,
                    "priority": message.priority,
                    "enqueued_at": message.enqueued_at,
                    "retried_from": message.retried_from,
                    "not_before": message.not_before,
                    "expires_at": message.expires_at,
                }
            )

        return guard(read)
