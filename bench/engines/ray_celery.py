"""Ray Serve's built-in Celery adapter, used directly with its own worker.

``ray.serve.task_processor.CeleryTaskProcessorAdapter`` is instantiated and
initialized exactly as ``@task_consumer`` does it, with Ray's defaults (threads
pool, late acks, Celery's prefetch multiplier of 4, Redis result backend).
Outside a Serve replica the only thing it lacks is the replica tag it names
its worker after; the consumer process supplies one.
"""

from __future__ import annotations

import os
import signal
import threading
import types
import uuid
from collections.abc import Sequence
from typing import Any

from bench.brokers import REDIS_URL, broker_url
from bench.engines.base import (
    READY_LINE,
    ConsumerCommand,
    TaskFailed,
    Trial,
    TrialOptions,
    bench_consumer,
)
from bench.engines.raw_celery import delete_celery_state
from bench.tasks import HANDLERS


def ray_processor_config(broker: str, queue: str) -> Any:
    """Ray's ``TaskProcessorConfig`` of one run."""
    from ray.serve.schema import CeleryAdapterConfig, TaskProcessorConfig

    return TaskProcessorConfig(
        queue_name=queue,
        adapter_config=CeleryAdapterConfig(broker_url=broker_url(broker), backend_url=REDIS_URL),
    )


def ray_adapter(broker: str, queue: str, concurrency: int) -> Any:
    """Ray's Celery adapter, initialized, with the benchmark tasks registered."""
    from ray.serve.task_processor import CeleryTaskProcessorAdapter

    adapter = CeleryTaskProcessorAdapter(ray_processor_config(broker, queue))
    adapter.initialize(consumer_concurrency=concurrency)
    for name, function in HANDLERS.items():
        adapter.register_task_handle(function, name)  # type: ignore[no-untyped-call]
    return adapter


class RayCeleryTrial(Trial):
    """Ray's built-in Celery adapter on a fresh queue."""

    def __init__(self, broker: str, options: TrialOptions) -> None:
        self.broker = broker
        self.queue = f"bench-ray-{options.run_id}"
        self.concurrency = options.concurrency
        self.adapter = ray_adapter(broker, self.queue, options.concurrency)
        self.sent: list[str] = []

    def enqueue(self, task: str, args: Sequence[Any] = ()) -> str:
        task_id = str(self.adapter.enqueue_task_sync(task, args=list(args)).id)
        self.sent.append(task_id)
        return task_id

    def succeeded(self, task_id: str) -> bool:
        status = self.adapter.get_task_status_sync(task_id).status
        if status == "SUCCESS":
            return True
        if status in ("FAILURE", "REVOKED"):
            raise TaskFailed(f"task {task_id} ended {status}")
        return False

    def consumer(self) -> ConsumerCommand:
        return bench_consumer(
            "ray_celery", broker=self.broker, queue=self.queue, concurrency=self.concurrency
        )

    def close(self) -> None:
        app = self.adapter._app
        try:
            delete_celery_state(app, self.broker, self.queue, self.sent)
        finally:
            app.close()


def consume(broker: str, queue: str, concurrency: int) -> None:
    """The consumer process: Ray's adapter and its worker thread until SIGTERM."""
    import ray.serve.task_processor as ray_task_processor
    from celery import signals

    tag = f"bench-{uuid.uuid4().hex[:8]}"
    # Outside a replica, the adapter lacks only the tag it names its worker after.
    ray_task_processor.get_replica_context = lambda: types.SimpleNamespace(replica_tag=tag)  # type: ignore[attr-defined,assignment,return-value]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signals.worker_ready.connect(lambda **_: os.write(1, f"{READY_LINE}\n".encode()), weak=False)
    adapter = ray_adapter(broker, queue, concurrency)
    adapter.start_consumer()
    while not stop.wait(0.5):
        pass
    adapter.stop_consumer(timeout=10)
    os._exit(0)
