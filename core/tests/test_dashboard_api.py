"""The dashboard's routes through FastAPI's TestClient (sqlite adapter): off by
default; the page and its files served with a strict Content-Security-Policy
and relative URLs only, under any prefix; what the page may offer; the queue
figures (from the metrics and the task listing); a task's payload; admin
protection and the OpenAPI schema; hostile ids answered 422, never 500."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from taskserve import (
    Capability,
    NonRetryableError,
    TaskProcessorAdapter,
    TaskProcessorConfig,
    TaskState,
    instantiate_adapter_from_config,
)
from taskserve.adapters.sqlite import SqliteAdapter
from taskserve.http import HttpSettings, create_task_app, task_router
from taskserve_conformance.waiting import wait_for_status

TOKEN = "dashboard-unit-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def config(tmp_path: Path) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name="dash-unit",
        adapter_config={"path": str(tmp_path / "tasks.db"), "poll_interval_s": 0.01},
        max_retries=0,
        failed_task_queue_name="dash-unit.failed",
        unprocessable_task_queue_name="dash-unit.unprocessable",
    )


@pytest.fixture
def http(config: TaskProcessorConfig) -> Iterator[TestClient]:
    app = create_task_app(config, dashboard=True, settings=HttpSettings(admin_token=TOKEN))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_the_dashboard_is_off_by_default(config: TaskProcessorConfig) -> None:
    app = create_task_app(config)
    with TestClient(app) as client:
        assert client.get("/dashboard/").status_code == 404
        assert client.get("/dashboard/api/config").status_code == 404
    assert not [path for path in app.openapi()["paths"] if "dashboard" in path]


def test_the_page_and_its_files_are_served_with_a_strict_policy(http: TestClient) -> None:
    page = http.get("/dashboard/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    for file, media in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        response = http.get(f"/dashboard/{file}")
        assert response.status_code == 200, file
        assert response.headers["content-type"].startswith(media)
        assert response.headers["content-security-policy"] == policy


def test_the_page_uses_relative_urls_only(http: TestClient) -> None:
    html = http.get("/dashboard/").text
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert links and all(not link.startswith(("/", "http")) for link in links), links
    script = http.get("/dashboard/dashboard.js").text
    assert not re.findall(r"""["'`](?:/|https?:)""", script), "absolute URL in the script"
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script


def test_it_works_under_a_prefix_and_a_root_path(config: TaskProcessorConfig) -> None:
    app = FastAPI()
    app.include_router(task_router(config, dashboard=True), prefix="/ops")
    with TestClient(app, root_path="/svc") as client:
        redirect = client.get("/ops/dashboard", follow_redirects=False)
        assert redirect.status_code == 307 and redirect.headers["location"] == "dashboard/"
        assert client.get("/ops/dashboard/").status_code == 200
        assert client.get("/ops/dashboard/dashboard.js").status_code == 200
        assert client.get("/ops/dashboard/api/config").json()["actions"] is False
        assert client.get("/ops/tasks").status_code == 200


def test_the_page_offers_actions_only_behind_admin_protection(
    config: TaskProcessorConfig,
) -> None:
    def check() -> None:
        return None

    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({}, {"actions": False, "token_required": False}),
        ({"settings": {"admin_token": TOKEN}}, {"actions": True, "token_required": True}),
        ({"admin_dependencies": [Depends(check)]}, {"actions": True, "token_required": False}),
    ]
    for options, expected in cases:
        with TestClient(create_task_app(config, dashboard=True, **options)) as client:
            shown = client.get("/dashboard/api/config").json()
        assert {k: shown[k] for k in expected} == expected, options
        assert shown["dead_letter_kinds"] == ["failed", "unprocessable"]
    app = create_task_app(config, dashboard=True, dead_letters=False, task_listing=False)
    with TestClient(app) as client:
        shown = client.get("/dashboard/api/config").json()
    assert shown["dead_letter_kinds"] == [] and shown["task_listing"] is False


def succeed(n: int) -> int:
    return n


def fail(n: int) -> None:
    raise NonRetryableError(f"bad input {n}")


@pytest.fixture
def consumer(config: TaskProcessorConfig) -> Iterator[TaskProcessorAdapter]:
    adapter = instantiate_adapter_from_config(config)
    adapter.register_task_handle(succeed)
    adapter.register_task_handle(fail)
    adapter.start_consumer()
    yield adapter
    adapter.shutdown()


def test_the_queue_figures_count_depth_dead_letters_and_the_last_minute(
    http: TestClient, consumer: TaskProcessorAdapter, config: TaskProcessorConfig
) -> None:
    done = [consumer.enqueue_task_sync("succeed", [n]) for n in range(3)]
    failed = consumer.enqueue_task_sync("fail", [1])
    for task in done:
        wait_for_status(consumer, task.id, TaskState.SUCCESS, 10)
    wait_for_status(consumer, failed.id, TaskState.FAILURE, 10)
    waiting = consumer.enqueue_task_sync("succeed", [9], delay_s=600)
    cancelled = consumer.enqueue_task_sync("succeed", [8], delay_s=600)
    consumer.cancel_task_sync(cancelled.id)
    with sqlite3.connect(config.adapter_config.path) as db:  # ended two minutes ago
        db.execute("UPDATE tasks SET updated_at = ? WHERE id = ?", (time.time() - 120, done[0].id))

    assert http.get("/dashboard/api/queue").status_code == 401
    shown = http.get("/dashboard/api/queue", headers=ADMIN).json()
    assert shown["queue_name"] == "dash-unit"
    assert (shown["queue_depth"], shown["in_flight"], shown["consumers"]) == (1, 0, 1)
    assert (shown["dead_letters_failed"], shown["dead_letters_unprocessable"]) == (1, 0)
    assert shown["failed_queue_name"] == "dash-unit.failed"
    assert shown["finished"] == {
        "window_s": 60.0,
        "succeeded": 2,
        "failed": 1,
        "cancelled": 1,
        "at_least": False,
    }
    assert shown["unavailable"] == {}
    assert consumer.get_task_status_sync(waiting.id).status is TaskState.PENDING


class NoFiguresAdapter(SqliteAdapter):
    capabilities = frozenset(Capability) - {Capability.QUEUE_METRICS, Capability.TASK_LISTING}


def test_figures_an_adapter_lacks_are_null_naming_the_capability(
    config: TaskProcessorConfig,
) -> None:
    adapter = NoFiguresAdapter(config.model_copy(update={"adapter": NoFiguresAdapter}))
    adapter.initialize()
    with TestClient(create_task_app(adapter, dashboard=True)) as client:
        shown = client.get("/dashboard/api/queue").json()
    adapter.shutdown()
    assert shown["queue_depth"] is None and shown["finished"] is None
    assert set(shown["unavailable"]) == {"queue_metrics", "task_listing"}
    assert "does not support 'queue_metrics'" in shown["unavailable"]["queue_metrics"]


def test_a_payload_is_shown_as_enqueued_to_admins(http: TestClient) -> None:
    kwargs = {"text": "<script>alert(1)</script>", "deep": [[[["\u00e9"]]]], "n": 1.5}
    body = {"task_name": "index", "args": [None, True], "kwargs": kwargs, "priority": 7}
    task_id = http.post("/submit", json=body).json()["task_id"]
    assert http.get(f"/dashboard/api/payload/{task_id}").status_code == 401
    shown = http.get(f"/dashboard/api/payload/{task_id}", headers=ADMIN).json()
    assert (shown["name"], shown["args"], shown["kwargs"]) == ("index", [None, True], kwargs)
    assert (shown["id"], shown["priority"], shown["queue_name"]) == (task_id, 7, "dash-unit")
    assert shown["retried_from"] is None and shown["enqueued_at"] > 0


def test_an_unknown_task_has_no_payload(http: TestClient) -> None:
    response = http.get("/dashboard/api/payload/no-such-task", headers=ADMIN)
    assert response.status_code == 404 and "no-such-task" in response.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/api/payload/a%20b",
        "/dashboard/api/payload/%3Cscript%3E",
        "/dashboard/api/payload/%00",
        "/dashboard/api/payload/" + "x" * 201,
        "/dashboard/api/payload/%E2%80%AE",
        "/dashboard/api/queue?limit=5",
        "/dashboard/api/config?x=%00",
        "/dashboard/?next=%3Cscript%3E",
    ],
)
def test_hostile_requests_are_422_never_500(http: TestClient, path: str) -> None:
    response = http.get(path, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(("invalid request", "unknown query"))


def test_the_schema_marks_the_admin_routes(config: TaskProcessorConfig) -> None:
    app = create_task_app(config, dashboard=True, settings=HttpSettings(admin_token=TOKEN))
    paths = app.openapi()["paths"]
    assert paths["/dashboard/api/queue"]["get"]["security"] == [{"taskserveAdmin": []}]
    assert paths["/dashboard/api/payload/{task_id}"]["get"]["security"] == [{"taskserveAdmin": []}]
    assert "401" in paths["/dashboard/api/queue"]["get"]["responses"]
    assert "security" not in paths["/dashboard/api/config"]["get"]
    assert "/dashboard/" not in paths  # the page and its files are not API
