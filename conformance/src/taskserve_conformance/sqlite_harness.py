"""The broker harness of the core's embedded ``sqlite`` adapter.

It works on the database file directly: raw messages are inserted as task
rows, dead-letter writes are made to fail with a temporary trigger, and
cleanup deletes the file.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from taskserve import TaskProcessorConfig
from taskserve.adapters.sqlite import SqliteAdapterConfig
from taskserve.adapters.sqlite.dialect import SqliteDialect
from taskserve.kit import SqlTaskStore
from taskserve_conformance.harness import BrokerHarness


def _settings(config: TaskProcessorConfig) -> SqliteAdapterConfig:
    settings = config.adapter_config
    if not isinstance(settings, SqliteAdapterConfig):
        raise TypeError(f"SqliteHarness needs a sqlite config, got {type(settings).__name__}")
    return settings


def _store(settings: SqliteAdapterConfig, queue_name: str) -> SqlTaskStore:
    dialect = SqliteDialect(settings.path, settings.busy_timeout_s)
    store = SqlTaskStore(dialect, queue_name, result_ttl_s=60.0)
    store.ensure_schema()
    return store


def _unreachable_marker(path: Path) -> Path:
    return path.with_name(path.name + ".unreachable")


class SqliteHarness(BrokerHarness):
    """Broker-level access to a sqlite adapter's database file."""

    def publish_raw(self, config: TaskProcessorConfig, body: bytes) -> None:
        """Insert ``body`` as a queued row of ``config.queue_name``."""
        store = _store(_settings(config), config.queue_name)
        try:
            store.insert_raw(body, task_id=f"raw-{uuid.uuid4()}")
        finally:
            store.close()

    @contextlib.contextmanager
    def break_dead_letters(self, config: TaskProcessorConfig) -> Iterator[None]:
        """Abort every insert into this config's dead-letter queues."""
        settings = _settings(config)
        _store(settings, config.queue_name).close()  # the trigger needs the table
        queues = [config.failed_task_queue_name, config.unprocessable_task_queue_name]
        # Queue names are validated as [A-Za-z0-9_.:-], safe to inline.
        listed = ", ".join(f"'{q}'" for q in queues if q)
        trigger = f"conformance_broken_dead_letters_{uuid.uuid4().hex}"
        conn = sqlite3.connect(settings.path, timeout=settings.busy_timeout_s, isolation_level=None)
        try:
            conn.execute(
                f"CREATE TRIGGER {trigger} BEFORE INSERT ON dead_letters"
                f" WHEN NEW.queue IN ({listed})"
                " BEGIN SELECT RAISE(ABORT, 'dead-letter writes are broken by the harness'); END"
            )
            yield
        finally:
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
            conn.close()

    def unreachable_adapter_config(self, config: TaskProcessorConfig) -> Mapping[str, Any]:
        """A database path below a regular file, which can never be opened."""
        settings = _settings(config)
        marker = _unreachable_marker(Path(settings.path))
        marker.touch()
        return {**settings.model_dump(), "path": str(marker / "tasks.db")}

    def cleanup(self, config: TaskProcessorConfig) -> None:
        """Delete the database file, its WAL companions and any marker file."""
        path = Path(_settings(config).path)
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        _unreachable_marker(path).unlink(missing_ok=True)
