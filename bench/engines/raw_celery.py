"""Raw Celery: its command-line worker in threads mode, late acks, prefetch 1.

The settings match taskserve-celery's consumer: the ``threads`` pool with the
run's concurrency, late acknowledgement, one prefetched message per thread
(prefetch multiplier 1), JSON only, no remote control, events, gossip, mingle
or heartbeat; results in the Redis result backend so SUCCESS is visible. The
functions reading Celery results and deleting Celery's broker state are shared
with Ray's built-in adapter (:mod:`bench.engines.ray_celery`).
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from bench.brokers import REDIS, REDIS_URL, broker_url
from bench.engines.base import (
    READY_LINE,
    ConsumerCommand,
    TaskFailed,
    Trial,
    TrialOptions,
    bench_consumer,
)
from bench.tasks import HANDLERS

_PRIORITY_SEPARATOR = "\x06\x16"
"""kombu's separator between a Redis queue name and its priority step."""


def build_app(broker: str, queue: str, concurrency: int) -> Any:
    """The raw Celery app of one run, with every benchmark task registered."""
    from celery import Celery

    app = Celery(f"bench-raw-{queue}", broker=broker_url(broker), backend=REDIS_URL)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        worker_concurrency=concurrency,
        task_default_queue=queue,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
        broker_connection_retry_on_startup=True,
    )
    for name, function in HANDLERS.items():
        app.task(name=name)(function)
    return app


def task_done(app: Any, task_id: str) -> bool:
    """Whether Celery's result backend holds SUCCESS for ``task_id``."""
    state = app.backend.get_task_meta(task_id).get("status")
    if state == "SUCCESS":
        return True
    if state in ("FAILURE", "REVOKED"):
        raise TaskFailed(f"task {task_id} ended {state}")
    return False


def delete_celery_state(app: Any, broker: str, queue: str, task_ids: Iterable[str]) -> None:
    """Delete the queue (and its exchange and bindings), the results of
    ``task_ids``, and the queue's entries in kombu's shared unacked index."""
    ids = list(task_ids)
    results = app.backend.client
    for start in range(0, len(ids), 1000):
        keys = [app.backend.get_key_for_task(task_id) for task_id in ids[start : start + 1000]]
        if keys:
            results.delete(*keys)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        if broker == REDIS:
            client = channel.client
            names = [queue, *(f"{queue}{_PRIORITY_SEPARATOR}{step}" for step in range(1, 10))]
            bindings = [channel.keyprefix_queue % queue]
            permanent = getattr(channel, "keyprefix_binding_permanent", None)  # kombu 5.7+
            if permanent:
                bindings.append(permanent % queue)
            client.delete(*names, *bindings)
            for tag, entry in client.hgetall("unacked").items():
                if json.loads(entry)[2] == queue:
                    client.hdel("unacked", tag)
                    client.zrem("unacked_index", tag)
        else:
            channel.queue_delete(queue)
            channel.exchange_delete(queue)


class RawCeleryTrial(Trial):
    """Raw Celery on a fresh queue."""

    def __init__(self, broker: str, options: TrialOptions) -> None:
        self.broker = broker
        self.queue = f"bench-raw-{options.run_id}"
        self.concurrency = options.concurrency
        self.app = build_app(broker, self.queue, options.concurrency)
        self.sent: list[str] = []

    def enqueue(self, task: str, args: Sequence[Any] = ()) -> str:
        task_id = str(self.app.send_task(task, args=list(args)).id)
        self.sent.append(task_id)
        return task_id

    def succeeded(self, task_id: str) -> bool:
        return task_done(self.app, task_id)

    def consumer(self) -> ConsumerCommand:
        return bench_consumer(
            "raw_celery", broker=self.broker, queue=self.queue, concurrency=self.concurrency
        )

    def close(self) -> None:
        try:
            delete_celery_state(self.app, self.broker, self.queue, self.sent)
        finally:
            self.app.close()


def consume(broker: str, queue: str, concurrency: int) -> None:
    """The consumer process: Celery's worker until SIGTERM (warm shutdown)."""
    from celery import signals

    app = build_app(broker, queue, concurrency)
    signals.worker_ready.connect(lambda **_: os.write(1, f"{READY_LINE}\n".encode()), weak=False)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            "--prefetch-multiplier=1",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "--loglevel=WARNING",
            f"--hostname=bench-{uuid.uuid4().hex[:8]}@%h",
            "-Q",
            queue,
        ]
    )
