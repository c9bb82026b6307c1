"""Hostile and careless input against the HTTP ingress (sqlite adapter): every
request gets a documented answer - never a 500, never a dropped connection -
and hostile stored data can be listed, viewed, redriven and purged."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient

from taskserve import (
    BrokerUnavailable,
    NonRetryableError,
    TaskProcessorAdapter,
    TaskProcessorConfig,
    instantiate_adapter_from_config,
)
from taskserve.http import HttpSettings, create_task_app, task_router
from taskserve.serialization import text_depth

SECRET_DIR = "/srv/very/secret/place"


def explode(message: str) -> None:
    raise NonRetryableError(f"cannot open {SECRET_DIR}/model.bin: {message}")


@pytest.fixture
def config(tmp_path: Path) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name="hostile",
        adapter_config={"path": str(tmp_path / "tasks.db"), "poll_interval_s": 0.01},
        max_retries=0,
        failed_task_queue_name="hostile.failed",
        unprocessable_task_queue_name="hostile.unprocessable",
    )


@pytest.fixture
def http(config: TaskProcessorConfig) -> Iterator[TestClient]:
    with TestClient(create_task_app(config), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def consumer(config: TaskProcessorConfig) -> Iterator[TaskProcessorAdapter]:
    adapter = instantiate_adapter_from_config(config)
    adapter.register_task_handle(explode)
    adapter.start_consumer()
    yield adapter
    adapter.shutdown()


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth - 1):
        value = [value]
    return [value]


def wait_for(condition: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


async def asgi_call(
    app: FastAPI,
    headers: dict[str, str],
    chunks: list[bytes],
    *,
    path: str = "/submit",
    then_silent: bool = False,
    timeout: float = 10.0,
) -> tuple[int, dict[str, Any]]:
    """One request straight through the ASGI interface; with ``then_silent`` the
    client stops sending after ``chunks`` and never ends the body."""
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {
                "type": "http.request",
                "body": chunk,
                "more_body": bool(pending) or then_silent,
            }
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


# -- 1. validated at the edge -------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_a_body_that_is_not_json_is_415(http: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    body = b'{"task_name": "explode"}'
    response = http.post("/submit", content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]


def test_a_json_body_in_another_charset_is_415(http: TestClient) -> None:
    response = http.post(
        "/submit",
        content='{"task_name": "a"}'.encode("utf-16"),
        headers={"content-type": "application/json; charset=utf-16"},
    )
    assert response.status_code == 415


def test_a_body_that_is_not_utf8_is_a_4xx(http: TestClient) -> None:
    response = http.post(
        "/submit",
        content=b'{"task_name": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code in (400, 422), response.text
    assert response.json()["detail"]


def test_a_declared_huge_body_is_refused_before_a_byte_is_read(config: TaskProcessorConfig) -> None:
    app = create_task_app(config)
    headers = {"content-type": "application/json", "content-length": str(10 * 1024**3)}
    status, body = asyncio.run(asgi_call(app, headers, [], then_silent=True, timeout=5))
    assert status == 413
    assert "limit" in body["detail"]


def test_a_streamed_body_over_the_limit_is_cut_off_with_413(tmp_path: Path) -> None:
    config = TaskProcessorConfig(queue_name="q", adapter_config={"path": str(tmp_path / "t.db")})
    app = create_task_app(config, settings=HttpSettings(max_body_bytes=1000))
    headers = {"content-type": "application/json"}  # chunked: no Content-Length
    chunks = [b'{"task_name": "a", "args": ["'] + [b"x" * 400] * 100 + [b'"]}']
    status, body = asyncio.run(asgi_call(app, headers, chunks))
    assert status == 413 and "1000 bytes" in body["detail"]


def test_a_body_that_stops_arriving_is_408_within_the_timeout(tmp_path: Path) -> None:
    config = TaskProcessorConfig(queue_name="q", adapter_config={"path": str(tmp_path / "t.db")})
    app = create_task_app(config, settings=HttpSettings(body_timeout_s=0.3))
    headers = {"content-type": "application/json", "content-length": "100"}
    started = time.monotonic()
    status, body = asyncio.run(asgi_call(app, headers, [b'{"task_name": '], then_silent=True))
    assert status == 408 and "0.3 seconds" in body["detail"]
    assert time.monotonic() - started < 3


def test_uvicorn_answers_a_silent_huge_declared_body_at_once(config: TaskProcessorConfig) -> None:
    """The real server: a declared 10 GB body that never comes is answered 413
    at once, and uvicorn closes the connection within its keep-alive timeout."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_task_app(config), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=10)
        with socket.create_connection(("127.0.0.1", port), timeout=15) as client:
            client.sendall(
                b"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 10000000000\r\n\r\n{"
            )
            started = time.monotonic()
            answer = b""
            while b"}" not in answer:
                answer += client.recv(65536)
            answered = time.monotonic() - started
            while client.recv(65536):
                pass
            closed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert answered < 2 and closed < 12, (answered, closed)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"task_name": "a\x00b"}, "task_name"),
        ({"task_name": "line\nbreak"}, "task_name"),
        ({"task_name": "x" * 201}, "task_name"),
        ({"task_name": "x" * 1_000_000}, "task_name"),
        ({"task_name": "a", "args": nested(100)}, "nests"),
        ({"task_name": "a", "kwargs": {"\ud800": 1}}, "surrogate"),
        ({"task_name": "a", "args": ["\udfff"]}, "surrogate"),
        ({"task_name": "a", "args": [1], "extra": 2}, "extra"),
    ],
)
def test_hostile_submit_bodies_are_422_naming_the_problem(
    http: TestClient, body: dict[str, Any], fragment: str
) -> None:
    response = http.post(
        "/submit",
        content=json.dumps(body).encode(),  # ASCII escapes: surrogates travel as \\ud800
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


def test_the_depth_limit_is_a_setting(tmp_path: Path) -> None:
    config = TaskProcessorConfig(queue_name="q", adapter_config={"path": str(tmp_path / "t.db")})
    with TestClient(create_task_app(config, settings={"max_json_depth": 4})) as http:
        assert http.post("/submit", json={"task_name": "a", "args": nested(2)}).status_code == 202
        response = http.post("/submit", json={"task_name": "a", "args": nested(4)})
        assert response.status_code == 422 and "limit of 4" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/status/a%20b"),
        ("GET", "/get/" + "x" * 201),
        ("POST", "/cancel/%00"),
        ("POST", "/retry/a%0Ab"),
        ("GET", "/dead-letters?limit=a"),
        ("GET", "/dead-letters?limit=0"),
        ("GET", "/dead-letters?kind=sideways"),
    ],
)
def test_bad_ids_and_query_parameters_are_422(http: TestClient, method: str, path: str) -> None:
    response = http.request(method, path)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("invalid request")


def test_a_bad_idempotency_key_is_422(http: TestClient) -> None:
    response = http.post("/submit", json={"task_name": "a"}, headers={"Idempotency-Key": "x" * 201})
    assert response.status_code == 422


def test_limits_appear_in_the_openapi_schema(tmp_path: Path) -> None:
    config = TaskProcessorConfig(queue_name="q", adapter_config={"path": str(tmp_path / "t.db")})
    app = create_task_app(config, settings=HttpSettings(max_task_name_length=50))
    schema = app.openapi()
    text = json.dumps(schema)
    submit = schema["paths"]["/submit"]["post"]
    assert {"413", "415", "422", "503"} <= set(submit["responses"])
    assert '"maxLength": 50' in text
    status = schema["paths"]["/status/{task_id}"]["get"]["parameters"][0]["schema"]
    assert status["maxLength"] == 200 and status["pattern"]


# -- 2. hostile stored data --------------------------------------------------------------
def _raw_dead_letter(db: Path, queue: str, args_json: str, record_id: str) -> None:
    error = json.dumps({"type": "ValueError", "message": "bad", "traceback": "tb"})
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO dead_letters (id, queue, kind, source_queue, task_id, task_name, args,"
            " kwargs, raw, error, attempts, enqueued_at, failed_at)"
            " VALUES (?, ?, 'failed', 'hostile', ?, 'explode', ?, '{}', NULL, ?, 1, 1.0, ?)",
            (record_id, queue, f"task-{record_id}", args_json, error, time.time()),
        )


def test_hostile_dead_letters_are_listed_redriven_and_purged(
    http: TestClient, config: TaskProcessorConfig
) -> None:
    assert http.get("/health").status_code == 200  # creates the schema
    db = Path(config.adapter_config.path)
    queue = "hostile.failed"
    _raw_dead_letter(db, queue, json.dumps(nested(300)), "deep-300")
    _raw_dead_letter(db, queue, json.dumps(nested(950)), "deep-950")
    _raw_dead_letter(db, queue, json.dumps(["x" * 500_000]), "huge")
    _raw_dead_letter(db, queue, '["\\ud800 lone"]', "surrogate")
    _raw_dead_letter(db, queue, '["fine"]', "fine")

    listing = http.get("/dead-letters", params={"limit": 100})
    assert listing.status_code == 200
    records = {r["id"]: r for r in listing.json()}
    assert set(records) == {"deep-300", "deep-950", "huge", "surrogate", "fine"}
    for deep in ("deep-300", "deep-950"):  # kept as their stored JSON, not decoded
        assert records[deep]["args"] is None and records[deep]["raw_base64"]
    assert records["huge"]["args"] == ["x" * 500_000]
    assert records["surrogate"]["args"] == ["\ud800 lone"]

    outcome = http.post("/dead-letters/redrive", json={"ids": [*records, "nope"]})
    assert outcome.status_code == 202, outcome.text
    body = outcome.json()
    assert {r["dead_letter_id"] for r in body["redriven"]} == {"huge", "fine"}
    reasons = {n["id"]: n["reason"] for n in body["not_redriven"]}
    assert set(reasons) == {"deep-300", "deep-950", "surrogate", "nope"}
    assert "cannot be decoded" in reasons["deep-300"] and "surrogate" in reasons["surrogate"]
    assert "no dead letter" in reasons["nope"]
    left = {r["id"] for r in http.get("/dead-letters").json()}
    assert left == {"deep-300", "deep-950", "surrogate"}  # nothing lost

    purged = http.post("/dead-letters/purge", json={"ids": ["deep-300", "deep-950"]})
    assert purged.json() == {"purged": 2}
    assert http.post("/dead-letters/purge", json={"all": True}).json() == {"purged": 1}
    assert http.get("/dead-letters").json() == []


@pytest.mark.parametrize("depth", [300, 950])
def test_a_deeply_nested_result_is_served(
    http: TestClient, config: TaskProcessorConfig, depth: int
) -> None:
    task_id = http.post("/submit", json={"task_name": "explode"}).json()["task_id"]
    with sqlite3.connect(config.adapter_config.path) as conn:
        conn.execute(
            "UPDATE tasks SET status = 'SUCCESS', result = ?, expires_at = ? WHERE id = ?",
            (json.dumps(nested(depth)), time.time() + 600, task_id),
        )
    response = http.get(f"/get/{task_id}")
    assert response.status_code == 200
    assert text_depth(response.content) == depth + 1  # the result, inside its envelope
    assert http.get(f"/status/{task_id}").json()["status"] == "SUCCESS"


def test_a_stored_lone_surrogate_is_sent_escaped(
    http: TestClient, config: TaskProcessorConfig
) -> None:
    task_id = http.post("/submit", json={"task_name": "explode"}).json()["task_id"]
    with sqlite3.connect(config.adapter_config.path) as conn:
        conn.execute(
            "UPDATE tasks SET status = 'SUCCESS', result = ?, expires_at = ? WHERE id = ?",
            ('{"\\udc80": "\\ud800"}', time.time() + 600, task_id),
        )
    response = http.get(f"/get/{task_id}")
    assert response.status_code == 200
    assert response.json()["result"] == {"\udc80": "\ud800"}


# -- 3. redrive: all or nothing per record -------------------------------------------------
def _failed_records(http: TestClient, consumer: TaskProcessorAdapter, count: int) -> list[str]:
    for n in range(count):
        assert http.post("/submit", json={"task_name": "explode", "args": [f"n{n}"]}).is_success
    return [
        r["id"]
        for r in wait_for(
            lambda: (
                len(consumer.list_dead_letters_sync()) == count and http.get("/dead-letters").json()
            )
        )
    ]


def test_a_redrive_that_fails_midway_keeps_and_lists_the_rest(
    http: TestClient, consumer: TaskProcessorAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _failed_records(http, consumer, 5)
    consumer.stop_consumer()
    calls = {"n": 0}
    original = TaskProcessorAdapter.enqueue_task_sync

    def flaky(self: TaskProcessorAdapter, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] >= 3:
            raise BrokerUnavailable("the broker went away")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TaskProcessorAdapter, "enqueue_task_sync", flaky)
    body = http.post("/dead-letters/redrive", json={"ids": records}).json()
    redriven = [r["dead_letter_id"] for r in body["redriven"]]
    assert redriven == records[:2]
    assert [n["id"] for n in body["not_redriven"]] == records[2:]
    assert all("went away" in n["reason"] for n in body["not_redriven"])
    monkeypatch.undo()
    assert [r["id"] for r in http.get("/dead-letters").json()] == records[2:]


def test_a_redrive_refused_whole_removes_nothing(
    http: TestClient, consumer: TaskProcessorAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _failed_records(http, consumer, 2)

    def down(self: TaskProcessorAdapter, *args: Any, **kwargs: Any) -> Any:
        raise BrokerUnavailable("down")

    monkeypatch.setattr(TaskProcessorAdapter, "enqueue_task_sync", down)
    response = http.post("/dead-letters/redrive", json={"ids": records})
    assert response.status_code == 503
    monkeypatch.undo()
    assert [r["id"] for r in http.get("/dead-letters").json()] == records
    unknown = http.post("/dead-letters/redrive", json={"ids": ["nope"]})
    assert unknown.status_code == 200 and unknown.json()["redriven"] == []
    assert len(http.get("/dead-letters").json()) == 2


def test_redriving_a_record_twice_returns_the_same_task(
    http: TestClient, consumer: TaskProcessorAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    [record] = _failed_records(http, consumer, 1)
    consumer.stop_consumer()
    adapter = type(consumer)

    def cannot_delete(self: Any, queue: str, ids: Any) -> int:
        raise BrokerUnavailable("delete failed")

    monkeypatch.setattr(adapter, "_delete_dead_letters", cannot_delete)
    first = http.post("/dead-letters/redrive", json={"ids": [record]}).json()["redriven"][0]
    assert first["record_removed"] is False
    second = http.post("/dead-letters/redrive", json={"ids": [record]}).json()["redriven"][0]
    assert second["task_id"] == first["task_id"]


# -- 4. idempotency keys over HTTP ------------------------------------------------------------
def test_an_idempotency_key_with_another_payload_is_422(http: TestClient) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = http.post("/submit", json={"task_name": "explode", "args": [1]}, headers=key)
    same = http.post("/submit", json={"task_name": "explode", "args": [1]}, headers=key)
    assert first.status_code == same.status_code == 202
    assert first.json()["task_id"] == same.json()["task_id"]
    for other in (
        {"task_name": "explode", "args": [2]},
        {"task_name": "other", "args": [1]},
        {"task_name": "explode", "args": [True]},
    ):
        response = http.post("/submit", json=other, headers=key)
        assert response.status_code == 422, other
        assert "different payload" in response.json()["detail"]


def test_concurrent_submits_with_one_key_make_one_task(http: TestClient) -> None:
    key = {"Idempotency-Key": "concurrent"}
    ids: list[str] = []

    def submit() -> None:
        response = http.post("/submit", json={"task_name": "explode"}, headers=key)
        assert response.status_code == 202
        ids.append(response.json()["task_id"])

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 8 and len(set(ids)) == 1


# -- 5. tracebacks, paths and handler names stay on the server -----------------------------------
def test_errors_keep_type_and_message_without_traceback_or_paths(
    config: TaskProcessorConfig, consumer: TaskProcessorAdapter
) -> None:
    with TestClient(create_task_app(config)) as http:
        task_id = http.post("/submit", json={"task_name": "explode", "args": ["x"]}).json()[
            "task_id"
        ]
        error = wait_for(lambda: http.get(f"/status/{task_id}").json()["error"])
        assert error["type"].endswith("NonRetryableError") and "cannot open" in error["message"]
        assert error["traceback"] == "" and SECRET_DIR not in error["message"]
        assert "model.bin" in error["message"]
        assert http.get(f"/get/{task_id}").json()["error"]["traceback"] == ""
        record = http.get("/dead-letters").json()[0]
        assert record["error"]["traceback"] == "" and SECRET_DIR not in json.dumps(record)
        unknown = http.post("/submit", json={"task_name": "nobody-runs-this"}).json()["task_id"]
        listed = wait_for(lambda: http.get("/dead-letters?kind=unprocessable").json())
        assert listed[0]["task_id"] == unknown
        assert "explode" not in listed[0]["error"]["message"]  # registered names not listed
    shown = create_task_app(config, settings=HttpSettings(expose_tracebacks=True))
    with TestClient(shown) as http:
        error = http.get(f"/status/{task_id}").json()["error"]
        assert "Traceback" in error["traceback"] and SECRET_DIR in error["message"]


def test_a_broker_error_shows_no_server_path(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "tasks.db"
    config = TaskProcessorConfig(queue_name="q", adapter_config={"path": str(path)})
    with TestClient(create_task_app(config)) as http:
        assert http.get("/health").status_code == 200
        path.unlink()
        response = http.get("/health")
    assert response.status_code == 503
    assert str(tmp_path) not in response.text and "tasks.db" in response.text


# -- 7. broker failures -----------------------------------------------------------------------
def test_a_locked_sqlite_database_is_503_and_unhealthy(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    config = TaskProcessorConfig(
        queue_name="q", adapter_config={"path": str(path), "busy_timeout_s": 0.2}
    )
    with TestClient(create_task_app(config)) as http:
        assert http.get("/health").status_code == 200
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            submit = http.post("/submit", json={"task_name": "a"})
            health = http.get("/health")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert submit.status_code == 503 and "locked" in submit.json()["detail"]
        assert health.status_code == 503 and health.json()["healthy"] is False
        assert http.get("/health").status_code == 200


# -- 8. admin routes --------------------------------------------------------------------------
ADMIN_ROUTES = [
    ("GET", "/dead-letters", None),
    ("POST", "/dead-letters/redrive", {"ids": []}),
    ("POST", "/dead-letters/purge", {"ids": []}),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_admin_routes_need_the_token(
    config: TaskProcessorConfig, method: str, path: str, body: Any
) -> None:
    app = create_task_app(config, settings=HttpSettings(admin_token="s3cret-token"))
    with TestClient(app) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            refused = http.request(method, path, json=body, headers=headers)
            assert refused.status_code == 401, (headers, refused.text)
            assert refused.headers["www-authenticate"] == "Bearer"
        allowed = http.request(
            method, path, json=body, headers={"Authorization": "Bearer s3cret-token"}
        )
        assert allowed.status_code == 200, allowed.text
        assert http.post("/submit", json={"task_name": "a"}).status_code == 202  # not admin
    schema = app.openapi()
    assert schema["components"]["securitySchemes"]["taskserveAdmin"]["scheme"] == "bearer"
    assert "security" in schema["paths"]["/dead-letters/redrive"]["post"]
    assert "security" not in schema["paths"]["/submit"]["post"]


def test_dependencies_guard_the_app_and_the_router(config: TaskProcessorConfig) -> None:
    def only_alice(request: Request) -> None:
        if request.headers.get("x-user") != "alice":
            raise HTTPException(status_code=401, detail="who are you?")

    app = create_task_app(config, dependencies=[Depends(only_alice)])
    with TestClient(app) as http:
        assert http.get("/health").status_code == 401
        assert http.get("/health", headers={"x-user": "alice"}).status_code == 200
    own = FastAPI()
    own.include_router(task_router(config, admin_dependencies=[Depends(only_alice)]))
    with TestClient(own) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/dead-letters").status_code == 401
        assert http.get("/dead-letters", headers={"x-user": "alice"}).status_code == 200
