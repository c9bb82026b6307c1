"""The conformance suite's broker harness for the Celery adapter.

It reaches the brokers with kombu and the state store with redis-py (or
sqlite3, for a ``file://`` state store), never through the adapter: raw bytes
are published as a message with that exact body, dead-letter writes are made
to fail by giving the store's dead-letter keys the wrong Redis type (or with
a temporary sqlite trigger), and cleanup deletes the queues (the dead-letter
queues' broker copies included), exchange and keys a test created. Needs
``taskserve-conformance`` (``pip install 'taskserve-celery[test]'``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kombu.connection import Connection
from kombu.entity import Queue

from taskserve.kit import (
    RedisTaskStore,
    SqliteDialect,
    SqlLedgerStore,
    TaskProcessorConfig,
    secret_value,
)
from taskserve_celery.config import (
    REDIS_PRIORITY_OPTIONS,
    BrokerKind,
    CeleryAdapterConfig,
    StateKind,
)
from taskserve_celery.engine import task_queue
from taskserve_conformance.harness import BrokerHarness
from taskserve_conformance.redis_store import (
    broken_dead_letter_writes,
    dead_letter_queues,
    purge_store,
)

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
UNREACHABLE_AMQP = "amqp://guest:guest@127.0.0.1:1//"


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
    """The queue as the adapter declares it: RabbitMQ refuses a declare of an
    existing queue with other arguments (``x-max-priority``)."""
    return task_queue(name)


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
        if _settings(config).state_kind is StateKind.SQLITE:
            return _broken_sqlite_dead_letters(config)
        return broken_dead_letter_writes(_store(config), config)

    def unreachable_adapter_config(self, config: TaskProcessorConfig) -> Mapping[str, Any]:
        """The same settings pointing at closed ports (or, for a sqlite state
        store, at a database below a regular file, which never opens)."""
        settings = _settings(config)
        if settings.state_kind is StateKind.SQLITE:
            marker = Path(settings.state_path).with_name("unreachable")
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            return {**settings.model_dump(), "backend_url": f"file://{marker}/state"}
        broker = UNREACHABLE_REDIS if settings.broker_kind is BrokerKind.REDIS else UNREACHABLE_AMQP
        return {
            **settings.model_dump(),
            "broker_url": broker,
            "backend_url": UNREACHABLE_REDIS,
        }

    def cleanup(self, config: TaskProcessorConfig) -> None:
        """Delete the queues (the dead-letter queues' broker copies included) and
        exchanges, and the store's keys of ``config``'s queue."""
        settings = _settings(config)
        if settings.state_kind is StateKind.SQLITE:
            _delete_sqlite_state(config)
        else:
            _delete_store_keys(config)
        queues = [config.queue_name, *dead_letter_queues(config)]
        if settings.broker_kind is BrokerKind.FILESYSTEM:
            _delete_files(settings, queues)
            return
        with _broker(settings) as connection:
            channel = connection.default_channel
            for queue in queues:
                if settings.broker_kind is BrokerKind.REDIS:
                    _delete_kombu_keys(channel, queue)
                else:
                    channel.queue_delete(queue)
                    channel.exchange_delete(queue)


@contextlib.contextmanager
def _broken_sqlite_dead_letters(config: TaskProcessorConfig) -> Iterator[None]:
    """Abort every insert into ``config``'s dead-letter queues with a trigger."""
    settings = _settings(config)
    store = SqlLedgerStore(
        SqliteDialect(settings.state_path, 30.0), config.queue_name, result_ttl_s=60.0
    )
    store.ensure_schema()  # the trigger needs the table
    store.close()
    # Conformance queue names are letters, digits and '-': safe to inline.
    listed = ", ".join(f"'{queue}'" for queue in dead_letter_queues(config))
    trigger = f"conformance_broken_dead_letters_{uuid.uuid4().hex}"
    conn = sqlite3.connect(settings.state_path, timeout=30.0, isolation_level=None)
    try:
        conn.execute(
            f"CREATE TRIGGER {trigger} BEFORE INSERT ON dead_letters WHEN NEW.queue IN ({listed})"
            " BEGIN SELECT RAISE(ABORT, 'dead-letter writes are broken by the harness'); END"
        )
        yield
    finally:
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        conn.close()


def _delete_sqlite_state(config: TaskProcessorConfig) -> None:
    """The sqlite state store's rows of ``config``'s queue and dead-letter queues."""
    settings = _settings(config)
    if not Path(settings.state_path).exists():
        return
    store = SqlLedgerStore(
        SqliteDialect(settings.state_path, 30.0), config.queue_name, result_ttl_s=60.0
    )
    try:
        store.purge_queue(dead_letter_queues(config))
    finally:
        store.close()


def _delete_files(settings: CeleryAdapterConfig, queues: list[str]) -> None:
    """The filesystem broker's message files of ``queues``."""
    folder = Path(str((settings.broker_transport_options or {})["data_folder_in"]))
    if not folder.is_dir():
        return
    wanted = {f"{queue}.msg" for queue in queues}
    for path in folder.iterdir():
        if path.name.partition(".")[2] in wanted:
            path.unlink(missing_ok=True)


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
    """kombu's Redis keys of ``queue``: its lists (one per priority step, kombu's
    default steps among them, named with the transport's ``sep``) and bindings."""
    client = channel.client  # applies the transport's global_keyprefix
    steps = REDIS_PRIORITY_OPTIONS["priority_steps"]
    names = [queue, *(f"{queue}{channel.sep}{step}" for step in steps if step)]
    bindings = [channel.keyprefix_queue % queue]
    permanent = getattr(channel, "keyprefix_binding_permanent", None)  # kombu 5.7+
    if permanent:
        bindings.append(permanent % queue)
    client.delete(*names, *bindings)
