"""RQ's worker, embedded in a thread of the replica's process.

:class:`EmbeddedWorker` is an RQ ``SimpleWorker``: it runs RQ's own work loop
(registration in ``rq:workers``, heartbeats, suspension by ``rq suspend``,
fetching with ``BLMOVE`` into the intermediate list) and executes each job
in its own thread, without forking, so whatever the replica loaded (a model)
serves every task. What differs from a command-line worker:

* it installs no signal handlers and never renames the process (it is not
  the main thread; the replica owns both);
* its job timeouts use :class:`~taskserve_rq.timeouts.ThreadDeathPenalty`,
  not ``SIGALRM``;
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
from collections.abc import Callable
from typing import Any

from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus

from taskserve_rq.timeouts import ThreadDeathPenalty
from taskserve_rq.wire import SERIALIZER, TaskJob

logger = logging.getLogger(__name__)

Delivery = Callable[["EmbeddedWorker", Job, Queue], None]
"""What the worker does with each fetched job."""


class EmbeddedWorker(SimpleWorker):
    """An RQ SimpleWorker for one queue, run by a thread of a taskserve consumer."""

    death_penalty_class = ThreadDeathPenalty
    log_result_lifespan = False
    max_connection_wait_time = 5.0
    """Longest pause between fetch attempts while Redis is unreachable (RQ's
    default, 60 s, would leave a replica idle for a minute after an outage)."""

    def __init__(
        self,
        queue: Queue,
        *,
        name: str,
        deliver: Delivery,
        stopping: threading.Event,
        dequeue_timeout_s: int,
    ) -> None:
        super().__init__(
            [queue],
            name=name,
            connection=queue.connection,
            serializer=SERIALIZER,
            job_class=TaskJob,
            worker_ttl=dequeue_timeout_s + 15,
            log_job_description=False,
            disable_default_exception_handler=True,
        )
        self.log = logger
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
        """Wait for a job in short blocking fetches; None once stopping."""
        while not self._stopping.is_set():
            result: tuple[Job, Queue] | None = super().dequeue_job_and_maintain_ttl(
                self._dequeue_timeout_s, max_idle_time=self._dequeue_timeout_s
            )
            if result is not None:
                return result
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
