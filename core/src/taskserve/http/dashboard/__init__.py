"""The operator dashboard served by the HTTP ingress (``task_router(config,
dashboard=True)``, ``create_task_app(config, dashboard=True)``).

A page at ``<router>/dashboard/`` - plain HTML, CSS and JavaScript shipped in
this package, no build step and nothing fetched from elsewhere - showing the
queue (depth, in-flight, consumers, tasks finished in the last minute, dead
letters), the recent tasks by status, each task's page (status, attempts,
progress, times, error, payload) and the dead letters, with redrive and purge.
It refreshes itself every second from the router's JSON routes, all by
relative URLs, so it works under any prefix.

The page reads what an HTTP client may read: the task listing, the dead
letters and the queue figures are admin routes, so with
``HttpSettings.admin_token`` set the operator pastes the token into the page
(kept in the tab's ``sessionStorage``, sent as ``Authorization: Bearer``).
Redrive and purge are offered only when the admin routes are protected (a
token or ``admin_dependencies``); otherwise the page is read-only.
"""

from taskserve.http.dashboard.models import (
    DashboardConfig,
    FinishedCounts,
    QueueOverview,
    TaskPayload,
)
from taskserve.http.dashboard.routes import add_dashboard_routes

__all__ = [
    "DashboardConfig",
    "FinishedCounts",
    "QueueOverview",
    "TaskPayload",
    "add_dashboard_routes",
]
