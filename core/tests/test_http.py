"""The HTTP ingress (router and app) and the Python clients, on the sqlite adapter."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from taskserve import (
    InvalidArgument,
    NonRetryableError,
    PayloadError,
    TaskCancelled,
    TaskNotFound,
    TaskProcessorAdapter,
    TaskProcessorConfig,
    TaskState,
    UnsupportedCapability,
    current_task,
    instantiate_adapter_from_config,
)
from taskserve.adapters.sqlite import SqliteAdapter
from taskserve.capabilities import Capability
from taskserve.client import AsyncTaskClient, ClientError, TaskClient, TaskFailed
from taskserve.http import create_task_app, task_router
from taskserve.http.router import AdapterSource

release = threading.Event()


def add(a: int, b: int) -> int:
    return a + b


def explode(message: str) -> None:
    raise NonRetryableError(message)


def wait_for_release() -> str:
    while not release.wait(0.02):
        if current_task().cancelled:
            return "stopped"
    return "released"


@pytest.fixture
def config(tmp_path: Path) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name="http-tests",
        adapter_config={"path": str(tmp_path / "tasks.db"), "poll_interval_s": 0.01},
        max_retries=0,
        failed_task_queue_name="http-tests.failed",
        unprocessable_task_queue_name="http-tests.unprocessable",
    )


@pytest.fixture
def consumer(config: TaskProcessorConfig) -> Iterator[TaskProcessorAdapter]:
    release.clear()
    adapter = instantiate_adapter_from_config(config)
    for handler in (add, explode, wait_for_release):
        adapter.register_task_handle(handler)
    adapter.start_consumer()
    yield adapter
    release.set()
    adapter.shutdown()


@pytest.fixture
def app(config: TaskProcessorConfig) -> FastAPI:
    return create_task_app(config)


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def submit(http: TestClient, name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    response = http.post("/submit", json={"task_name": name, "args": list(args), "kwargs": kwargs})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


# -- router --------------------------------------------------------------------------
def test_submit_returns_202_with_id_and_status_url(http: TestClient) -> None:
    body = submit(http, "add", 1, 2)
    assert body["status"] == "PENDING"
    assert body["status_url"].endswith(f"/status/{body['task_id']}")
    status = http.get(body["status_url"])
    assert status.status_code == 200
    assert status.json()["status"] == "PENDING"
    assert status.json()["name"] == "add"


def test_task_runs_and_result_is_served(http: TestClient, consumer: TaskProcessorAdapter) -> None:
    task_id = submit(http, "add", 2, 3)["task_id"]
    with TaskClient(http_client=http) as client:
        assert client.result(task_id, timeout=10, poll_interval=0.02) == 5
    body = http.get(f"/get/{task_id}").json()
    assert body == {"id": task_id, "status": "SUCCESS", "result": 5, "error": None, "attempts": 1}


def test_result_of_unfinished_task_is_409_with_status(http: TestClient) -> None:
    task_id = submit(http, "add", 1, 1)["task_id"]
    response = http.get(f"/get/{task_id}")
    assert response.status_code == 409
    assert response.json()["status"] == "PENDING"
    assert "not ready" in response.json()["detail"]


def test_unknown_task_id_is_404_everywhere(http: TestClient) -> None:
    for method, path in [
        ("GET", "/status/nope"),
        ("GET", "/get/nope"),
        ("POST", "/cancel/nope"),
        ("POST", "/retry/nope"),
        ("PUT", "/retry/nope"),
    ]:
        response = http.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert "nope" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "malformed JSON"),
        (b'{"args": []}', "task_name"),
        (b'{"task_name": "add", "args": {"a": 1}}', "args"),
        (b'{"task_name": "add", "bogus": 1}', "bogus"),
        (b'{"task_name": ""}', "task_name"),
        (b'{"task_name": "add", "delay_s": -1}', "delay_s"),
        (b'{"task_name": "add", "delay_s": "soon"}', "delay_s"),
        (b'{"task_name": "add", "delay_s": 1e12}', "delay_s"),
        (b'{"task_name": "add", "eta": "2030-01-01T00:00:00"}', "eta"),
        (b'{"task_name": "add", "eta": "tomorrow"}', "eta"),
        (b'{"task_name": "add", "delay_s": 1, "eta": "2030-01-01T00:00:00Z"}', "not both"),
        (b'{"task_name": "add", "priority": 10}', "priority"),
        (b'{"task_name": "add", "priority": -1}', "priority"),
        (b'{"task_name": "add", "priority": "5"}', "priority"),
        (b'{"task_name": "add", "priority": true}', "priority"),
        (b'{"task_name": "add", "priority": 2.5}', "priority"),
    ],
)
def test_bad_submit_bodies_are_422_with_a_clear_message(
    http: TestClient, body: bytes, fragment: str
) -> None:
    response = http.post("/submit", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


def test_payload_over_the_size_limit_is_422(tmp_path: Path) -> None:
    config = TaskProcessorConfig(
        queue_name="small", adapter_config={"path": str(tmp_path / "t.db")}, max_payload_bytes=200
    )
    with TestClient(create_task_app(config)) as http:
        response = http.post("/submit", json={"task_name": "add", "args": ["x" * 500]})
    assert response.status_code == 422
    assert "max_payload_bytes" in response.json()["detail"]


def test_task_names_restrict_submit(config: TaskProcessorConfig) -> None:
    with TestClient(create_task_app(config, task_names=["add"])) as http:
        response = http.post("/submit", json={"task_name": "explode"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "explode" in detail and "add" not in detail  # the accepted names are not listed


def test_idempotency_key_returns_the_first_task(http: TestClient) -> None:
    headers = {"Idempotency-Key": "order-17"}
    first = http.post("/submit", json={"task_name": "add", "args": [1, 2]}, headers=headers)
    second = http.post("/submit", json={"task_name": "add", "args": [1, 2]}, headers=headers)
    assert first.json()["task_id"] == second.json()["task_id"]


def test_cancel_pending_then_finished(http: TestClient) -> None:
    task_id = submit(http, "add", 1, 2)["task_id"]
    response = http.post(f"/cancel/{task_id}")
    assert response.status_code == 200
    assert response.json()["cancelled"] is True
    assert response.json()["status"] == "CANCELLED"
    again = http.post(f"/cancel/{task_id}").json()
    assert again["cancelled"] is False
    assert again["status"] == "CANCELLED"
    assert http.get(f"/get/{task_id}").json()["status"] == "CANCELLED"


def test_retry_enqueues_the_payload_under_a_new_linked_id(
    http: TestClient, consumer: TaskProcessorAdapter
) -> None:
    task_id = submit(http, "add", 4, 5)["task_id"]
    client = TaskClient(http_client=http)
    assert client.result(task_id, timeout=10, poll_interval=0.02) == 9
    response = http.post(f"/retry/{task_id}")
    assert response.status_code == 202
    new = response.json()
    assert new["task_id"] != task_id and new["retried_from"] == task_id
    assert client.result(new["task_id"], timeout=10, poll_interval=0.02) == 9


def test_dead_letters_list_and_redrive(http: TestClient, consumer: TaskProcessorAdapter) -> None:
    task_id = submit(http, "explode", "boom")["task_id"]
    client = TaskClient(http_client=http)
    with pytest.raises(TaskFailed, match="boom") as failed:
        client.result(task_id, timeout=10, poll_interval=0.02)
    assert failed.value.error is not None
    assert failed.value.error.type.endswith("NonRetryableError")
    records = client.dead_letters()
    assert [(r["task_id"], r["args"]) for r in records] == [(task_id, ["boom"])]
    redriven = client.redrive([records[0]["id"]])
    assert len(redriven) == 1
    with pytest.raises(TaskFailed):
        redriven[0].result(timeout=10, poll_interval=0.02)
    bad = http.get("/dead-letters", params={"kind": "sideways"})
    assert bad.status_code == 422


def test_dead_letters_without_a_queue_configured_is_409(tmp_path: Path) -> None:
    config = TaskProcessorConfig(
        queue_name="plain", adapter_config={"path": str(tmp_path / "t.db")}
    )
    with TestClient(create_task_app(config)) as http:
        response = http.get("/dead-letters")
    assert response.status_code == 409
    assert "failed_task_queue_name" in response.json()["detail"]


class NoCancelAdapter(SqliteAdapter):
    capabilities = frozenset(Capability) - {Capability.CANCEL_PENDING}


def test_undeclared_capability_is_501_naming_it(config: TaskProcessorConfig) -> None:
    adapter = NoCancelAdapter(config.model_copy(update={"adapter": NoCancelAdapter}))
    adapter.initialize()
    with TestClient(create_task_app(adapter)) as http:
        task_id = submit(http, "add", 1, 2)["task_id"]
        response = http.post(f"/cancel/{task_id}")
        assert response.status_code == 501
        assert response.json()["capability"] == "cancel_pending"
        with pytest.raises(UnsupportedCapability, match="cancel_pending"):
            TaskClient(http_client=http).cancel(task_id)


def test_health_reports_an_unreachable_broker_as_503(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = TaskProcessorConfig(queue_name="q", adapter_config={"path": str(tmp_path / "ok.db")})
    with TestClient(create_task_app(config)) as http:
        assert http.get("/health").json()["healthy"] is True
        (tmp_path / "ok.db").unlink()
        response = http.get("/health")
    assert response.status_code == 503
    assert response.json()["broker_reachable"] is False


def test_router_mounts_under_a_prefix(config: TaskProcessorConfig) -> None:
    app = FastAPI()
    app.include_router(task_router(config, name="docs"), prefix="/tasks")
    app.include_router(task_router(config, name="other"), prefix="/other")
    with TestClient(app) as http:
        body = http.post("/tasks/submit", json={"task_name": "add"}).json()
        assert body["status_url"] == f"http://testserver/tasks/status/{body['task_id']}"
        assert http.get(f"/other/status/{body['task_id']}").json()["status"] == "PENDING"


def test_adapter_source_pickles_without_its_connections(config: TaskProcessorConfig) -> None:
    """Serve pickles the ingress app; the router's adapter is made again on use."""
    source = AdapterSource(config)
    task = source.get().enqueue_task_sync("add", [1, 2])  # connected now
    copied = pickle.loads(pickle.dumps(source))
    assert copied.get() is not source.get()
    assert copied.get().get_task_status_sync(task.id).status is TaskState.PENDING


def test_openapi_schema_lists_every_endpoint(http: TestClient) -> None:
    schema = http.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/submit",
        "/status/{task_id}",
        "/get/{task_id}",
        "/cancel/{task_id}",
        "/retry/{task_id}",
        "/dead-letters",
        "/dead-letters/redrive",
        "/health",
    } <= paths
    assert "202" in schema["paths"]["/submit"]["post"]["responses"]
    assert "Idempotency-Key" in str(schema["paths"]["/submit"]["post"]["parameters"])


def test_a_delayed_submit_is_pending_with_its_due_time(http: TestClient) -> None:
    before = time.time()
    body = http.post("/submit", json={"task_name": "add", "args": [1, 2], "delay_s": 30}).json()
    assert before + 30 <= body["due_at"] <= time.time() + 30
    status = http.get(body["status_url"]).json()
    assert status["status"] == "PENDING" and status["due_at"] == pytest.approx(body["due_at"])
    eta = "2099-01-01T00:00:00Z"
    assert http.post("/submit", json={"task_name": "add", "eta": eta}).status_code == 422
    soon = datetime.now(UTC) + timedelta(seconds=20)
    body = http.post("/submit", json={"task_name": "add", "eta": soon.isoformat()}).json()
    assert body["due_at"] == pytest.approx(soon.timestamp(), abs=0.01)
    schema = http.get("/openapi.json").json()["components"]["schemas"]
    assert {"delay_s", "eta"} <= set(schema["SubmitRequest"]["properties"])
    assert "due_at" in schema["TaskStatusResponse"]["properties"]


# -- clients ---------------------------------------------------------------------------
def test_clients_submit_with_a_delay(http: TestClient, consumer: TaskProcessorAdapter) -> None:
    client = TaskClient(http_client=http)
    task = client.submit("add", [1, 1], delay_s=0.2)
    waiting = task.status()
    assert waiting.due_at is not None
    assert task.result(timeout=10, poll_interval=0.02) == 2
    with pytest.raises(InvalidArgument, match="aware datetime"):
        client.submit("add", [1, 1], eta=datetime.now())


def test_a_submit_and_the_clients_carry_a_priority(
    http: TestClient, consumer: TaskProcessorAdapter
) -> None:
    body = http.post("/submit", json={"task_name": "add", "args": [1, 2], "priority": 9})
    assert body.status_code == 202, body.text
    schema = http.get("/openapi.json").json()["components"]["schemas"]
    priority = schema["SubmitRequest"]["properties"]["priority"]
    assert "0 (lowest" in priority["description"]
    client = TaskClient(http_client=http)
    assert client.submit("add", [2, 2], priority=7).result(timeout=10, poll_interval=0.02) == 4
    with pytest.raises(InvalidArgument, match="priority"):
        client.submit("add", [1, 1], priority=10)


def test_sync_client_handle(http: TestClient, consumer: TaskProcessorAdapter) -> None:
    client = TaskClient(http_client=http)
    task = client.submit("add", [20, 22])
    assert task.result(timeout=10, poll_interval=0.02) == 42
    assert task.status().status is TaskState.SUCCESS
    assert task.cancel().cancelled is False
    again = task.retry()
    assert again.id != task.id and again.result(timeout=10, poll_interval=0.02) == 42
    with pytest.raises(TaskNotFound):
        client.status("missing")
    with pytest.raises(PayloadError):
        client.submit("", [])


def test_sync_client_cancels_a_running_task(
    http: TestClient, consumer: TaskProcessorAdapter
) -> None:
    client = TaskClient(http_client=http)
    task = client.submit("wait_for_release")
    deadline = 200
    while task.status().status is not TaskState.STARTED and deadline:
        deadline -= 1
        threading.Event().wait(0.02)
    assert task.cancel().cancelled is True
    with pytest.raises(TaskCancelled):
        task.result(timeout=10, poll_interval=0.02)


def test_result_times_out(http: TestClient) -> None:
    task = TaskClient(http_client=http).submit("add", [1, 1])
    with pytest.raises(TimeoutError):
        task.result(timeout=0.1, poll_interval=0.02)


def test_client_error_for_other_statuses() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(418, json={"detail": "short and stout"})

    client = TaskClient(
        "http://x", http_client=httpx.Client(transport=httpx.MockTransport(handler))
    )
    with pytest.raises(ClientError, match="418: short and stout"):
        client.submit("add")


def test_async_client(app: FastAPI, consumer: TaskProcessorAdapter) -> None:
    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            client = AsyncTaskClient(http_client=http)
            task = await client.submit("add", kwargs={"a": 1, "b": 2})
            assert await task.result(timeout=10, poll_interval=0.02) == 3
            assert (await task.status()).status is TaskState.SUCCESS
            retried = await task.retry()
            assert await retried.result(timeout=10, poll_interval=0.02) == 3
            assert (await retried.cancel()).cancelled is False
            failing = await client.submit("explode", ["bad"])
            with pytest.raises(TaskFailed, match="bad"):
                await failing.result(timeout=10, poll_interval=0.02)
            assert len(await client.dead_letters()) == 1
            assert len(await client.redrive()) == 1
            assert (await client.health()).healthy is True
            with pytest.raises(TaskNotFound):
                await client.status("missing")

    asyncio.run(scenario())
