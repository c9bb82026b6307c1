"""The conformance suite's broker harness for the Celery adapter.

It reaches the brokers with kombu and the state store with redis-py, never
through the adapter: raw bytes are published as a message with that exact
body, dead-letter writes are made to fail by giving the store's dead-letter
keys the wrong Redis type, and cleanup deletes the queue, exchange and keys a
test created. Needs ``taskserve-conformance``
(``pip install 'taskserve-celery[conformance]'``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import redis
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from taskserve import TaskProcessorConfig
from taskserve_celery.config import BrokerKind, CeleryAdapterConfig
from taskserve_conformance.harness import BrokerHarness  # type: ignore[import-untyped,unused-ignore]

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
UNREACHABLE_AMQP = "amqp://guest:guest@127.0.0.1:1//"

_PRIORITY_SEPARATOR = "\x06\x16"
"""kombu's separator between a Redis queue name and its priority step."""


def _settings(config: TaskProcessorConfig) -> CeleryAdapterConfig:
    settings = config.adapter_config
    if not isinstance(settings, CeleryAdapterConfig):
        raise TypeError(f"CeleryHarness needs a Celery config, got {type(settings).__name__}")
    return settings


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)


@contextlib.contextmanager
def _broker(settings: CeleryAdapterConfig) -> Iterator[Any]:
    connection: Any = Connection(  # type: ignore[no-untyped-call]
        str(settings.broker_url),
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


def _dead_letter_keys(config: TaskProcessorConfig) -> list[str]:
    prefix = _settings(config).key_prefix
    queues = [config.failed_task_queue_name, config.unprocessable_task_queue_name]
    return [f"{prefix}:dlq:{q}:{part}" for q in queues if q for part in ("order", "records")]


class CeleryHarness(BrokerHarness):  # type: ignore[misc,unused-ignore]
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

    @contextlib.contextmanager
    def break_dead_letters(self, config: TaskProcessorConfig) -> Iterator[None]:
        """Make the hashes of dead-letter records strings, so every write to them
        fails (the store writes the record first); listing still works."""
        client = _redis(_settings(config).state_url)
        keys = [key for key in _dead_letter_keys(config) if key.endswith(":records")]
        saved = {key: client.dump(key) for key in keys}
        try:
            for key in keys:
                client.set(key, "dead-letter writes are broken by the harness")
            yield
        finally:
            for key, dumped in saved.items():
                client.delete(key)
                if dumped is not None:
                    client.restore(key, 0, dumped)
            client.close()

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
        store = _redis(settings.state_url)
        try:
            _delete_store_keys(store, config)
        finally:
            store.close()
        with _broker(settings) as connection:
            channel = connection.default_channel
            if settings.broker_kind is BrokerKind.REDIS:
                _delete_kombu_keys(channel, config.queue_name)
            else:
                channel.queue_delete(config.queue_name)
                channel.exchange_delete(config.queue_name)


def _delete_store_keys(client: redis.Redis, config: TaskProcessorConfig) -> None:
    """The store's keys of ``config``'s queue: tasks, leases, idempotency keys,
    dead letters, delayed retries and kombu's unacked index (other queues under
    the same prefix are kept)."""
    prefix = _settings(config).key_prefix
    queue = config.queue_name
    client.delete(f"{prefix}:running:{queue}", *_dead_letter_keys(config))
    for pattern in (f"{prefix}:idem:{queue}:*", f"{prefix}:celery:{queue}:*"):
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)
    for key in client.scan_iter(match=f"{prefix}:task:*", count=1000):
        owner = client.hget(key, "queue")
        if owner == queue.encode() or owner is None:
            client.delete(key)  # no queue: the record of an undecodable dead letter


def _delete_kombu_keys(channel: Any, queue: str) -> None:
    """kombu's Redis keys of ``queue``: its lists (one per priority step) and bindings."""
    client = channel.client  # applies the transport's global_keyprefix
    names = [queue, *(f"{queue}{_PRIORITY_SEPARATOR}{step}" for step in range(1, 10))]
    bindings = [channel.keyprefix_queue % queue]
    permanent = getattr(channel, "keyprefix_binding_permanent", None)  # kombu 5.7+
    if permanent:
        bindings.append(permanent % queue)
    client.delete(*names, *bindings)
