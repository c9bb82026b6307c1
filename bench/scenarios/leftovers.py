"""What is left of finished tasks once their result TTL has passed.

Runs in a child process on a private Redis (:func:`bench.isolated.run_isolated`),
so every key of the database can be counted. One taskserve consumer process
runs; ``tasks`` no-op tasks are enqueued with ``result_ttl_s`` and waited for
until SUCCESS is visible. From ``result_ttl_s`` after the last one is seen,
the store is read every ``POLL_S`` until nothing naming one of the tasks is
left, for at most ``wait_s``:

- Redis: every key whose name, or one of whose members, fields or elements,
  contains a task id (:func:`bench.redis_counts.census`); the other keys of
  the queue (its bindings, worker records) are listed apart;
- sqlite and PostgreSQL: rows of the store's tables whose ``id`` or
  ``task_id`` is a task's.

The consumer keeps running the whole time, as in real use.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.brokers import POSTGRES_DSN
from bench.contenders import Contender
from bench.engines.adapters import AdapterTrial
from bench.engines.base import TrialOptions
from bench.process import ConsumerProcess
from bench.redis_counts import census, private_client
from bench.watcher import VisibilityWatcher

POLL_S = 0.25
RUN_TIMEOUT_S = 120.0
ID_COLUMNS = ("id", "task_id")


@dataclass(frozen=True)
class LeftoverResult:
    """``left``: key or table -> entries naming a task, at the end of the wait;
    ``cleared_after_s``: seconds past the TTL until nothing was left (None: never,
    within ``wait_s``); ``others``: the remaining keys that name no task."""

    key: str
    tasks: int
    result_ttl_s: float
    wait_s: float
    left: dict[str, int]
    cleared_after_s: float | None
    others: list[str]


Census = Callable[[], tuple[dict[str, int], list[str]]]


def _shape(name: str, ids: Collection[str], run_id: str) -> str:
    """A key's name with task ids and the run id replaced, so that keys group."""
    for task_id in ids:
        name = name.replace(task_id, "<task>")
    return re.sub(r"\d+", "<n>", name.replace(run_id, "<run>"))


def _redis_census(ids: Collection[str], run_id: str) -> Census:
    client: Any = private_client()

    def count() -> tuple[dict[str, int], list[str]]:
        of_tasks, others = census(client, ids)
        grouped: dict[str, int] = {}
        for name, entries in of_tasks.items():
            shape = _shape(name, ids, run_id)
            grouped[shape] = grouped.get(shape, 0) + entries
        return grouped, sorted({_shape(name, ids, run_id) for name in others})

    return count


def _rows(
    execute: Callable[[str, Any], list[Any]],
    mark: str,
    tables: dict[str, list[str]],
    ids: list[str],
) -> dict[str, int]:
    """Rows naming a task, per table and id column; in a table with an
    ``expires_at`` column, the rows already past it are counted apart."""
    found: dict[str, int] = {}
    now = time.time()
    for table, columns in tables.items():
        expiring = "expires_at" in columns
        for column in (column for column in columns if column in ID_COLUMNS):
            past = f"count(*) FILTER (WHERE expires_at <= {mark})" if expiring else "0"
            marks = ",".join([mark] * len(ids))
            [(count, expired)] = execute(
                f"SELECT count(*), {past} FROM {table} WHERE {column} IN ({marks})",
                [now, *ids] if expiring else ids,
            )
            if count - expired:
                found[f"{table}.{column}"] = int(count - expired)
            if expired:
                found[f"{table}.{column}, past expires_at"] = int(expired)
    return found


def _sqlite_census(path: str, ids: list[str]) -> Census:
    def execute(sql: str, args: Any) -> list[Any]:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return conn.execute(sql, args).fetchall()

    def count() -> tuple[dict[str, int], list[str]]:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            names = [
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            tables = {
                name: [c[1] for c in conn.execute(f"PRAGMA table_info({name})")] for name in names
            }
        return _rows(execute, "?", tables, ids), []

    return count


def _postgres_census(schema: str, ids: list[str]) -> Census:
    import psycopg

    def execute(sql: str, args: Any) -> list[Any]:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            return conn.execute(sql, args).fetchall()

    def count() -> tuple[dict[str, int], list[str]]:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = %s",
                (schema,),
            ).fetchall()
        tables: dict[str, list[str]] = {}
        for table, column in rows:
            tables.setdefault(f"{schema}.{table}", []).append(column)
        return _rows(execute, "%s", tables, ids), []

    return count


def _census_of(trial: AdapterTrial, ids: list[str], run_id: str) -> Census:
    adapter_config = trial.config.adapter_config
    if trial.adapter_name == "sqlite":
        return _sqlite_census(adapter_config.path, ids)
    if trial.adapter_name == "postgres":
        return _postgres_census(adapter_config.schema_name, ids)
    return _redis_census(ids, run_id)


def leftovers_after_ttl(
    key: str, tasks: int, result_ttl_s: float, wait_s: float, workdir: str
) -> LeftoverResult:
    """Run ``tasks`` tasks with ``result_ttl_s``; what is left once it has passed."""
    contender = Contender(*key.split("/"))
    run_id = uuid.uuid4().hex[:12]
    folder = Path(workdir)
    markers = folder / f"markers-{run_id}"
    markers.mkdir(parents=True, exist_ok=True)
    options = TrialOptions(
        run_id=run_id, concurrency=4, workdir=folder, markers=markers, result_ttl_s=result_ttl_s
    )
    trial = contender.open(options)
    try:
        if not isinstance(trial, AdapterTrial):
            raise TypeError(f"{key}: the result TTL is a setting of taskserve's adapters")
        with ConsumerProcess(trial.consumer(), folder / f"{run_id}.log", markers):
            with VisibilityWatcher(trial) as watcher:
                ids = [trial.enqueue("noop") for _ in range(tasks)]
                for task_id in ids:
                    watcher.add(task_id)
                watcher.start()
                watcher.wait(tasks, RUN_TIMEOUT_S)
            expired = time.monotonic() + result_ttl_s
            count = _census_of(trial, ids, run_id)
            time.sleep(result_ttl_s)
            cleared: float | None = None
            while True:
                left, others = count()
                waited = time.monotonic() - expired
                if not left:
                    cleared = max(0.0, waited)
                    break
                if waited > wait_s:
                    break
                time.sleep(POLL_S)
    finally:
        trial.close()
    return LeftoverResult(key, tasks, result_ttl_s, wait_s, left, cleared, others)
