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
  every consumer (no separate scheduler process);
* priorities, the way RQ users have them: one RQ queue per priority level
  (:func:`~taskserve.kit.priority_level_name`), fetched from highest first. RQ's own fetch over
  several queues pops without the intermediate list, so the consumer fetches
  with a script instead (the first job of the highest level that has one moves
  to the intermediate list of the level 0 queue) and, finding none, blocks on
  the queue's wake list (``<prefix>:rq:wake:<queue>``), to which every push of
  a job id adds a token.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import redis
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from taskserve.kit import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    PRIORITY_LEVELS,
    TaskMessage,
    priority_level_name,
)
from taskserve_rq import scripts
from taskserve_rq.timeouts import ThreadDeathPenalty
from taskserve_rq.wire import RUN_TASK, SERIALIZER, TaskJob, job_arguments

PROMOTE_BATCH = 500
"""Most scheduled jobs moved to the queue by one promotion."""

RQ_HEARTBEAT_SLACK_S = 60
"""Margin RQ itself adds to a started job's heartbeat deadline."""


def message_level(message: TaskMessage) -> int:
    """The priority level of ``message`` (no priority: the lowest)."""
    return min(max(message.priority or MIN_PRIORITY, MIN_PRIORITY), MAX_PRIORITY)


class RQBroker:
    """RQ's keys of one queue (an RQ queue per priority level), and the atomic
    moves between them."""

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
        self.queues: tuple[Queue, ...] = tuple(
            Queue(
                priority_level_name(queue_name, level),
                connection=connection,
                serializer=SERIALIZER,
                job_class=TaskJob,
                death_penalty_class=ThreadDeathPenalty,
            )
            for level in PRIORITY_LEVELS
        )
        """The RQ queue of each priority level, lowest first."""
        self.queue = self.queues[MIN_PRIORITY]
        self.job_timeout_s = job_timeout_s
        self.job_result_ttl_s = job_result_ttl_s
        self.queue_keys: tuple[str, ...] = tuple(str(q.key) for q in self.queues)
        self.queue_key = self.queue_keys[MIN_PRIORITY]
        self._level_of_name = {
            str(q.name): level for level, q in zip(PRIORITY_LEVELS, self.queues, strict=True)
        }
        self.intermediate_key = IntermediateQueue.get_intermediate_queue_key(self.queue_key)
        self.scheduled_key: str = ScheduledJobRegistry(queue=self.queue).key  # type: ignore[no-untyped-call]
        self.started_keys: tuple[str, ...] = tuple(
            str(StartedJobRegistry(queue=q).key) for q in self.queues
        )
        self.started_key = self.started_keys[MIN_PRIORITY]
        self.leases_key = f"{key_prefix}:rq:leases:{queue_name}"
        self.unleased_key = f"{key_prefix}:rq:unleased:{queue_name}"
        self.wake_key = f"{key_prefix}:rq:wake:{queue_name}"
        self._fetch = connection.register_script(scripts.FETCH)
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

    def level_of(self, origin: str | None) -> int:
        """The priority level whose RQ queue a job's ``origin`` names (0 for any
        other name)."""
        return self._level_of_name.get(origin or "", MIN_PRIORITY)

    def queue_of(self, origin: str | None) -> Queue:
        """The level queue a job's RQ ``origin`` names (level 0 for any other name)."""
        return self.queues[self.level_of(origin)]

    def wake(self, pipeline: redis.client.Pipeline) -> None:
        """Add a token to the wake list, in ``pipeline``, after pushing a job id."""
        pipeline.lpush(self.wake_key, "1")
        pipeline.ltrim(self.wake_key, 0, scripts.WAKE_TOKENS - 1)
        pipeline.expire(self.wake_key, scripts.WAKE_TTL_S)

    # -- producer ------------------------------------------------------------
    def publish(self, message: TaskMessage, *, first: bool = False) -> None:
        """Enqueue ``message`` as an RQ job whose id is the task id, on the queue
        of its priority level (at the head of it with ``first``)."""
        with self.connection.pipeline() as pipe:
            self.queues[message_level(message)].enqueue_call(
                RUN_TASK,
                args=job_arguments(message),
                job_id=message.id,
                timeout=self.job_timeout_s if self.job_timeout_s is not None else -1,
                result_ttl=self.job_result_ttl_s,
                failure_ttl=self.job_result_ttl_s or None,
                description=message.name,
                at_front=first,
                pipeline=pipe,
            )
            self.wake(pipe)
            pipe.execute()

    def unqueue(self, job_id: str) -> int:
        """Take a cancelled job out of the level queues and the scheduled registry;
        return how many entries were removed (0 when a consumer has it)."""
        return int(
            self._unqueue(
                keys=[self.scheduled_key, self.job_key(job_id), *self.queue_keys],
                args=[job_id, self.job_result_ttl_s],
            )
        )

    # -- fetching ----------------------------------------------------------------
    def fetch(self, timeout_s: int) -> tuple[Queue, str] | None:
        """Move the first job id of the highest level that has one to the
        intermediate list, waiting up to ``timeout_s`` for one; return its level
        queue and the id, or None (nothing came, or another worker took it)."""
        keys = [self.intermediate_key, self.wake_key, *self.queue_keys]
        fetched = self._fetch(keys=keys)
        if fetched is None and self.connection.blpop([self.wake_key], timeout_s) is not None:
            fetched = self._fetch(keys=keys)
        if fetched is None:
            return None
        queue_key, job_id = (_text(part) for part in fetched)
        queue = self.queues[self.queue_keys.index(queue_key)]
        return queue, job_id

    def hand_back_unstarted(self, job: Job) -> None:
        """Put a job fetched during a stop back at the head of its level's queue."""
        with self.connection.pipeline() as pipe:
            pipe.lrem(self.intermediate_key, 1, job.id)
            pipe.lpush(self.queue_of(job.origin).key, job.id)
            self.wake(pipe)
            pipe.execute()

    # -- deliveries ------------------------------------------------------------
    def lease(self, member: str, lease_s: float, pipeline: redis.client.Pipeline) -> None:
        """Take the lease of a fetched job (``member`` = ``<job id>:<execution id>``)."""
        pipeline.zadd(self.leases_key, {member: time.time() + lease_s})

    def extend(self, members: Mapping[str, str], lease_s: float) -> None:
        """Renew the leases of deliveries this consumer still holds (``members``:
        lease member to the job's RQ origin), and their entries in their level's
        started registry (so RQ's own cleanup, run by ``rq info`` or a dashboard,
        never takes a live delivery for an abandoned one)."""
        if members:
            deadline = time.time() + lease_s
            by_registry: dict[str, list[str]] = {}
            for member, origin in members.items():
                started_key = self.started_keys[self.level_of(origin)]
                by_registry.setdefault(started_key, []).append(member)
            pipe = self.connection.pipeline(transaction=False)
            pipe.zadd(self.leases_key, dict.fromkeys(members, deadline), xx=True)
            for started_key, held in by_registry.items():
                pipe.zadd(
                    started_key, dict.fromkeys(held, deadline + RQ_HEARTBEAT_SLACK_S), xx=True
                )
            pipe.execute()

    def settle(self, member: str, job_id: str, pipeline: redis.client.Pipeline) -> None:
        """End a delivery (the ack), in ``pipeline``: its fetched entry goes, unless
        its lease had already been reaped (the job was handed to another consumer)."""
        self._settle(
            keys=[self.leases_key, self.intermediate_key], args=[member, job_id], client=pipeline
        )

    def release(self, member: str, job_id: str, where: str | float) -> bool:
        """Hand a delivery back: ``"front"`` or ``"back"`` of its level's queue,
        or at a unix time through the scheduled registry. False if no longer ours."""
        target = where if isinstance(where, str) else repr(float(where))
        return bool(
            self._release(
                keys=[
                    self.leases_key,
                    self.intermediate_key,
                    self.scheduled_key,
                    self.wake_key,
                    *self.queue_keys,
                ],
                args=[member, job_id, target],
            )
        )

    # -- housekeeping ------------------------------------------------------------
    def promote_due(self) -> int:
        """Move scheduled jobs whose time has come to their level's queue; return
        how many."""
        return int(
            self._promote(
                keys=[self.scheduled_key, self.wake_key, *self.queue_keys],
                args=[time.time(), PROMOTE_BATCH],
            )
        )

    def reap(self, grace_s: float) -> list[str]:
        """Hand jobs of dead consumers back to the head of their level's queue;
        return their ids."""
        requeued = self._reap(
            keys=[
                self.intermediate_key,
                self.leases_key,
                self.unleased_key,
                self.wake_key,
                *self.started_keys,
                *self.queue_keys,
            ],
            args=[time.time(), grace_s, Job.redis_job_namespace_prefix],
        )
        return [_text(i) for i in requeued]

    # -- metrics -----------------------------------------------------------------
    def queued(self) -> int:
        """Jobs waiting in the level queues (scheduled ones, sent again later, not
        counted)."""
        pipe = self.connection.pipeline()
        for key in self.queue_keys:
            pipe.llen(key)
        return sum(int(n) for n in pipe.execute())


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
