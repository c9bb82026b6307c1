"""The conformance suite's broker harness for the Celery adapter.

It reaches the brokers with kombu and the state store with redis-py, never
through the adapter: raw bytes are published as a message with that exact
body, dead-letter writes are made to fail by giving the store's dead-letter
keys the wrong Redis type, and cleanup deletes the queue, exchange and keys a
test created. Needs ``taskserve-conformance``
(``pip install 'taskserve-celery[test]'``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from taskserve.kit import RedisTaskStore, TaskProcessorConfig, secret_value
from taskserve_celery.config import BrokerKind, CeleryAdapterConfig
from taskserve_conformance.harness import BrokerHarness
from taskserve_conformance.redis_store import broken_dead_letter_writes, purge_store

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
UNREACHABLE_AMQP = "amqp://guest:guest@127.0.0.1:1//"

_PRIORITY_SEPARATOR = "\x06\x16"
"""kombu's separator between a Redis queue name and its priority step."""


def _settings(config: TaskProcessorConfig) -> CeleryAdapterConfig:
    settings = config.adapter_config
    if not isinstance(settings, CeleryAdapterConfig):
        raise TypeError(f"CeleryHarness needs a Celery config, got {type(settings).__name__}")
    return settings


def _store(config: TaskProcessorConfig) -> RedisTaskStore:
    """The adapter's state store, reached directly (not through the adapter)."""
    settings = _settings(config)
    return RedisTaskStore(
        settings.state_url, config.queue_name, result_ttl_s=1, prefix=settings.key_prefix
    )


@contextlib.contextmanager
def _broker(settings: CeleryAdapterConfig) -> Iterator[Any]:
    connection: Any = Connection(  # type: ignore[no-untyped-call]
        secret_value(settings.broker_url),
        transport_options=dict(settings.broker_transport_options or {}),
        connect_timeout=5,
    )
    try:
        yield connection
    finally:
        connection.release()


def _queue(name: str) -> Queue:
    exchange = Exchange(name, type="direct", durable=True)  # type: ignore[no-untyped-call]
    return Queue(name, exchange, routing_key=name, durable=True)  # type: ignore[no-untyped-call]


class CeleryHarness(BrokerHarness):
    """Broker-level access to the Redis or RabbitMQ broker of the Celery adapter."""

    def publish_raw(self, config: TaskProcessorConfig, body: bytes) -> None:
        """Publish one message whose body is exactly ``body`` (no Celery headers)."""
        settings = _settings(config)
        queue = _queue(config.queue_name)
        with _broker(settings) as connection:
            connection.Producer().publish(
                body,
                exchange=queue.exchange,
                routing_key=config.queue_name,
                declare=[queue],
                serializer=None,
                content_type="application/octet-stream",
                content_encoding="binary",
                delivery_mode=2,
                retry=True,
            )

    def break_dead_letters(
        self, config: TaskProcessorConfig
    ) -> contextlib.AbstractContextManager[None]:
        """Every write of a dead-letter record fails inside the block."""
        return broken_dead_letter_writes(_store(config), config)

    def unreachable_adapter_config(self, config: TaskProcessorConfig) -> Mapping[str, Any]:
        """The same settings pointing at closed ports."""
        settings = _settings(config)
        broker = UNREACHABLE_REDIS if settings.broker_kind is BrokerKind.REDIS else UNREACHABLE_AMQP
        return {
            **settings.model_dump(),
            "broker_url": broker,
            "backend_url": UNREACHABLE_REDIS,
        }

    def cleanup(self, config: TaskProcessorConfig) -> None:
        """Delete the queue and exchange, and the store's keys of ``config``'s queue."""
        settings = _settings(config)
        _delete_store_keys(config)
        with _broker(settings) as connection:
            channel = connection.default_channel
            if settings.broker_kind is BrokerKind.REDIS:
                _delete_kombu_keys(channel, config.queue_name)
            else:
                channel.queue_delete(config.queue_name)
                channel.exchange_delete(config.queue_name)


def _delete_store_keys(config: TaskProcessorConfig) -> None:
    """The store's keys of ``config``'s queue, and its delayed retries."""
    store = _store(config)
    try:
        purge_store(store, config)
        prefix = _settings(config).key_prefix
        for key in store.client.scan_iter(match=f"{prefix}:celery:{config.queue_name}:*"):
            store.client.delete(key)
    finally:
        store.close()


def _delete_kombu_keys(channel: Any, queue: str) -> None:
    """kombu's Redis keys of ``queue``: its lists (one per priority step) and bindings."""
    client = channel.client  # applies the transport's global_keyprefix
    names = [queue, *(f"{queue}{_PRIORITY_SEPARATOR}{step}" for step in range(1, 10))]
    bindings = [channel.keyprefix_queue % queue]
    permanent = getattr(channel, "keyprefix_binding_permanent", None)  # kombu 5.7+
    if permanent:
        bindings.append(permanent % queue)
    client.delete(*names, *bindings)
