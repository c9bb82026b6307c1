"""Where the brokers are, and whether they answer.

Redis, RabbitMQ and PostgreSQL on localhost by default (the test suite's
brokers); ``TASKSERVE_BENCH_REDIS_URL``, ``TASKSERVE_BENCH_AMQP_URL`` and
``TASKSERVE_BENCH_POSTGRES_DSN`` point elsewhere. Task state of the Celery and Dramatiq systems is kept in Redis on
either broker, as their adapters require.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

REDIS_URL = os.environ.get("TASKSERVE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
"""Redis: a broker, and the state store of every Redis-backed system."""

AMQP_URL = os.environ.get("TASKSERVE_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
"""RabbitMQ, in Celery's URL form (Dramatiq and pika take :func:`pika_url`)."""

POSTGRES_DSN = os.environ.get(
    "TASKSERVE_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""PostgreSQL: the postgres adapter's queue and store, and raw PostgreSQL's queue."""

REDIS = "redis"
RABBITMQ = "rabbitmq"
POSTGRES = "postgres"
SQLITE_FILE = "file"
"""The sqlite adapter's "broker": a database file."""


def broker_url(broker: str) -> str:
    """The URL of ``broker`` (``redis``, ``rabbitmq`` or ``postgres``)."""
    return {REDIS: REDIS_URL, RABBITMQ: AMQP_URL, POSTGRES: POSTGRES_DSN}[broker]


def pika_url(url: str = AMQP_URL) -> str:
    """An AMQP URL as pika reads it: the default vhost ``/`` written ``%2F``."""
    parts = urlsplit(url)
    vhost = parts.path[1:] or "/"
    return parts._replace(path="/" + ("%2F" if vhost == "/" else vhost)).geturl()


def reachable(broker: str, timeout_s: float = 1.0) -> bool:
    """Whether something listens at ``broker``'s host and port (sqlite: always)."""
    if broker == SQLITE_FILE:
        return True
    parts = urlsplit(broker_url(broker))
    port = parts.port or {REDIS: 6379, RABBITMQ: 5672, POSTGRES: 5432}[broker]
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout_s):
            return True
    except OSError:
        return False
