"""Dramatiq settings take effect on a running consumer: ``time_limit_s``, mapped
onto the core time limit, ends an attempt that outlives it on both brokers;
Redis ``dead_message_ttl`` is how long the consumers' queue maintenance keeps
messages in Dramatiq's dead-letter queue; the worker settings reach the
embedded Dramatiq worker."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from taskserve import TaskProcessorConfig, TaskState
from taskserve_conformance import wait_until
from taskserve_dramatiq import DramatiqAdapter, DramatiqAdapterConfig
from taskserve_dramatiq.consumer import DramatiqConsumer
from taskserve_dramatiq.testing import DramatiqHarness

REDIS_URL = os.environ.get("TASKSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("TASKSERVE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

release = threading.Event()
"""Set at teardown, so that no handler thread outlives its test."""


def runs_until_released() -> str:
    while not release.wait(0.01):
        pass
    return "released"


def _settings(
    kind: str, prefix: str, broker_options: dict[str, Any] | None = None, **fields: Any
) -> DramatiqAdapterConfig:
    options = dict(broker_options or {})
    if kind == "redis":
        return DramatiqAdapterConfig(
            broker_url=REDIS_URL,
            key_prefix=prefix,
            broker_options={"namespace": prefix, **options},
            **fields,
        )
    return DramatiqAdapterConfig(
        broker_url=AMQP_URL,
        state_url=REDIS_URL,
        key_prefix=prefix,
        broker_options=options,
        **fields,
    )


@pytest.fixture
def started() -> Iterator[list[DramatiqAdapter]]:
    """Adapters a test started; stopped and cleaned up after it."""
    adapters: list[DramatiqAdapter] = []
    release.clear()
    yield adapters
    release.set()
    for adapter in adapters:
        adapter.shutdown()
        DramatiqHarness().cleanup(adapter.config)


def _start(
    started: list[DramatiqAdapter], settings: DramatiqAdapterConfig, **config: object
) -> DramatiqAdapter:
    queue = f"tsc-settings-{uuid.uuid4().hex[:12]}"
    adapter = DramatiqAdapter(
        TaskProcessorConfig.model_validate(
            {
                "queue_name": queue,
                "adapter_config": settings,
                "lease_s": 2,
                "failed_task_queue_name": f"{queue}-failed",
                **config,
            }
        )
    )
    adapter.register_task_handle(runs_until_released)
    adapter.initialize()
    adapter.start_consumer()
    started.append(adapter)
    return adapter


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_dramatiqs_time_limit_ends_an_attempt_that_outlives_it(
    kind: str, started: list[DramatiqAdapter]
) -> None:
    prefix = f"tsc-dramatiq-limit-{uuid.uuid4().hex[:12]}"
    settings = _settings(kind, prefix, time_limit_s=0.5)
    adapter = _start(started, settings, max_retries=0)
    assert adapter.config.task_time_limit_s == 0.5  # mapped, the core config had none
    task = adapter.enqueue_task_sync("runs_until_released")
    ended = wait_until(
        lambda: (
            (status := adapter.get_task_status_sync(task.id)).status is TaskState.FAILURE and status
        ),
        timeout=30,
        message="a handler running past time_limit_s failed",
        describe=lambda: adapter.get_task_status_sync(task.id),
    )
    assert ended.error is not None
    assert ended.error.type.endswith("TaskTimeLimitExceeded")
    assert ended.attempts == 1
    assert not release.is_set()  # the limit ended it, not the teardown


def test_dead_message_ttl_is_how_long_dramatiqs_dead_letters_are_kept(
    started: list[DramatiqAdapter],
) -> None:
    prefix = f"tsc-dramatiq-xq-{uuid.uuid4().hex[:12]}"
    settings = _settings("redis", prefix, broker_options={"dead_message_ttl": 60_000})
    queue = f"tsc-settings-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL)
    xq = f"{prefix}:{queue}.XQ"
    now_ms = int(time.time() * 1000)
    try:
        # What a plain Dramatiq worker dead-letters: one older than the TTL, one younger.
        client.zadd(xq, {"old": now_ms - 120_000, "young": now_ms - 30_000})
        client.hset(f"{xq}.msgs", mapping={"old": b"{}", "young": b"{}"})
        adapter = _start(started, settings, queue_name=queue)
        assert adapter.config.queue_name == queue
        wait_until(
            lambda: client.zscore(xq, "old") is None,
            timeout=30,
            message="queue maintenance deleted the dead letter older than dead_message_ttl",
        )
        assert client.hget(f"{xq}.msgs", "old") is None
        assert client.zscore(xq, "young") is not None
        assert client.hget(f"{xq}.msgs", "young") == b"{}"
    finally:
        client.close()


def test_worker_settings_reach_dramatiqs_worker(started: list[DramatiqAdapter]) -> None:
    prefix = f"tsc-dramatiq-worker-{uuid.uuid4().hex[:12]}"
    settings = _settings("redis", prefix, worker_timeout_s=0.3, delay_prefetch=7)
    adapter = _start(started, settings, consumer_concurrency=3)
    consumer = adapter.running_consumer
    assert isinstance(consumer, DramatiqConsumer)
    worker = consumer._worker
    assert (worker.worker_timeout, worker.delay_prefetch) == (300, 7)
    assert (worker.worker_threads, worker.queue_prefetch) == (3, 3)
