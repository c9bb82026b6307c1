"""Broker failures other than a refused connection: a paused Redis, a read-only
replica, and (for the Celery adapter) refused AMQP credentials answer 503 with a
clear message, and the health check agrees. Paused and read-only servers are
this test's own redis-server processes."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from taskserve import BrokerUnavailable, TaskProcessorConfig
from taskserve.engine.redis.store import RedisTaskStore, redis_unavailable
from taskserve.http import create_task_app
from taskserve.serialization import build_message
from taskserve_conformance.ports import free_port

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test alone (paused or made a replica at will)."""
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)
    yield port
    client.close()
    process.terminate()
    process.wait(10)


def _store(port: int, timeout: float = 0.5) -> RedisTaskStore:
    client = redis.Redis(
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # the mapping is under test, not redis-py's retries
    )
    return RedisTaskStore(
        f"redis://:pw-{uuid.uuid4().hex[:6]}@127.0.0.1:{port}/0",
        "q",
        result_ttl_s=60,
        prefix="failures",
        client=client,
    )


def _message() -> object:
    return build_message(
        task_name="t", args=[1], kwargs={}, queue_name="q", max_payload_bytes=10_000
    )


def test_a_paused_redis_is_unavailable(own_redis: int) -> None:
    store = _store(own_redis)
    admin = redis.Redis(port=own_redis)
    admin.execute_command("CLIENT", "PAUSE", "5000", "ALL")
    try:
        with pytest.raises(
            BrokerUnavailable, match="cannot use Redis at redis://:\\*\\*\\*@"
        ) as info:
            store.insert(_message(), None)  # type: ignore[arg-type]
        assert "Timeout" in str(info.value) and "pw-" not in str(info.value)
        with pytest.raises(BrokerUnavailable):
            store.ping()
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")


def test_a_read_only_replica_is_unavailable(own_redis: int) -> None:
    store = _store(own_redis)
    store.ping()
    admin = redis.Redis(port=own_redis)
    admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # a primary that is not
    with pytest.raises(BrokerUnavailable, match="ReadOnlyError"):
        store.insert(_message(), None)  # type: ignore[arg-type]
    with pytest.raises(BrokerUnavailable, match="read-only replica"):
        store.ping()
    assert store.dead_letters("q.failed", 10, None) == []  # reads still work
    admin.execute_command("REPLICAOF", "NO", "ONE")
    store.ping()


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), True),
        (redis.ResponseError("MISCONF Redis is configured to save RDB snapshots"), True),
        (redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'."), True),
        (redis.exceptions.NoPermissionError("this user has no permissions"), True),
        (redis.exceptions.AuthenticationError("invalid password"), True),
        (redis.TimeoutError("Timeout reading from socket"), True),
        (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False),
    ],
)
def test_the_redis_error_mapping(error: Exception, unavailable: bool) -> None:
    assert redis_unavailable(error) is unavailable


def test_http_answers_503_for_a_paused_or_read_only_redis(
    own_redis: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rq_adapter = pytest.importorskip("taskserve_rq.adapter")
    monkeypatch.setattr(rq_adapter, "SOCKET_TIMEOUT_S", 0.5)
    config = TaskProcessorConfig(
        queue_name=f"failures-{uuid.uuid4().hex[:8]}",
        adapter_config={"redis_url": f"redis://127.0.0.1:{own_redis}/0", "key_prefix": "failures"},
        adapter="rq",
    )
    admin = redis.Redis(port=own_redis)
    with TestClient(create_task_app(config)) as http:
        assert http.post("/submit", json={"task_name": "t"}).status_code == 202
        assert http.get("/health").status_code == 200
        admin.execute_command("CLIENT", "PAUSE", "4000", "ALL")
        paused = http.post("/submit", json={"task_name": "t"})
        assert paused.status_code == 503, paused.text
        assert "Timeout" in paused.json()["detail"]
        assert http.get("/health").status_code == 503
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        read_only = http.post("/submit", json={"task_name": "t"})
        assert read_only.status_code == 503 and "ReadOnly" in read_only.json()["detail"]
        health = http.get("/health")
        assert health.status_code == 503 and "read-only replica" in health.json()["detail"]
        admin.execute_command("REPLICAOF", "NO", "ONE")
        assert http.get("/health").status_code == 200


def test_refused_amqp_credentials_are_503(tmp_path: Path) -> None:
    pytest.importorskip("taskserve_celery")
    config = TaskProcessorConfig(
        queue_name=f"failures-{uuid.uuid4().hex[:8]}",
        adapter="celery",
        adapter_config={
            "broker_url": "amqp://guest:not-the-password@127.0.0.1:5672//",
            "backend_url": "redis://127.0.0.1:6379/0",
            "key_prefix": f"failures-{uuid.uuid4().hex[:8]}",
        },
    )
    with TestClient(create_task_app(config)) as http:
        submit = http.post("/submit", json={"task_name": "t"})
        health = http.get("/health")
    assert submit.status_code == 503, submit.text
    assert "ACCESS_REFUSED" in submit.json()["detail"] or "Access" in submit.json()["detail"]
    assert "not-the-password" not in submit.text
    assert health.status_code == 503 and health.json()["broker_reachable"] is False
