"""HTTP ingress for task queues (FastAPI; install ``taskserve[serve]``).

:func:`task_router` is an ``APIRouter`` to include in any FastAPI app or Serve
ingress; :func:`create_task_app` is a ready app around it. With
``dashboard=True`` either serves the operator dashboard too
(:mod:`taskserve.http.dashboard`).
"""

from taskserve.http.app import create_task_app, install_error_handlers
from taskserve.http.dashboard import DashboardConfig, FinishedCounts, QueueOverview, TaskPayload
from taskserve.http.models import (
    DeadLetterResponse,
    ErrorResponse,
    PurgeRequest,
    PurgeResponse,
    RedriveRequest,
    RedriveResponse,
    SubmitRequest,
    SubmitResponse,
    TaskResultResponse,
    TaskStatusResponse,
)
from taskserve.http.router import IDEMPOTENCY_HEADER, task_router
from taskserve.http.settings import HttpSettings

__all__ = [
    "IDEMPOTENCY_HEADER",
    "DashboardConfig",
    "DeadLetterResponse",
    "ErrorResponse",
    "FinishedCounts",
    "HttpSettings",
    "PurgeRequest",
    "PurgeResponse",
    "QueueOverview",
    "RedriveRequest",
    "RedriveResponse",
    "SubmitRequest",
    "SubmitResponse",
    "TaskPayload",
    "TaskResultResponse",
    "TaskStatusResponse",
    "create_task_app",
    "install_error_handlers",
    "task_router",
]
