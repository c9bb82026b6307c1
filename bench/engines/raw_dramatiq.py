"""Raw Dramatiq: its worker with the default middleware and a Redis result backend.

The settings match taskserve-dramatiq's consumer: the same broker, the run's
number of worker threads, a prefetch of one message per thread, the same idle
poll (``worker_timeout``), and delivery confirms on RabbitMQ. Dramatiq keeps
no task status, so its ``Results`` middleware stores every result in Redis
(``store_results``) to make SUCCESS visible.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

from bench.brokers import REDIS, REDIS_URL, pika_url
from bench.engines.adapters import DRAMATIQ_WORKER_TIMEOUT_S
from bench.engines.base import (
    READY_LINE,
    ConsumerCommand,
    TaskFailed,
    Trial,
    TrialOptions,
    bench_consumer,
)
from bench.tasks import HANDLERS


def build_broker(broker: str, run_id: str, queue: str) -> tuple[Any, Any, dict[str, Any]]:
    """(Dramatiq broker, result backend, actors by task name) of one run."""
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend

    raw: Any
    if broker == REDIS:
        raw = RedisBroker(url=REDIS_URL, namespace=f"bench-raw-{run_id}")  # type: ignore[no-untyped-call]
    else:
        raw = RabbitmqBroker(url=pika_url(), confirm_delivery=True)
    backend = RedisBackend(url=REDIS_URL, namespace=f"bench-raw-results-{run_id}")
    raw.add_middleware(Results(backend=backend, store_results=True))  # type: ignore[no-untyped-call]
    actors = {
        name: dramatiq.actor(broker=raw, actor_name=name, queue_name=queue)(function)
        for name, function in HANDLERS.items()
    }
    return raw, backend, actors


class RawDramatiqTrial(Trial):
    """Raw Dramatiq on a fresh queue."""

    def __init__(self, broker: str, options: TrialOptions) -> None:
        self.broker_name = broker
        self.run_id = options.run_id
        self.queue = f"bench-raw-{options.run_id}"
        self.concurrency = options.concurrency
        self.broker, self.backend, self.actors = build_broker(broker, self.run_id, self.queue)
        self.messages: dict[str, Any] = {}

    def enqueue(self, task: str, args: Sequence[Any] = ()) -> str:
        message = self.actors[task].send(*args)
        self.messages[message.message_id] = message
        return str(message.message_id)

    def succeeded(self, task_id: str) -> bool:
        from dramatiq.results import ResultFailure, ResultMissing

        try:
            self.backend.get_result(self.messages[task_id])
        except ResultMissing:
            return False
        except ResultFailure as e:
            raise TaskFailed(f"task {task_id} failed: {e}") from e
        return True

    def consumer(self) -> ConsumerCommand:
        return bench_consumer(
            "raw_dramatiq",
            broker=self.broker_name,
            run_id=self.run_id,
            queue=self.queue,
            concurrency=self.concurrency,
        )

    def close(self) -> None:
        try:
            self._delete()
        finally:
            self.broker.close()
            self.backend.client.close()

    def _delete(self) -> None:
        results = self.backend.client
        for key in results.scan_iter(match=f"bench-raw-results-{self.run_id}*", count=1000):
            results.delete(key)
        if self.broker_name == REDIS:
            client = self.broker.client
            for key in client.scan_iter(match=f"bench-raw-{self.run_id}:*", count=1000):
                client.delete(key)
            return
        channel = self.broker.channel
        for name in (self.queue, f"{self.queue}.DQ", f"{self.queue}.XQ"):
            with contextlib.suppress(Exception):
                channel.queue_delete(name)


def consume(broker: str, run_id: str, queue: str, concurrency: int) -> None:
    """The consumer process: a Dramatiq worker until SIGTERM."""
    import dramatiq

    raw, _, _ = build_broker(broker, run_id, queue)
    worker = dramatiq.Worker(
        raw, worker_threads=concurrency, worker_timeout=int(DRAMATIQ_WORKER_TIMEOUT_S * 1000)
    )
    worker.queue_prefetch = concurrency
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    os.write(1, f"{READY_LINE}\n".encode())
    while not stop.wait(0.5):
        pass
    worker.stop(timeout=10_000)
    raw.close()
