"""What a private Redis holds: a census of every key of its database.

Only a private server (:mod:`bench.redis_private`) is read, so every key is
the benchmark's.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from bench.brokers import REDIS_URL
from bench.redis_private import PRIVATE_ENV


def private_client() -> Any:
    """A client of this process's Redis, refusing unless it is a private server."""
    import redis

    if os.environ.get(PRIVATE_ENV) != "1":
        raise RuntimeError(f"this reads a private Redis only ({PRIVATE_ENV}=1)")
    return redis.Redis.from_url(REDIS_URL)


def _members(client: Any, key: bytes, kind: str) -> list[bytes]:
    if kind == "hash":
        return list(client.hkeys(key))
    if kind == "set":
        return list(client.smembers(key))
    if kind == "zset":
        return list(client.zrange(key, 0, -1))
    if kind == "list":
        return list(client.lrange(key, 0, -1))
    return []


def census(client: Any, task_ids: Collection[str]) -> tuple[dict[str, int], list[str]]:
    """(key -> entries naming one of ``task_ids``, the other keys) of the database.

    A key counts as a task's when its name contains a task id (the entry count
    is then 1) or when members, fields or elements of it do (how many).
    """
    ids = [task_id.encode() for task_id in task_ids]
    of_tasks: dict[str, int] = {}
    others: list[str] = []
    for key in client.scan_iter(count=1000):
        name = key.decode(errors="replace")
        if any(task_id in key for task_id in ids):
            of_tasks[name] = 1
            continue
        kind = client.type(key).decode()
        naming = sum(1 for member in _members(client, key, kind) if any(t in member for t in ids))
        if naming:
            of_tasks[name] = naming
        else:
            others.append(name)
    return of_tasks, sorted(others)
