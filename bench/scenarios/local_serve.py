"""A local Ray and Serve for the Serve scenarios, and the consumer they deploy."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from bench.process import REPOSITORY
from taskserve.serve import task_consumer, task_handler
from taskserve_conformance.ports import free_port

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


class RayBenchConsumer:
    """The handlers of the Serve scenarios, for Ray's built-in ``@task_consumer``."""

    def noop(self) -> None:
        """Nothing."""


def consumer_deployment(config: Any, **options: Any) -> Any:
    """``BenchConsumer`` as a taskserve ``@task_consumer`` deployment of ``config``."""
    return _deployment(task_consumer(task_processor_config=config)(BenchConsumer), options)


def ray_consumer_deployment(ray_config: Any, **options: Any) -> Any:
    """``RayBenchConsumer`` as a deployment of Ray's built-in ``@task_consumer``."""
    from ray.serve import task_consumer as ray_task_consumer

    handlers = type(
        "RayBenchConsumer",
        (RayBenchConsumer,),
        {"noop": ray_task_consumer.task_handler(name="noop")(RayBenchConsumer.noop)},
    )
    consumer = ray_task_consumer.task_consumer(task_processor_config=ray_config)(handlers)
    return _deployment(consumer, options)


def _deployment(consumer_class: type, options: dict[str, Any]) -> Any:
    from ray import serve

    settings: dict[str, Any] = {"ray_actor_options": {"num_cpus": 0}}
    settings.update(options)
    return serve.deployment(name="consumer", **settings)(consumer_class)


@contextlib.contextmanager
def local_serve() -> Iterator[float]:
    """Start Ray and Serve on this machine; yields the seconds that took."""
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
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
            http_options={"host": "127.0.0.1", "port": free_port()},
            logging_config={"log_level": "WARNING"},
        )
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        yield time.perf_counter() - started
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
