"""Raw RQ: one ``SimpleWorker`` (jobs run in the worker's process) or one
default ``Worker`` (a work horse forked per job).

The settings match taskserve-rq's consumer of concurrency 1 (one RQ worker
fetching one job at a time): the same Redis, RQ's ``JSONSerializer``, RQ's
logging at WARNING. Jobs name their function by import path
(``bench.tasks.noop``); RQ keeps their status (``finished``) for its default
result TTL.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from bench.brokers import REDIS_URL
from bench.engines.base import (
    READY_LINE,
    ConsumerCommand,
    TaskFailed,
    Trial,
    TrialOptions,
    bench_consumer,
)

WORKER_CLASSES = ("SimpleWorker", "Worker")
_QUEUE_KEYS = ("rq:queue:{q}", "rq:queue:{q}:intermediate")
_REGISTRIES = ("wip", "started", "scheduled", "finished", "failed", "canceled", "deferred")


def _queue(name: str) -> Any:
    import redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    return Queue(name, connection=redis.Redis.from_url(REDIS_URL), serializer=JSONSerializer)


class RawRQTrial(Trial):
    """Raw RQ on a fresh queue, consumed by one worker of ``worker_class``."""

    def __init__(self, worker_class: str, options: TrialOptions) -> None:
        if worker_class not in WORKER_CLASSES:
            raise ValueError(f"worker_class must be one of {', '.join(WORKER_CLASSES)}")
        self.worker_class = worker_class
        self.queue = _queue(f"bench-raw-{options.run_id}")
        self.connection = self.queue.connection
        self.worker_name = f"bench-{options.run_id}"
        self.worker_names: list[str] = []
        self.sent: list[str] = []

    def enqueue(self, task: str, args: Sequence[Any] = ()) -> str:
        job = self.queue.enqueue(f"bench.tasks.{task}", *args)
        self.sent.append(job.id)
        return str(job.id)

    def succeeded(self, task_id: str) -> bool:
        status = self.connection.hget(f"rq:job:{task_id}", "status")
        if status == b"finished":
            return True
        if status in (b"failed", b"stopped", b"canceled"):
            raise TaskFailed(f"job {task_id} ended {status.decode()}")
        return False

    def consumer(self) -> ConsumerCommand:
        """A consumer named apart from the others of this queue (RQ refuses a
        second live worker of the same name)."""
        name = f"{self.worker_name}-{len(self.worker_names)}"
        self.worker_names.append(name)
        return bench_consumer(
            "raw_rq", worker_class=self.worker_class, queue=self.queue.name, name=name
        )

    def close(self) -> None:
        client = self.connection
        name = self.queue.name
        keys = [template.format(q=name) for template in _QUEUE_KEYS]
        keys += [f"rq:{registry}:{name}" for registry in _REGISTRIES]
        workers = [w.decode() for w in client.smembers(f"rq:workers:{name}")]
        if workers:  # a worker killed without unregistering
            client.srem("rq:workers", *workers)
        keys += [f"rq:workers:{name}", *(f"rq:worker:{w}" for w in self.worker_names), *workers]
        for job_id in self.sent:
            keys += [f"rq:job:{job_id}", f"rq:results:{job_id}", f"rq:executions:{job_id}"]
            keys.append(f"rq:queue:{name}:intermediate:first_seen:{job_id}")
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        client.srem("rq:queues", f"rq:queue:{name}")
        client.close()


def consume(worker_class: str, queue: str, name: str) -> None:
    """The consumer process: one RQ worker called ``name`` until SIGTERM (warm shutdown)."""
    import rq

    rq_queue = _queue(queue)
    worker = getattr(rq, worker_class)(
        [rq_queue], name=name, connection=rq_queue.connection, serializer=rq_queue.serializer
    )
    worker.log.setLevel(logging.WARNING)
    os.write(1, f"{READY_LINE}\n".encode())
    worker.work(logging_level="WARNING")
