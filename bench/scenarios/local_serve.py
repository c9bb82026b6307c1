"""A local Ray and Serve for the Serve scenarios, and the consumer they deploy."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from bench.process import REPOSITORY
from taskserve.serve import task_consumer, task_handler

RAY_LOGICAL_CPUS = 4
"""Logical CPUs of the local Ray; replicas ask for none."""


class BenchConsumer:
    """The handlers of the Serve scenarios."""

    def __init__(self) -> None:
        from ray import serve

        self.replica = str(serve.get_replica_context().replica_tag)

    @task_handler
    def noop(self) -> None:
        """Nothing."""

    @task_handler
    def hold(self, seconds: float) -> str:
        """Sleep ``seconds``; the replica that ran it."""
        time.sleep(seconds)
        return self.replica


def consumer_deployment(config: Any, **options: Any) -> Any:
    """``BenchConsumer`` as a ``@task_consumer`` Serve deployment of ``config``."""
    from ray import serve

    settings: dict[str, Any] = {"ray_actor_options": {"num_cpus": 0}}
    settings.update(options)
    return serve.deployment(name="consumer", **settings)(
        task_consumer(task_processor_config=config)(BenchConsumer)
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def local_serve() -> Iterator[float]:
    """Start Ray and Serve on this machine; yields the seconds that took."""
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPOSITORY) + (os.pathsep + path if path else "")
    started = time.perf_counter()
    ray.init(
        num_cpus=RAY_LOGICAL_CPUS,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        serve.start(
            http_options={"host": "127.0.0.1", "port": _free_port()},
            logging_config={"log_level": "WARNING"},
        )
        yield time.perf_counter() - started
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
