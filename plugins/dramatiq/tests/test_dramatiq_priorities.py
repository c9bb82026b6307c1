"""Priorities on both brokers, below the conformance suite: on Redis each level
is its own list, a fetch takes the highest first within the prefetch, and a
message handed back, recovered from a dead consumer or due after a delay
returns to its own level; on RabbitMQ a queue declared without
``x-max-priority`` is a ConfigError naming it, and declaring works again once
it is re-created."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
import redis

from taskserve import ConfigError, TaskProcessorConfig
from taskserve_dramatiq import DramatiqAdapter, DramatiqAdapterConfig
from taskserve_dramatiq.engine import TaskRedisBroker
from taskserve_dramatiq.testing import DramatiqHarness
from taskserve_dramatiq.wire import priority_level

REDIS_URL = os.environ.get("TASKSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("TASKSERVE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def _config(kind: str) -> TaskProcessorConfig:
    prefix = f"tsc-dramatiq-prio-{uuid.uuid4().hex[:12]}"
    if kind == "redis":
        settings = DramatiqAdapterConfig(
            broker_url=REDIS_URL, key_prefix=prefix, broker_options={"namespace": prefix}
        )
    else:
        settings = DramatiqAdapterConfig(
            broker_url=AMQP_URL, state_url=REDIS_URL, key_prefix=prefix
        )
    return TaskProcessorConfig(
        queue_name=f"tsc-prio-{uuid.uuid4().hex[:12]}", adapter_config=settings, lease_s=2
    )


def _adapter(config: TaskProcessorConfig) -> DramatiqAdapter:
    adapter = DramatiqAdapter(config)
    adapter.initialize()
    return adapter


@pytest.fixture
def redis_config() -> Iterator[TaskProcessorConfig]:
    config = _config("redis")
    yield config
    DramatiqHarness().cleanup(config)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    made = redis.Redis.from_url(REDIS_URL)
    yield made
    made.close()


def _redis_broker(adapter: DramatiqAdapter) -> TaskRedisBroker:
    assert isinstance(adapter.broker, TaskRedisBroker)
    return adapter.broker


def _levels(client: redis.Redis, broker: TaskRedisBroker) -> dict[int, list[str]]:
    """The ids waiting at each non-empty level."""
    waiting = {
        level: [i.decode() if isinstance(i, bytes) else i for i in client.lrange(key, 0, -1)]
        for level, key in enumerate(broker.level_keys)
    }
    return {level: ids for level, ids in waiting.items() if ids}


def _enqueue(adapter: DramatiqAdapter, *priorities: int | None) -> list[str]:
    return [adapter.enqueue_task_sync("echo", [p], priority=p).id for p in priorities]


def _fetch(broker: TaskRedisBroker, prefetch: int, count: int) -> tuple[Any, list[Any]]:
    """A consumer of the queue and the ``count`` messages it took."""
    consumer = broker.consume(broker.queue_name, prefetch=prefetch, timeout=100)
    taken: list[Any] = []
    while len(taken) < count:
        message = next(consumer)
        if message is not None:
            taken.append(message)
    return consumer, taken


def test_each_priority_waits_in_its_own_list_and_the_depth_counts_them_all(
    redis_config: TaskProcessorConfig, client: redis.Redis
) -> None:
    adapter = _adapter(redis_config)
    try:
        _enqueue(adapter, None, 3, 9, 9, 0)
        broker = _redis_broker(adapter)
        assert {level: len(ids) for level, ids in _levels(client, broker).items()} == {
            0: 2,
            3: 1,
            9: 2,
        }
        assert broker.level_keys[0] == f"{broker.namespace}:{redis_config.queue_name}"
        assert all(i.endswith("@priority-9") for i in _levels(client, broker)[9])
        assert broker.queue_depth() == 5
        assert adapter.get_metrics_sync().queue_depth == 5
    finally:
        adapter.shutdown()


def test_a_fetch_takes_the_highest_levels_first_and_a_hand_back_returns_to_its_level(
    redis_config: TaskProcessorConfig, client: redis.Redis
) -> None:
    adapter = _adapter(redis_config)
    try:
        _enqueue(adapter, 0, 4, 9, 4, 1)
        broker = _redis_broker(adapter)
        before = _levels(client, broker)
        consumer, taken = _fetch(broker, prefetch=3, count=3)
        assert [priority_level(m) for m in taken] == [9, 4, 4]
        assert next(consumer) is None, "a consumer took more than its prefetch"
        assert _levels(client, broker) == {0: before[0], 1: before[1]}
        consumer.requeue(taken)
        assert _levels(client, broker) == before, "handed back messages left their place"
        fetched = f"{broker.namespace}:__acks__.{broker.broker_id}.{redis_config.queue_name}"
        assert client.scard(fetched) == 0
    finally:
        adapter.shutdown()


def test_messages_of_a_dead_consumer_return_to_their_own_levels(
    redis_config: TaskProcessorConfig, client: redis.Redis
) -> None:
    dead, alive = _adapter(redis_config), _adapter(redis_config)
    try:
        _enqueue(dead, 7, 0, 2)
        broker = _redis_broker(dead)
        before = _levels(client, broker)
        _, taken = _fetch(broker, prefetch=2, count=2)
        assert [priority_level(m) for m in taken] == [7, 2]
        # The consumer stops heartbeating (its process died).
        client.zadd(f"{broker.namespace}:__heartbeats__", {broker.broker_id: 0})
        _redis_broker(alive).keep_alive()
        assert _levels(client, broker) == before
        fetched = f"{broker.namespace}:__acks__.{broker.broker_id}.{redis_config.queue_name}"
        assert not client.exists(fetched)
        heartbeats = client.zrange(f"{broker.namespace}:__heartbeats__", 0, -1)
        assert broker.broker_id.encode() not in heartbeats
    finally:
        dead.shutdown()
        alive.shutdown()


def test_a_delayed_message_joins_its_level_when_due(
    redis_config: TaskProcessorConfig, client: redis.Redis
) -> None:
    adapter = _adapter(redis_config)
    try:
        broker = _redis_broker(adapter)
        _enqueue(adapter, 6)
        consumer, [message] = _fetch(broker, prefetch=1, count=1)
        delayed = broker.enqueue(message.copy(), delay=0)
        consumer.ack(message)
        assert delayed.queue_name.endswith(".DQ") and not _levels(client, broker)
        # What Dramatiq's worker does with a due message of the delay queue.
        due = delayed.copy(queue_name=redis_config.queue_name)
        del due.options["eta"]
        broker.enqueue(due)
        [waiting] = _levels(client, broker)[6]
        assert waiting.endswith("@priority-6")
        assert waiting != delayed.options["redis_message_id"]
    finally:
        adapter.shutdown()


def _declare_without_priorities(queue: str) -> None:
    """``queue`` as earlier versions (and plain Dramatiq) declare it."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{queue}.XQ"}
    try:
        connection.channel().queue_declare(queue=queue, durable=True, arguments=arguments)
    finally:
        connection.close()


def test_a_rabbitmq_queue_declared_without_priorities_is_a_config_error() -> None:
    config = _config("rabbitmq")
    _declare_without_priorities(config.queue_name)
    adapter = _adapter(config)
    try:
        refused = (
            f"queue '{config.queue_name}'.*x-max-priority 9.*inequivalent arg 'x-max-priority'"
        )
        with pytest.raises(ConfigError, match=refused):
            adapter.enqueue_task_sync("echo", [1], priority=5)
        adapter.register_task_handle(lambda *args: None, "echo")
        with pytest.raises(ConfigError, match=f"queue '{config.queue_name}'"):
            adapter.start_consumer()
        assert adapter.get_metrics_sync().queue_depth == 0, "a refused enqueue left a task"
        DramatiqHarness().cleanup(config)  # the queue is re-created by the next declare
        adapter.enqueue_task_sync("echo", [2], priority=5)
        assert adapter.broker.queue_depth() == 1
    finally:
        adapter.shutdown()
        DramatiqHarness().cleanup(config)
