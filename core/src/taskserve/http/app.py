"""A ready FastAPI application around :func:`task_router`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError

from taskserve.adapter import TaskProcessorAdapter
from taskserve.config import TaskProcessorConfig
from taskserve.errors import ConfigError, TaskserveError
from taskserve.http.edge import problem, validation_response
from taskserve.http.router import error_response, task_router


def install_error_handlers(app: FastAPI) -> None:
    """Make the app's own errors clear JSON answers too: request-validation
    errors one 422 message (inputs not echoed), taskserve errors their 4xx/5xx."""

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_response(exc)

    async def on_taskserve_error(_: Request, exc: Exception) -> Response:
        return error_response(exc)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(TaskserveError, on_taskserve_error)


def create_task_app(
    target: TaskProcessorConfig | TaskProcessorAdapter | Mapping[str, Any],
    *,
    title: str = "taskserve",
    dependencies: Sequence[Any] = (),
    **router_options: Any,
) -> FastAPI:
    """A FastAPI app serving :func:`task_router` for ``target`` at its root,
    with clear validation errors; usable as ``@serve.ingress(create_task_app(config))``.

    ``dependencies`` (FastAPI ``Depends(...)``) run on every route, the
    OpenAPI schema included; ``router_options`` go to :func:`task_router`
    (``settings=HttpSettings(admin_token=...)``, ``admin_dependencies=[...]``,
    ``dashboard=True``...).
    """
    if isinstance(dependencies, (str, bytes)) or not isinstance(dependencies, Sequence):
        raise ConfigError(
            f"dependencies must be a list of FastAPI Depends(...), got {type(dependencies).__name__}"
        )
    app = FastAPI(
        title=title,
        description="Submit tasks, poll their status, fetch results, cancel and retry.",
        dependencies=list(dependencies),
    )
    install_error_handlers(app)
    app.include_router(task_router(target, **router_options))
    return app


__all__ = ["create_task_app", "install_error_handlers", "problem"]
