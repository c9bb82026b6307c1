"""The RQ adapter's consumer: N embedded RQ workers and a lease keeper.

Concurrency N means N :class:`~taskserve_rq.worker.EmbeddedWorker` threads,
each fetching one job at a time with ``BLMOVE``: a job is fetched only by an
idle worker, so prefetch never exceeds the concurrency.

Each delivery of a job:

1. is leased (``<job id>:<execution id>`` in the leases zset, deadline one
   lease ahead) in the same transaction in which RQ records it as started;
2. is counted in the task store (``begin_delivery``: crashed deliveries count
   toward the attempt budget) and run through taskserve's runner, which
   records status, retries and dead letters in the store;
3. is acknowledged only after that: its lease and intermediate entry are
   dropped (``settle``), or, for a retry, the job moves to RQ's scheduled
   registry for its backoff. If recording failed, the job goes back to the
   queue a moment later, its delivery uncounted.

A :class:`~taskserve.leases.LeaseKeeper` thread renews the leases of the
deliveries held here, relays cancel requests to running handlers, promotes
due retries and reaps jobs whose consumer died (their lease ran out).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry
from rq.utils import now, utcformat

from taskserve.config import TaskProcessorConfig
from taskserve.execution import DeliveryRecorder, Outcome, TaskRunner
from taskserve.leases import MAX_TICK_S, LeaseKeeper
from taskserve.serialization import TaskMessage
from taskserve.stores.redis_store import RedisTaskStore, StoreRecorder
from taskserve_rq.broker import RQBroker
from taskserve_rq.job import decode_job_data
from taskserve_rq.worker import EmbeddedWorker

logger = logging.getLogger(__name__)

REDELIVERY_DELAY_S = 1.0
"""Pause before a delivery whose outcome could not be recorded runs again."""

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
class _Delivery:
    """A job fetched by one of this consumer's workers."""

    job_id: str
    member: str
    released: bool = False
    """Handed back (retry, stop, failed recording): the job is no longer ours to end."""
    waits_as: JobStatus = JobStatus.QUEUED
    """RQ status of a job handed back: queued, or scheduled for later."""


class RQConsumer:
    """Consumes one queue with embedded RQ workers in threads of this process."""

    def __init__(
        self,
        broker: RQBroker,
        store: RedisTaskStore,
        config: TaskProcessorConfig,
        runner: TaskRunner,
        concurrency: int,
        *,
        time_limits: dict[str, float | None],
        default_time_limit_s: float | None,
        job_result_ttl_s: int,
        dequeue_timeout_s: int,
    ) -> None:
        self._broker = broker
        self._store = store
        self._config = config
        self._runner = runner
        self._time_limits = time_limits
        self._default_time_limit_s = default_time_limit_s
        self._job_result_ttl_s = job_result_ttl_s
        self._dequeue_timeout_s = dequeue_timeout_s
        self._lease_s = config.lease_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._held: dict[str, _Delivery] = {}
        self._restarting = 0
        self._reap_every_s = max(MAX_TICK_S, config.lease_s / 10)
        self._last_reap = 0.0
        base = f"taskserve-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._workers = [
            EmbeddedWorker(
                broker.queue,
                name=f"{base}-{index}",
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
        self._keeper = LeaseKeeper(
            runner,
            config.lease_s,
            extend=self._extend,
            cancel_requested=store.cancel_requested,
            housekeeping=self._housekeeping,
            housekeeping_every_s=min(config.lease_s / 3, MAX_TICK_S),
            name="taskserve-rq-leases",
        )

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Start the workers and the lease keeper."""
        self._keeper.start()
        for thread in self._threads:
            thread.start()

    def alive(self) -> bool:
        """Whether every worker thread and the lease keeper run."""
        return (
            not self._stopping.is_set()
            and self._restarting == 0
            and self._keeper.alive()
            and all(thread.is_alive() for thread in self._threads)
        )

    def stop(self, timeout: float) -> None:
        """Stop fetching (a job fetched meanwhile goes back to the queue head),
        wait up to ``timeout`` s for running tasks, then hand the ones still
        running back to the queue so another consumer runs them."""
        self._stopping.set()
        for worker in self._workers:
            worker._stop_requested = True  # also ends a wait of `rq suspend`
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        with self._lock:
            leftover = [d for d in self._held.values() if not d.released]
            for delivery in leftover:
                delivery.released = True
        if leftover:
            logger.warning(
                "taskserve: %d task(s) still running after the %.1fs graceful timeout were "
                "handed back to queue '%s'",
                len(leftover),
                timeout,
                self._broker.name,
            )
        for delivery in leftover:
            try:
                self._broker.release(delivery.member, delivery.job_id, "front")
            except redis.RedisError:
                logger.exception(
                    "taskserve: could not hand job %s back; it is redelivered once its "
                    "lease runs out",
                    delivery.job_id,
                )
        # Idle workers leave within one fetch timeout; busy ones are abandoned.
        idle_deadline = time.monotonic() + self._dequeue_timeout_s + 1.0
        for worker, thread in zip(self._workers, self._threads, strict=True):
            if worker.execution is None:
                thread.join(max(idle_deadline - time.monotonic(), 0.0))
        self._keeper.stop()

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
                self._hand_back_unstarted(job.id)
                return
            self._deliver(worker, job)
        except Exception:
            logger.exception("taskserve: delivering job %s failed", job.id)
        finally:
            worker.execution = None

    def _hand_back_unstarted(self, job_id: str) -> None:
        pipe = self._broker.connection.pipeline()
        pipe.lrem(self._broker.intermediate_key, 1, job_id)
        pipe.lpush(self._broker.queue_key, job_id)
        pipe.execute()

    def _deliver(self, worker: EmbeddedWorker, job: Job) -> None:
        member = worker.begin_execution(
            job, lambda m, pipe: self._broker.lease(m, self._lease_s, pipe)
        )
        delivery = _Delivery(job_id=job.id, member=member)
        with self._lock:
            self._held[member] = delivery
        payload = decode_job_data(job.data)
        message = payload if isinstance(payload, TaskMessage) else None
        try:
            store_recorder = StoreRecorder(
                self._store,
                self._lease_s,
                lambda _message, delay_s: self._reschedule(delivery, delay_s),
            )
            attempt = 1
            recorder: DeliveryRecorder = store_recorder
            if message is not None:
                self._time_limits[message.id] = self._time_limit(job)
                attempt, recorder = store_recorder.begin(message, self._runner)
            try:
                outcome = self._runner.process(payload, attempt, recorder)
            except Exception:
                logger.exception(
                    "taskserve: the outcome of job %s could not be recorded; it will be "
                    "delivered again",
                    job.id,
                )
                self._redeliver_later(delivery, message)
                self._end_job(worker, job, delivery.waits_as)
                return
        finally:
            if message is not None:
                self._time_limits.pop(message.id, None)
            with self._lock:
                self._held.pop(member, None)
        if delivery.released:  # handed back meanwhile: another delivery will end the job
            self._end_job(worker, job, delivery.waits_as)
        else:
            self._end_job(worker, job, outcome, member)

    def _time_limit(self, job: Job) -> float | None:
        timeout = job.timeout
        if isinstance(timeout, int | float) and timeout > 0:
            return float(timeout)
        return self._default_time_limit_s

    def _reschedule(self, delivery: _Delivery, delay_s: float) -> None:
        """Make a failed attempt deliverable again after its backoff (record_retry)."""
        where: str | float = time.time() + delay_s if delay_s > 0 else "back"
        with self._lock:
            delivery.released = True
            delivery.waits_as = JobStatus.QUEUED if where == "back" else JobStatus.SCHEDULED
        self._broker.release(delivery.member, delivery.job_id, where)

    def _redeliver_later(self, delivery: _Delivery, message: TaskMessage | None) -> None:
        with self._lock:
            if delivery.released:
                return
            delivery.released = True
            delivery.waits_as = JobStatus.SCHEDULED
        try:
            if message is not None:
                self._store.release(message.id)
            self._broker.release(delivery.member, delivery.job_id, time.time() + REDELIVERY_DELAY_S)
        except Exception:
            logger.exception(
                "taskserve: could not hand job %s back; it is redelivered once its lease runs out",
                delivery.job_id,
            )

    def _end_job(
        self,
        worker: EmbeddedWorker,
        job: Job,
        outcome: Outcome | JobStatus,
        settle_member: str | None = None,
    ) -> None:
        """The ack (with ``settle_member``) and RQ's bookkeeping after a delivery,
        in one transaction: the execution leaves the started registry; a job that
        ran to its end is deleted, or kept with its status for
        ``job_result_ttl_s``. ``outcome`` a JobStatus: the job was handed back
        and waits with that status, in the queue or the scheduled registry."""
        try:
            with worker.connection.pipeline() as pipe:
                if settle_member is not None:
                    self._broker.settle(settle_member, job.id, pipe)
                worker.cleanup_execution(job, pipeline=pipe)
                if isinstance(outcome, JobStatus):
                    pipe.hset(job.key, "status", outcome.value)
                else:
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
        registry_class(queue=self._broker.queue).add(job, ttl=ttl, pipeline=pipe)
        pipe.hset(job.key, mapping={"status": status.value, "ended_at": utcformat(now())})
        pipe.expire(job.key, ttl)

    # -- lease keeper callbacks ------------------------------------------------------
    def _extend(self, running_task_ids: list[str]) -> None:
        self._store.extend_leases(running_task_ids, self._lease_s)
        with self._lock:
            members = [m for m, d in self._held.items() if not d.released]
        self._broker.extend(members, self._lease_s)

    def _housekeeping(self) -> None:
        self._broker.promote_due()
        now = time.monotonic()
        if now - self._last_reap < self._reap_every_s:
            return
        self._last_reap = now
        requeued = self._broker.reap(grace_s=self._lease_s)
        if requeued:
            logger.warning(
                "taskserve: %d job(s) of queue '%s' whose consumer stopped renewing its "
                "lease were handed back to the queue: %s",
                len(requeued),
                self._broker.name,
                ", ".join(requeued),
            )
