"""``GET /tasks`` of the HTTP ingress (sqlite adapter): the queue's recent tasks
newest first, without results, filtered, limited and paged; malformed and
hostile query values answered 422 naming the parameter (never 500); an admin
route; in the OpenAPI schema; 501 for an adapter that cannot list."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from taskserve import Capability, TaskProcessorConfig
from taskserve.adapters.sqlite import SqliteAdapter
from taskserve.http import HttpSettings, create_task_app


@pytest.fixture
def config(tmp_path: Path) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name="listed",
        adapter_config={"path": str(tmp_path / "tasks.db")},
        max_retries=0,
    )


@pytest.fixture
def http(config: TaskProcessorConfig) -> Iterator[TestClient]:
    with TestClient(create_task_app(config), raise_server_exceptions=False) as client:
        yield client


def submit(http: TestClient, n: int) -> str:
    response = http.post("/submit", json={"task_name": "index", "args": [n]})
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def listed(http: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = http.get("/tasks", params=params)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def test_tasks_are_listed_newest_first_without_results(http: TestClient) -> None:
    assert listed(http) == []
    sent = [submit(http, n) for n in range(3)]
    tasks = listed(http)
    assert [t["id"] for t in tasks] == sent[::-1]
    assert all("result" not in t for t in tasks)
    shown = http.get(f"/status/{sent[0]}").json()
    assert tasks[-1] == shown, "a listed task reads as its status does"


def test_status_limit_and_before_filter_and_page(http: TestClient) -> None:
    sent = [submit(http, n) for n in range(5)]
    assert http.post(f"/cancel/{sent[1]}").status_code == 200
    assert [t["id"] for t in listed(http, status="CANCELLED")] == [sent[1]]
    both = listed(http, status=["PENDING", "CANCELLED"])
    assert [t["id"] for t in both] == sent[::-1]
    first = listed(http, limit=2)
    assert [t["id"] for t in first] == [sent[4], sent[3]]
    second = listed(http, limit=2, before=first[-1]["created_at"])
    assert [t["id"] for t in second] == [sent[2], sent[1]]
    assert [t["id"] for t in listed(http, limit=2, before=second[-1]["created_at"])] == [sent[0]]
    assert listed(http, status="SUCCESS") == []


def test_errors_show_without_traceback_or_server_paths(
    http: TestClient, config: TaskProcessorConfig
) -> None:
    task_id = submit(http, 1)
    error = {
        "type": "OSError",
        "message": "cannot open /srv/very/secret/model.bin \ud800",
        "traceback": 'File "/srv/very/secret/handler.py", line 1',
    }
    deep: Any = 1
    for _ in range(950):
        deep = [deep]
    with sqlite3.connect(config.adapter_config.path) as db:  # hostile but legal stored data
        db.execute(
            "UPDATE tasks SET status = 'FAILURE', error = ?, result = ?, expires_at = ?"
            " WHERE id = ?",
            (json.dumps(error), json.dumps(deep), time.time() + 600, task_id),
        )
    [task] = listed(http)
    assert task["status"] == "FAILURE" and task["error"]["type"] == "OSError"
    assert task["error"]["traceback"] == ""
    assert "/srv/very/secret" not in json.dumps(task)


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "query.limit"),
        ("limit=1001", "query.limit"),
        ("limit=-5", "query.limit"),
        ("limit=ten", "query.limit"),
        ("limit=" + "9" * 500, "query.limit"),
        ("limit=1.5", "query.limit"),
        ("status=sideways", "query.status"),
        ("status=pending", "query.status"),
        ("status=", "query.status"),
        ("status=%00", "query.status"),
        ("status=" + "&status=".join(["PENDING"] * 7), "query.status"),
        ("before=nan", "query.before"),
        ("before=inf", "query.before"),
        ("before=-inf", "query.before"),
        ("before=1e999", "query.before"),
        ("before=yesterday", "query.before"),
        ("before=%E2%80%AE", "query.before"),
    ],
)
def test_malformed_query_values_are_422_naming_the_parameter(
    http: TestClient, query: str, parameter: str
) -> None:
    submit(http, 1)
    response = http.get(f"/tasks?{query}")
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("invalid request") and parameter in detail, detail


def test_an_unknown_query_parameter_is_422_naming_the_known_ones(http: TestClient) -> None:
    response = http.get("/tasks?state=PENDING")
    assert response.status_code == 422
    assert (
        "'state'" in response.json()["detail"]
        and "before, limit, status" in (response.json()["detail"])
    )


def test_the_limit_follows_the_settings(config: TaskProcessorConfig) -> None:
    app = create_task_app(config, settings=HttpSettings(max_list_limit=3))
    with TestClient(app) as client:
        assert client.get("/tasks?limit=3").status_code == 200
        assert client.get("/tasks?limit=4").status_code == 422
    limit = next(
        p for p in app.openapi()["paths"]["/tasks"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 3)


def test_the_route_is_in_the_openapi_schema(config: TaskProcessorConfig) -> None:
    operation = create_task_app(config).openapi()["paths"]["/tasks"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert set(parameters) == {"status", "limit", "before"}
    assert parameters["limit"]["schema"]["maximum"] == 1000
    assert parameters["limit"]["schema"]["default"] == 50
    assert {"422", "501", "503"} <= set(operation["responses"])
    assert operation["summary"] == "List the queue's recent tasks"


def test_it_is_an_admin_route(config: TaskProcessorConfig) -> None:
    app = create_task_app(config, settings=HttpSettings(admin_token="s3cret-token"))
    with TestClient(app) as client:
        refused = client.get("/tasks")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        allowed = client.get("/tasks", headers={"Authorization": "Bearer s3cret-token"})
        assert allowed.status_code == 200 and allowed.json() == []
    assert "security" in app.openapi()["paths"]["/tasks"]["get"]


def test_the_route_can_be_left_out(config: TaskProcessorConfig) -> None:
    app = create_task_app(config, task_listing=False)
    with TestClient(app) as client:
        assert client.get("/tasks").status_code == 404
    assert "/tasks" not in app.openapi()["paths"]


class NoListingAdapter(SqliteAdapter):
    capabilities = frozenset(Capability) - {Capability.TASK_LISTING}


def test_an_adapter_that_cannot_list_is_501_naming_the_capability(
    config: TaskProcessorConfig,
) -> None:
    adapter = NoListingAdapter(config.model_copy(update={"adapter": NoListingAdapter}))
    adapter.initialize()
    with TestClient(create_task_app(adapter)) as client:
        response = client.get("/tasks")
    assert response.status_code == 501
    assert response.json()["capability"] == "task_listing"
    adapter.shutdown()
