"""The RQ adapter's consumer: N embedded RQ workers, on the kit's consumer base.

Concurrency N means N :class:`~taskserve_rq.worker.EmbeddedWorker` threads,
each fetching one job at a time, from the highest priority level that has one,
into RQ's intermediate list: a job is fetched only by an idle worker, so
prefetch never exceeds the concurrency.

Each delivery of a job:

1. is leased (``<job id>:<execution id>`` in the leases zset, deadline one
   lease ahead) in the same transaction in which RQ records it as started;
2. runs through :meth:`~taskserve.kit.ConsumerBase.run_inline` in the worker's
   thread: begun in the task store, run, recorded;
3. is settled only after that: its lease and intermediate entry are dropped
   and RQ's bookkeeping written (``_end_job``), in one transaction. A retry
   waits in the store's ledger, which enqueues the job again when it is due.

Housekeeping promotes jobs RQ scheduled (deliveries sent again after a pause)
and reaps jobs whose consumer died (their lease ran out): they go back to the
queue head, while the ledger publishes the task again too; the duplicate is
settled without running.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry
from rq.utils import now, utcformat

from taskserve.kit import (
    MAX_TICK_S,
    ConsumerBase,
    Delivery,
    Outcome,
    Settlement,
    TaskMessage,
    TaskProcessorConfig,
    TaskRunner,
    TaskStore,
)
from taskserve_rq.engine import RQBroker
from taskserve_rq.wire import decode_job_data
from taskserve_rq.worker import EmbeddedWorker

logger = logging.getLogger(__name__)

MAX_RESTART_DELAY_S = 30.0
"""Longest wait before a worker whose loop ended (Redis went away) starts again."""

_RQ_STATUS = {
    Outcome.SUCCEEDED: JobStatus.FINISHED,
    Outcome.FAILED: JobStatus.FAILED,
    Outcome.UNPROCESSABLE: JobStatus.FAILED,
    Outcome.CANCELLED: JobStatus.CANCELED,
    Outcome.SKIPPED: JobStatus.CANCELED,
}


@dataclass
class _Job:
    """The engine's part of a delivery: the worker, the job and its lease."""

    worker: EmbeddedWorker
    job: Job
    member: str
    released: bool = False
    """Handed back to RQ already (sent again later): only bookkeeping is left."""
    waits_as: JobStatus = JobStatus.QUEUED


class RQConsumer(ConsumerBase):
    """Consumes one queue with embedded RQ workers in threads of this process."""

    def __init__(
        self,
        *,
        broker: RQBroker,
        store: TaskStore,
        config: TaskProcessorConfig,
        runner: TaskRunner,
        concurrency: int,
        publish: Callable[[TaskMessage], None],
        publish_first: Callable[[TaskMessage], None],
        time_limits: dict[str, float | None],
        default_time_limit_s: float | None,
        job_result_ttl_s: int,
        dequeue_timeout_s: int,
    ) -> None:
        super().__init__(
            store=store,
            config=config,
            runner=runner,
            concurrency=concurrency,
            name="rq",
            publish=publish,
            publish_first=publish_first,
            engine_depth=broker.queued,
        )
        self._broker = broker
        self._time_limits = time_limits
        self._default_time_limit_s = default_time_limit_s
        self._job_result_ttl_s = job_result_ttl_s
        self._dequeue_timeout_s = dequeue_timeout_s
        self._lock = threading.Lock()
        self._restarting = 0
        self._reap_every_s = max(MAX_TICK_S, config.lease_s / 10)
        self._last_reap = 0.0
        base = f"taskserve-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._workers = [
            EmbeddedWorker(
                broker.queues[::-1],
                name=f"{base}-{index}",
                fetch=broker.fetch,
                deliver=self._execute,
                stopping=self._stopping,
                dequeue_timeout_s=dequeue_timeout_s,
            )
            for index in range(concurrency)
        ]
        self._threads = [
            threading.Thread(
                target=self._work, args=(worker,), name=f"taskserve-rq-worker-{i}", daemon=True
            )
            for i, worker in enumerate(self._workers)
        ]

    # -- the engine's part -------------------------------------------------------
    def _start_engine(self) -> None:
        for thread in self._threads:
            thread.start()

    def _engine_alive(self) -> bool:
        return self._restarting == 0 and all(thread.is_alive() for thread in self._threads)

    def _stop_fetching(self) -> None:
        for worker in self._workers:
            worker._stop_requested = True  # also ends a wait of `rq suspend`

    def _stop_engine(self, abandoned: bool) -> None:
        # Idle workers leave within one fetch timeout; busy ones are abandoned.
        idle_deadline = time.monotonic() + self._dequeue_timeout_s + 1.0
        for worker, thread in zip(self._workers, self._threads, strict=True):
            if worker.execution is None:
                thread.join(max(idle_deadline - time.monotonic(), 0.0))

    def _settle(self, delivery: Delivery, how: Settlement) -> None:
        held: _Job = delivery.handle
        if held.released:
            self._end_job(held, held.waits_as)
        elif how is Settlement.HAND_BACK:
            self._broker.release(held.member, held.job.id, "front")
            self._end_job(held, JobStatus.QUEUED)
        elif delivery.begun is not None and delivery.begun.running_elsewhere:
            # A duplicate of a job another delivery runs: only this delivery ends.
            self._end_job(held, None, settle=True)
        elif delivery.outcome is Outcome.RETRYING or delivery.outcome is None:
            # The ledger enqueues the job again (when its retry is due, or at once
            # for a task handed back at a stop).
            self._end_job(held, JobStatus.SCHEDULED, settle=True)
        else:
            self._end_job(held, delivery.outcome, settle=True)

    def _resend_later(self, delivery: Delivery) -> Settlement:
        held: _Job = delivery.handle
        with self._lock:
            held.released = True
            held.waits_as = JobStatus.SCHEDULED
        try:
            self._broker.release(held.member, held.job.id, time.time() + self.redelivery_delay_s)
        except redis.RedisError:
            logger.exception(
                "taskserve: could not hand job %s back; it is redelivered once its lease runs out",
                held.job.id,
            )
        return Settlement.ACK

    def _extend_engine(self, held: list[Delivery]) -> None:
        members = {d.handle.member: d.handle.job.origin for d in held if not d.handle.released}
        self._broker.extend(members, self.config.lease_s)

    def _housekeeping(self) -> None:
        self._broker.promote_due()
        now_s = time.monotonic()
        if now_s - self._last_reap < self._reap_every_s:
            return
        self._last_reap = now_s
        requeued = self._broker.reap(grace_s=self.config.lease_s)
        if requeued:
            logger.warning(
                "taskserve: %d job(s) of queue '%s' whose consumer stopped renewing its "
                "lease were handed back to the queue: %s",
                len(requeued),
                self._broker.name,
                ", ".join(requeued),
            )

    # -- worker threads ----------------------------------------------------------
    def _work(self, worker: EmbeddedWorker) -> None:
        """Run RQ's work loop; restart it (under a new worker name) with a backoff
        if it ends before a stop, as it does when Redis goes away. The consumer
        reports itself not alive while a worker waits to restart."""
        delay_s, restarts = 1.0, 0
        while True:
            started = time.monotonic()
            try:
                worker.work(with_scheduler=False)
            except Exception:
                logger.exception("taskserve: RQ worker %s failed", worker.name)
            if self._stopping.is_set():
                return
            if time.monotonic() - started > MAX_RESTART_DELAY_S:
                delay_s = 1.0  # it had been working: not a crash loop
            restarts += 1
            logger.error(
                "taskserve: RQ worker %s left its work loop; restarting it in %.0fs",
                worker.name,
                delay_s,
            )
            with self._lock:
                self._restarting += 1
            try:
                if self._stopping.wait(delay_s):
                    return
            finally:
                with self._lock:
                    self._restarting -= 1
            delay_s = min(delay_s * 2, MAX_RESTART_DELAY_S)
            worker.name = f"{worker.name.rsplit('~', 1)[0]}~{restarts}"

    def _execute(self, worker: EmbeddedWorker, job: Job, queue: Queue) -> None:
        """One delivery of ``job``, in the worker's thread (never raises)."""
        try:
            if self._stopping.is_set():
                self._broker.hand_back_unstarted(job)
                return
            member = worker.begin_execution(
                job, lambda m, pipe: self._broker.lease(m, self.config.lease_s, pipe)
            )
            payload = decode_job_data(job.data)
            if isinstance(payload, TaskMessage):
                self._time_limits[payload.id] = self._time_limit(job)
            try:
                self.run_inline(Delivery(_Job(worker, job, member), payload))
            finally:
                if isinstance(payload, TaskMessage):
                    self._time_limits.pop(payload.id, None)
        except Exception:
            logger.exception("taskserve: delivering job %s failed", job.id)
        finally:
            worker.execution = None

    def _time_limit(self, job: Job) -> float | None:
        timeout = job.timeout
        if isinstance(timeout, int | float) and timeout > 0:
            return float(timeout)
        return self._default_time_limit_s

    def _end_job(
        self, held: _Job, outcome: Outcome | JobStatus | None, *, settle: bool = False
    ) -> None:
        """The ack (with ``settle``) and RQ's bookkeeping after a delivery, in one
        transaction: the execution leaves the started registry; a job that ran
        to its end is deleted, or kept with its status for ``job_result_ttl_s``.
        ``outcome`` a JobStatus: the job waits with that status; None: the job
        belongs to another delivery and is left as it is."""
        worker, job = held.worker, held.job
        try:
            with worker.connection.pipeline() as pipe:
                if settle:
                    self._broker.settle(held.member, job.id, pipe)
                worker.cleanup_execution(job, pipeline=pipe)
                if isinstance(outcome, JobStatus):
                    pipe.hset(job.key, "status", outcome.value)
                elif outcome is not None:
                    self._dispose(job, outcome, pipe)
                    if outcome is Outcome.SUCCEEDED:
                        worker.increment_successful_job_count(pipeline=pipe)
                    else:
                        worker.increment_failed_job_count(pipeline=pipe)
                pipe.execute()
        except redis.RedisError:
            logger.warning("taskserve: RQ bookkeeping of job %s failed", job.id, exc_info=True)

    def _dispose(self, job: Job, outcome: Outcome, pipe: Any) -> None:
        ttl = self._job_result_ttl_s
        if ttl == 0:
            pipe.delete(job.key, job.execution_registry.key)
            return
        status = _RQ_STATUS.get(outcome, JobStatus.FAILED)
        registry_class = {
            JobStatus.FINISHED: FinishedJobRegistry,
            JobStatus.CANCELED: CanceledJobRegistry,
        }.get(status, FailedJobRegistry)
        registry_class(queue=self._broker.queue_of(job.origin)).add(job, ttl=ttl, pipeline=pipe)
        pipe.hset(job.key, mapping={"status": status.value, "ended_at": utcformat(now())})
        pipe.expire(job.key, ttl)
