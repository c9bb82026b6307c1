"""The conformance suite's broker harness for the RQ adapter.

It works on Redis directly, never through :class:`~taskserve_rq.RQAdapter`:
raw messages become RQ job hashes pushed on the queue list (level 0), dead-letter
writes are broken by turning the store's dead-letter keys into strings, and
cleanup deletes RQ's keys of the queue's priority levels and of its jobs, and
the store's keys of the queue. Needs ``taskserve-conformance`` (``pip install taskserve-rq[test]``).
"""

from __future__ import annotations

import contextlib
import uuid
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from taskserve.kit import (
    PRIORITY_LEVELS,
    RedisTaskStore,
    TaskProcessorConfig,
    priority_level_name,
    secret_value,
)
from taskserve_conformance.harness import (
    BrokerHarness,
)
from taskserve_conformance.redis_store import broken_dead_letter_writes
from taskserve_rq.config import RQAdapterConfig

UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"
"""A Redis URL nothing listens on."""

_RQ_QUEUE_KEYS = (
    "rq:queue:{q}",
    "rq:queue:{q}:intermediate",
    "rq:wip:{q}",
    "rq:scheduled:{q}",
    "rq:finished:{q}",
    "rq:failed:{q}",
    "rq:canceled:{q}",
    "rq:deferred:{q}",
    "rq:workers:{q}",
)
_STORE_QUEUE_KEYS = (
    "running",
    "waiting",
    "scheduled",
    "seq",
    "seen",
    "samples",
    "republished",
    "reconciling",
    "workers",
    "tasks",
    "tasks-sweep",
)
"""The task store's keys of a queue (``<prefix>:<kind>:<queue>``), the ledger's included."""
_RQ_JOB_KEYS = (
    "rq:job:{id}",
    "rq:job:{id}:dependents",
    "rq:job:{id}:dependencies",
    "rq:executions:{id}",
    "rq:results:{id}",
)


def _settings(config: TaskProcessorConfig) -> RQAdapterConfig:
    settings = config.adapter_config
    if not isinstance(settings, RQAdapterConfig):
        raise TypeError(f"RQHarness needs an RQAdapterConfig, got {type(settings).__name__}")
    return settings


def _client(settings: RQAdapterConfig) -> redis.Redis:
    return redis.Redis.from_url(
        secret_value(settings.redis_url), socket_connect_timeout=5, socket_timeout=30
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RQHarness(BrokerHarness):
    """Broker-level access to the RQ adapter's Redis."""

    def publish_raw(self, config: TaskProcessorConfig, body: bytes) -> None:
        """Push an RQ job whose data is ``body`` (compressed as RQ stores it), and
        wake an idle consumer as a publish does."""
        settings = _settings(config)
        client = _client(settings)
        job_id = f"raw-{uuid.uuid4()}"
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        queue_key = f"rq:queue:{config.queue_name}"
        try:
            pipe = client.pipeline()
            pipe.hset(
                f"rq:job:{job_id}",
                mapping={
                    "data": zlib.compress(body),
                    "origin": config.queue_name,
                    "status": "queued",
                    "created_at": stamp,
                    "enqueued_at": stamp,
                    "description": "raw message",
                    "timeout": -1,
                },
            )
            pipe.sadd("rq:queues", queue_key)
            pipe.rpush(queue_key, job_id)
            pipe.lpush(f"{settings.key_prefix}:rq:wake:{config.queue_name}", "1")
            pipe.execute()
        finally:
            client.close()

    def break_dead_letters(
        self, config: TaskProcessorConfig
    ) -> contextlib.AbstractContextManager[None]:
        """Every write of a dead-letter record fails inside the block."""
        settings = _settings(config)
        store = RedisTaskStore(
            secret_value(settings.redis_url),
            config.queue_name,
            result_ttl_s=1,
            prefix=settings.key_prefix,
        )
        return broken_dead_letter_writes(store, config)

    def unreachable_adapter_config(self, config: TaskProcessorConfig) -> Mapping[str, Any]:
        """The same settings pointing at a closed port."""
        return {**_settings(config).model_dump(), "redis_url": UNREACHABLE_REDIS_URL}

    def cleanup(self, config: TaskProcessorConfig) -> None:
        """Delete RQ's keys of the queue's priority levels and its jobs, and the
        store's keys of the queue."""
        settings = _settings(config)
        client = _client(settings)
        try:
            self._cleanup(client, settings.key_prefix, config)
        finally:
            client.close()

    def _cleanup(self, client: redis.Redis, prefix: str, config: TaskProcessorConfig) -> None:
        queue = config.queue_name
        levels = [priority_level_name(queue, level) for level in PRIORITY_LEVELS]
        job_ids: set[str] = set()
        for level in levels:
            for key in (f"rq:queue:{level}", f"rq:queue:{level}:intermediate"):
                job_ids.update(_text(i) for i in client.lrange(key, 0, -1))
            for registry in ("wip", "scheduled", "finished", "failed", "canceled", "deferred"):
                members = client.zrange(f"rq:{registry}:{level}", 0, -1)
                job_ids.update(_text(m).split(":")[0] for m in members)
        store_keys: list[str] = []
        for key in client.scan_iter(match=f"{prefix}:task:*", count=1000):
            if _text(client.hget(key, "queue") or b"") == queue:
                store_keys.append(_text(key))
                job_ids.add(_text(key).rsplit(":", 1)[1])
        for dead_letter_queue in (
            config.failed_task_queue_name,
            config.unprocessable_task_queue_name,
        ):
            if dead_letter_queue:
                order = f"{prefix}:dlq:{dead_letter_queue}:order"
                if client.type(order) == b"zset":
                    ids = client.zrange(order, 0, -1)
                    store_keys.extend(f"{prefix}:task:{_text(i)}" for i in ids)
                store_keys += [order, f"{prefix}:dlq:{dead_letter_queue}:records"]
        store_keys += [_text(k) for k in client.scan_iter(match=f"{prefix}:idem:{queue}:*")]
        store_keys += [f"{prefix}:{kind}:{queue}" for kind in _STORE_QUEUE_KEYS]
        store_keys += [
            f"{prefix}:rq:leases:{queue}",
            f"{prefix}:rq:unleased:{queue}",
            f"{prefix}:rq:wake:{queue}",
        ]
        workers = sorted({_text(w) for q in levels for w in client.smembers(f"rq:workers:{q}")})
        if workers:  # workers killed without registering their death
            client.srem("rq:workers", *workers)
        rq_keys = [template.format(q=q) for q in levels for template in _RQ_QUEUE_KEYS] + workers
        intermediates = tuple(f"rq:queue:{level}:intermediate:" for level in levels)
        for key in client.scan_iter(match=f"rq:queue:{queue}*:intermediate:*"):
            if _text(key).startswith(intermediates):
                rq_keys.append(_text(key))
        rq_keys += [t.format(id=job_id) for job_id in job_ids for t in _RQ_JOB_KEYS]
        keys = store_keys + rq_keys
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.srem("rq:queues", *(f"rq:queue:{level}" for level in levels))
