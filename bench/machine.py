"""The machine and software a benchmark ran on."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from importlib import metadata

from bench.brokers import AMQP_URL, POSTGRES_DSN, REDIS_URL

PACKAGES = (
    "taskserve",
    "taskserve-celery",
    "taskserve-dramatiq",
    "taskserve-postgres",
    "taskserve-rq",
    "celery",
    "kombu",
    "dramatiq",
    "rq",
    "redis",
    "pika",
    "psycopg",
    "psycopg-pool",
    "ray",
)


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _redis_version() -> str:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    except Exception as e:
        return f"unreachable ({type(e).__name__})"


def _rabbitmq_version() -> str:
    try:
        from kombu.connection import Connection

        with Connection(AMQP_URL, connect_timeout=2) as connection:  # type: ignore[no-untyped-call]
            connection.connect()
            properties = connection.connection.server_properties
            version = properties.get("version", "?")
            return str(version.decode() if isinstance(version, bytes) else version)
    except Exception as e:
        return f"unreachable ({type(e).__name__})"


def _postgres_version() -> str:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_DSN, connect_timeout=2) as connection:
            return str(connection.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    except Exception as e:
        return f"unreachable ({type(e).__name__})"


def describe() -> dict[str, str]:
    """Cores, memory, OS, Python, package and broker versions, as label -> text."""
    memory = _memory_gib()
    found = {
        "CPU": f"{os.cpu_count()} cores, {_cpu_model()}",
        "memory": f"{memory:.1f} GiB" if memory is not None else "unknown",
        "OS": platform.platform(),
        "Python": sys.version.split()[0],
        "Redis": _redis_version(),
        "RabbitMQ": _rabbitmq_version(),
        "PostgreSQL": _postgres_version(),
    }
    found.update({package: _version(package) for package in PACKAGES})
    return found
