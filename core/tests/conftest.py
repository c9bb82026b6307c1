"""Fixtures shared by the core's tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskserve.adapters.sqlite.dialect import SqliteDialect
from taskserve.kit import RedisTaskStore, SqlLedgerStore, SqlTaskStore

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["sqlite", "sqlite-ledger", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Every store of the kit on queue ``q``: the SQL store and the SQL ledger
    store on sqlite, and the Redis store under a prefix of its own (removed after)."""
    if request.param.startswith("sqlite"):
        kind = SqlLedgerStore if request.param == "sqlite-ledger" else SqlTaskStore
        sql = kind(SqliteDialect(str(tmp_path / "q.db"), 5.0), "q", result_ttl_s=60)
        yield sql
        sql.close()
        return
    prefix = f"taskserve-test-{uuid.uuid4().hex[:12]}"
    redis_store = RedisTaskStore(REDIS_URL, "q", result_ttl_s=60, prefix=prefix)
    yield redis_store
    for key in redis_store.client.scan_iter(f"{prefix}:*"):
        redis_store.client.delete(key)
    redis_store.close()
