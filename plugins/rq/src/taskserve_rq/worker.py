"""RQ's worker, embedded in a thread of the replica's process.

:class:`EmbeddedWorker` is an RQ ``SimpleWorker`` on the queue's priority
levels, highest first: it runs RQ's own work loop (registration in
``rq:workers``, heartbeats, suspension by ``rq suspend``) and executes each
job in its own thread, without forking, so whatever the replica loaded (a
model) serves every task. What differs from a command-line worker:

* it installs no signal handlers and never renames the process (it is not
  the main thread; the replica owns both);
* its job timeouts use :class:`~taskserve_rq.timeouts.ThreadDeathPenalty`,
  not ``SIGALRM``;
* it fetches with :meth:`~taskserve_rq.engine.RQBroker.fetch`: the highest
  level first, like RQ's fetch over several queues, but moving the job id
  into the intermediate list as RQ's ``BLMOVE`` on a single queue does
  (RQ pops from several queues with ``BLPOP``, which loses a fetched job when
  its consumer dies);
* an idle fetch waits at most ``dequeue_timeout_s`` and a stop request ends
  the loop (a command-line worker waits for a signal instead);
* RQ's registry maintenance, which moves jobs of dead workers to the failed
  registry, is replaced by the consumer's reaper, which hands them back to
  the queue;
* executing a job means handing it to the consumer's delivery function,
  which runs it through taskserve's runner.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus

from taskserve_rq.timeouts import ThreadDeathPenalty
from taskserve_rq.wire import SERIALIZER, TaskJob

logger = logging.getLogger(__name__)

Delivery = Callable[["EmbeddedWorker", Job, Queue], None]
"""What the worker does with each fetched job."""

Fetch = Callable[[int], tuple[Queue, str] | None]
"""One fetch waiting up to the given seconds: the job id and its queue, or None."""


class EmbeddedWorker(SimpleWorker):
    """An RQ SimpleWorker for one queue's priority levels, run by a thread of a
    taskserve consumer."""

    death_penalty_class = ThreadDeathPenalty
    log_result_lifespan = False
    max_connection_wait_time = 5.0
    """Longest pause between fetch attempts while Redis is unreachable (RQ's
    default, 60 s, would leave a replica idle for a minute after an outage)."""

    def __init__(
        self,
        queues: Sequence[Queue],
        *,
        name: str,
        fetch: Fetch,
        deliver: Delivery,
        stopping: threading.Event,
        dequeue_timeout_s: int,
    ) -> None:
        """``queues``: the level queues, highest first, as ``fetch`` takes from them."""
        super().__init__(
            list(queues),
            name=name,
            connection=queues[0].connection,
            serializer=SERIALIZER,
            job_class=TaskJob,
            worker_ttl=dequeue_timeout_s + 15,
            log_job_description=False,
            disable_default_exception_handler=True,
        )
        self.log = logger
        self._fetch = fetch
        self._deliver = deliver
        self._stopping = stopping
        self._dequeue_timeout_s = dequeue_timeout_s

    # -- what a thread of a replica must not do ------------------------------
    def _install_signal_handlers(self) -> None:
        """No signal handlers: only the main thread may install them, and the
        replica's process owns its signals. Stopping goes through ``stopping``."""

    def procline(self, message: str) -> None:
        """Leave the replica's process title alone."""

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        """Register the worker; leaves logging set-up to the application and
        does not subscribe to RQ's command channel (taskserve cancels through
        its task store)."""
        self.register_birth()  # type: ignore[no-untyped-call]
        self.log.debug("RQ worker %s started on %s", self.name, ", ".join(self.queue_names()))
        self.set_state(WorkerStatus.STARTED)

    def run_maintenance_tasks(self) -> None:
        """Skip RQ's registry cleaning: it would fail jobs whose consumer died.
        The consumer's reaper hands those back to the queue instead."""
        self.last_cleaned_at = now()  # type: ignore[assignment]

    # -- fetching and executing -------------------------------------------------
    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """Wait for a job, the highest priority level first, in blocking fetches
        of at most ``dequeue_timeout_s``; None once stopping. While Redis cannot
        be reached, fetch again after a pause of at most
        ``max_connection_wait_time``."""
        self.set_state(WorkerStatus.IDLE)
        pause_s = 1.0
        while not self._stopping.is_set():
            try:
                self.heartbeat()
                fetched = self._fetch(self._dequeue_timeout_s)
                pause_s = 1.0
                if fetched is None:
                    continue
                queue, job_id = fetched
                job = self.job_class.fetch(
                    job_id, connection=self.connection, serializer=self.serializer
                )
            except NoSuchJobError:
                continue  # deleted meanwhile; the reaper drops its fetched entry
            except redis.ConnectionError as e:
                self.log.error(
                    "taskserve: RQ worker %s cannot reach Redis (%s); fetching again in %.0fs",
                    self.name,
                    e,
                    pause_s,
                )
                self._stopping.wait(pause_s)
                pause_s = min(pause_s * 2, self.max_connection_wait_time)
                continue
            self.heartbeat()
            self.log.debug("RQ worker %s fetched job %s from %s", self.name, job.id, queue.name)
            return job, queue
        return None

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run ``job`` in this thread through the consumer."""
        self._deliver(self, job, queue)

    def begin_execution(self, job: Job, lease: Callable[[str, Any], None]) -> str:
        """Record the start of a job as RQ does (execution in the started
        registry, job STARTED, worker BUSY) and take the consumer's lease, in
        one transaction. Returns the lease member ``<job id>:<execution id>``."""
        with self.connection.pipeline() as pipe:
            ttl = self.get_heartbeat_ttl(job)
            self.execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            member = str(self.execution.composite_key)
            lease(member, pipe)
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            self.set_current_job_id(job.id, pipeline=pipe)
            self.heartbeat(ttl, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.execute()
        return member
