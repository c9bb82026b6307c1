"""One taskserve queue on RQ: publishing jobs and moving fetched ones.

RQ keeps a queue as a Redis list of job ids (``rq:queue:<name>``) and each
job as a hash (``rq:job:<id>``). A worker fetches with ``BLMOVE`` into the
queue's intermediate list, where the id stays until its delivery ends. This
module adds what RQ lacks for taskserve's promises:

* a lease per delivery (``<prefix>:rq:leases:<queue>``, a zset of
  ``<job id>:<execution id>`` by deadline), renewed while the consumer lives;
* a reaper that hands jobs of dead consumers back to the queue head once their
  lease runs out, instead of RQ's move to the failed registry;
* delayed redelivery through RQ's scheduled registry, promoted atomically by
  every consumer (no separate scheduler process).
"""

from __future__ import annotations

import time

import redis
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from taskserve.kit import TaskMessage
from taskserve_rq import scripts
from taskserve_rq.timeouts import ThreadDeathPenalty
from taskserve_rq.wire import RUN_TASK, SERIALIZER, TaskJob, job_arguments

PROMOTE_BATCH = 500
"""Most scheduled jobs moved to the queue by one promotion."""

RQ_HEARTBEAT_SLACK_S = 60
"""Margin RQ itself adds to a started job's heartbeat deadline."""


class RQBroker:
    """RQ's keys of one queue, and the atomic moves between them."""

    def __init__(
        self,
        connection: redis.Redis,
        queue_name: str,
        *,
        key_prefix: str,
        job_timeout_s: int | None,
        job_result_ttl_s: int,
    ) -> None:
        self.connection = connection
        self.queue = Queue(
            queue_name,
            connection=connection,
            serializer=SERIALIZER,
            job_class=TaskJob,
            death_penalty_class=ThreadDeathPenalty,
        )
        self.job_timeout_s = job_timeout_s
        self.job_result_ttl_s = job_result_ttl_s
        self.queue_key: str = self.queue.key
        self.intermediate_key = IntermediateQueue.get_intermediate_queue_key(self.queue_key)
        self.scheduled_key: str = ScheduledJobRegistry(queue=self.queue).key  # type: ignore[no-untyped-call]
        self.started_key: str = StartedJobRegistry(queue=self.queue).key
        self.leases_key = f"{key_prefix}:rq:leases:{queue_name}"
        self.unleased_key = f"{key_prefix}:rq:unleased:{queue_name}"
        self._settle = connection.register_script(scripts.SETTLE)
        self._release = connection.register_script(scripts.RELEASE)
        self._promote = connection.register_script(scripts.PROMOTE)
        self._unqueue = connection.register_script(scripts.UNQUEUE)
        self._reap = connection.register_script(scripts.REAP)

    @property
    def name(self) -> str:
        """The queue name."""
        return str(self.queue.name)

    def job_key(self, job_id: str) -> str:
        """Key of a job's hash."""
        return str(Job.key_for(job_id))

    # -- producer ------------------------------------------------------------
    def publish(self, message: TaskMessage, *, first: bool = False) -> None:
        """Enqueue ``message`` as an RQ job whose id is the task id (at the head
        of the queue with ``first``)."""
        self.queue.enqueue_call(
            RUN_TASK,
            args=job_arguments(message),
            job_id=message.id,
            timeout=self.job_timeout_s if self.job_timeout_s is not None else -1,
            result_ttl=self.job_result_ttl_s,
            failure_ttl=self.job_result_ttl_s or None,
            description=message.name,
            at_front=first,
        )

    def unqueue(self, job_id: str) -> int:
        """Take a cancelled job out of the queue and the scheduled registry;
        return how many entries were removed (0 when a consumer has it)."""
        return int(
            self._unqueue(
                keys=[self.queue_key, self.scheduled_key, self.job_key(job_id)],
                args=[job_id, self.job_result_ttl_s],
            )
        )

    # -- deliveries ------------------------------------------------------------
    def lease(self, member: str, lease_s: float, pipeline: redis.client.Pipeline) -> None:
        """Take the lease of a fetched job (``member`` = ``<job id>:<execution id>``)."""
        pipeline.zadd(self.leases_key, {member: time.time() + lease_s})

    def extend(self, members: list[str], lease_s: float) -> None:
        """Renew the leases of deliveries this consumer still holds, and their
        entries in RQ's started registry (so RQ's own cleanup, run by ``rq info``
        or a dashboard, never takes a live delivery for an abandoned one)."""
        if members:
            deadline = time.time() + lease_s
            pipe = self.connection.pipeline(transaction=False)
            pipe.zadd(self.leases_key, dict.fromkeys(members, deadline), xx=True)
            pipe.zadd(
                self.started_key,
                dict.fromkeys(members, deadline + RQ_HEARTBEAT_SLACK_S),
                xx=True,
            )
            pipe.execute()

    def settle(self, member: str, job_id: str, pipeline: redis.client.Pipeline) -> None:
        """End a delivery (the ack), in ``pipeline``: its fetched entry goes, unless
        its lease had already been reaped (the job was handed to another consumer)."""
        self._settle(
            keys=[self.leases_key, self.intermediate_key], args=[member, job_id], client=pipeline
        )

    def release(self, member: str, job_id: str, where: str | float) -> bool:
        """Hand a delivery back: ``"front"`` or ``"back"`` of the queue, or at a
        unix time through the scheduled registry. False if no longer ours."""
        target = where if isinstance(where, str) else repr(float(where))
        return bool(
            self._release(
                keys=[self.leases_key, self.intermediate_key, self.queue_key, self.scheduled_key],
                args=[member, job_id, target],
            )
        )

    # -- housekeeping ------------------------------------------------------------
    def promote_due(self) -> int:
        """Move scheduled jobs whose time has come to the queue; return how many."""
        return int(
            self._promote(
                keys=[self.scheduled_key, self.queue_key], args=[time.time(), PROMOTE_BATCH]
            )
        )

    def reap(self, grace_s: float) -> list[str]:
        """Hand jobs of dead consumers back to the queue head; return their ids."""
        requeued = self._reap(
            keys=[
                self.queue_key,
                self.intermediate_key,
                self.leases_key,
                self.started_key,
                self.unleased_key,
            ],
            args=[time.time(), grace_s, Job.redis_job_namespace_prefix],
        )
        return [i.decode() if isinstance(i, bytes) else str(i) for i in requeued]

    # -- metrics -----------------------------------------------------------------
    def queued(self) -> int:
        """Jobs waiting in the queue (scheduled ones, sent again later, not counted)."""
        return int(self.connection.llen(self.queue_key))
