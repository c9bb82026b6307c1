"""A ready FastAPI application around :func:`task_router`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from taskserve.adapter import TaskProcessorAdapter
from taskserve.config import TaskProcessorConfig
from taskserve.errors import TaskserveError
from taskserve.http.router import error_response, task_router


def _describe(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        message = str(item.get("msg", "invalid"))
        if item.get("type") == "json_invalid":
            message = f"malformed JSON: {item.get('ctx', {}).get('error', message)}"
        parts.append(f"{location}: {message}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Make request-validation errors one clear 422 message, and any taskserve
    error raised by the app's own routes a 4xx/5xx JSON error."""

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": _describe(exc), "errors": exc.errors()}, status_code=422)

    async def on_taskserve_error(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(TaskserveError, on_taskserve_error)


def create_task_app(
    target: TaskProcessorConfig | TaskProcessorAdapter | Mapping[str, Any],
    *,
    title: str = "taskserve",
    **router_options: Any,
) -> FastAPI:
    """A FastAPI app serving :func:`task_router` for ``target`` at its root,
    with clear validation errors; usable as ``@serve.ingress(create_task_app(config))``."""
    app = FastAPI(
        title=title,
        description="Submit tasks, poll their status, fetch results, cancel and retry.",
    )
    install_error_handlers(app)
    app.include_router(task_router(target, **router_options))
    return app
