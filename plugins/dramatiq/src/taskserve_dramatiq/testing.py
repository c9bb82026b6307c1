"""The conformance suite's broker harness for the Dramatiq adapter.

It reaches Redis and RabbitMQ directly, never through the adapter: raw bytes
are put where Dramatiq's consumers fetch them, dead-letter writes are made to
fail by giving the store's dead-letter keys the wrong Redis type, and cleanup
deletes the queues and keys a test created. Needs ``taskserve-conformance``
(``pip install 'taskserve-dramatiq[test]'``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pika
import pika.exceptions
import redis

from taskserve.kit import (
    MAX_PRIORITY,
    PRIORITY_LEVELS,
    RedisTaskStore,
    TaskProcessorConfig,
    priority_level_name,
    secret_value,
)
from taskserve_conformance.harness import BrokerHarness
from taskserve_conformance.redis_store import broken_dead_letter_writes, purge_store
from taskserve_dramatiq.config import DramatiqAdapterConfig


def _settings(config: TaskProcessorConfig) -> DramatiqAdapterConfig:
    settings = config.adapter_config
    if not isinstance(settings, DramatiqAdapterConfig):
        raise TypeError(f"DramatiqHarness needs a Dramatiq config, got {type(settings).__name__}")
    return settings


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(secret_value(url), socket_connect_timeout=5, socket_timeout=30)


def _store(config: TaskProcessorConfig) -> RedisTaskStore:
    """The adapter's state store, reached directly (not through the adapter)."""
    settings = _settings(config)
    return RedisTaskStore(
        secret_value(settings.state_url or settings.broker_url),
        config.queue_name,
        result_ttl_s=1,
        prefix=settings.key_prefix,
    )


@contextlib.contextmanager
def _rabbitmq_channel(url: str) -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(secret_value(url)))
    try:
        yield connection.channel()
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError):
            connection.close()


class DramatiqHarness(BrokerHarness):
    """Broker-level access to the Redis and RabbitMQ brokers of the Dramatiq adapter."""

    def publish_raw(self, config: TaskProcessorConfig, body: bytes) -> None:
        """Put ``body`` on the queue as Dramatiq's consumer will fetch it."""
        settings = _settings(config)
        if settings.kind == "redis":
            client = _redis(settings.broker_url)
            try:
                queue_key = f"{settings.namespace}:{config.queue_name}"
                message_id = f"raw-{uuid.uuid4()}"
                pipe = client.pipeline(transaction=True)
                pipe.hset(f"{queue_key}.msgs", message_id, body)
                pipe.rpush(queue_key, message_id)
                pipe.execute()
            finally:
                client.close()
            return
        with _rabbitmq_channel(settings.broker_url) as channel:
            # The queue as the adapter declares it (dead letters to <queue>.XQ,
            # priorities up to max_priority).
            xq = f"{config.queue_name}.XQ"
            channel.queue_declare(queue=xq, durable=True, arguments={"x-message-ttl": 7 * 86400000})
            channel.queue_declare(
                queue=config.queue_name,
                durable=True,
                arguments={
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": xq,
                    "x-max-priority": settings.broker_options.get("max_priority", MAX_PRIORITY),
                },
            )
            channel.basic_publish(
                exchange="",
                routing_key=config.queue_name,
                body=body,
                properties=pika.BasicProperties(delivery_mode=2),
            )

    def break_dead_letters(
        self, config: TaskProcessorConfig
    ) -> contextlib.AbstractContextManager[None]:
        """Every write of a dead-letter record fails inside the block."""
        return broken_dead_letter_writes(_store(config), config)

    def unreachable_adapter_config(self, config: TaskProcessorConfig) -> Mapping[str, Any]:
        """The same settings pointing at closed ports."""
        settings = _settings(config)
        dead_redis = "redis://127.0.0.1:1/0"
        broker = dead_redis if settings.kind == "redis" else "amqp://guest:guest@127.0.0.1:1/%2F"
        return {**settings.model_dump(), "broker_url": broker, "state_url": dead_redis}

    def cleanup(self, config: TaskProcessorConfig) -> None:
        """Delete the queues, Dramatiq keys and store keys of ``config``."""
        settings = _settings(config)
        store = _store(config)
        try:
            purge_store(store, config)
        finally:
            store.close()
        if settings.kind == "redis":
            broker = _redis(settings.broker_url)
            try:
                _delete_dramatiq_keys(broker, settings.namespace, config.queue_name)
            finally:
                broker.close()
            return
        with _rabbitmq_channel(settings.broker_url) as channel:
            for suffix in ("", ".DQ", ".XQ"):
                channel.queue_delete(queue=f"{config.queue_name}{suffix}")


def _delete_dramatiq_keys(client: redis.Redis, namespace: str, queue: str) -> None:
    """Dramatiq's keys of ``queue`` (its priority levels, its delay and dead-letter
    queues)."""
    names = [queue, f"{queue}.DQ", f"{queue}.XQ"]
    client.delete(*[f"{namespace}:{n}{part}" for n in names for part in ("", ".msgs")])
    client.delete(
        *[priority_level_name(f"{namespace}:{queue}", level) for level in PRIORITY_LEVELS[1:]]
    )
    for name in names[:2]:
        for key in client.scan_iter(match=f"{namespace}:__acks__.*.{name}", count=1000):
            client.delete(key)
    remaining = set(client.scan_iter(match=f"{namespace}:*", count=1000))
    if remaining <= {f"{namespace}:__heartbeats__".encode()}:
        client.delete(f"{namespace}:__heartbeats__")
