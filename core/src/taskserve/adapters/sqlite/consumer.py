"""The sqlite adapter's consumer: a fetch thread, a worker pool, a lease keeper.

Rows are fetched only when a worker slot is free, so nothing is ever fetched
and left waiting (prefetch never exceeds concurrency), and a stop has no
unstarted tasks to hand back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from taskserve.adapters.sqlite.store import Claimed, SqliteStore
from taskserve.config import TaskProcessorConfig
from taskserve.execution import DeliveryRecorder, TaskRunner
from taskserve.leases import LeaseKeeper
from taskserve.models import DeadLetter, TaskError
from taskserve.serialization import TaskMessage
from taskserve.states import TaskState

logger = logging.getLogger(__name__)

_REDELIVERY_DELAY_S = 1.0
"""Pause before a delivery whose outcome could not be recorded is tried again."""


class _RowRecorder(DeliveryRecorder):
    """Records one delivery's steps on its row."""

    def __init__(self, store: SqliteStore, row_id: str, ttl_s: float) -> None:
        self._store = store
        self._row_id = row_id
        self._ttl_s = ttl_s

    def mark_started(self, message: TaskMessage, attempt: int) -> bool:
        return self._store.start(self._row_id, self._ttl_s)

    def record_success(self, message: TaskMessage, result: Any, attempt: int) -> None:
        self._store.finish(self._row_id, TaskState.SUCCESS, self._ttl_s, result=json.dumps(result))

    def record_retry(
        self, message: TaskMessage, error: TaskError, attempt: int, delay_s: float
    ) -> None:
        self._store.schedule_retry(self._row_id, error, delay_s, self._ttl_s)

    def record_failure(
        self, message: TaskMessage, error: TaskError, attempt: int, dead_letter: DeadLetter | None
    ) -> None:
        self._store.finish(
            self._row_id,
            TaskState.FAILURE,
            self._ttl_s,
            error=error,
            dead_letter=dead_letter,
            attempts=attempt,
        )

    def record_cancelled(self, message: TaskMessage, attempt: int) -> None:
        self._store.finish(self._row_id, TaskState.CANCELLED, self._ttl_s)

    def record_unprocessable(
        self, message: TaskMessage | None, error: TaskError, dead_letter: DeadLetter | None
    ) -> None:
        self._store.finish(
            self._row_id, TaskState.FAILURE, self._ttl_s, error=error, dead_letter=dead_letter
        )


class SqliteConsumer:
    """Consumes one queue of a database in background threads."""

    def __init__(
        self,
        store: SqliteStore,
        config: TaskProcessorConfig,
        runner: TaskRunner,
        concurrency: int,
        poll_interval_s: float,
    ) -> None:
        self._store = store
        self._config = config
        self._runner = runner
        self._concurrency = concurrency
        self._poll_interval_s = poll_interval_s
        self.owner = f"consumer-{uuid.uuid4()}"
        self._slots = threading.Semaphore(concurrency)
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._active = 0
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="taskserve-sqlite-worker")
        self._fetcher = threading.Thread(
            target=self._fetch_loop, name="taskserve-sqlite-fetch", daemon=True
        )
        self._keeper = LeaseKeeper(
            runner,
            config.lease_s,
            extend=lambda ids: store.extend_leases(ids, self.owner, config.lease_s),
            cancel_requested=store.cancel_requested,
            housekeeping=store.purge_expired,
            name="taskserve-sqlite-leases",
        )

    def start(self) -> None:
        """Start fetching and keeping leases."""
        self._fetcher.start()
        self._keeper.start()

    def alive(self) -> bool:
        """Whether the fetch and lease threads are running."""
        return self._fetcher.is_alive() and self._keeper.alive() and not self._stopping.is_set()

    def stop(self, timeout: float) -> None:
        """Stop fetching, wait up to ``timeout`` s for running tasks, then hand
        any still running back to the queue."""
        self._stopping.set()
        self._fetcher.join()
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active and time.monotonic() < deadline:
                self._idle.wait(max(deadline - time.monotonic(), 0.0))
        leftover = self._runner.running_task_ids()
        if leftover:
            logger.warning(
                "taskserve: %d task(s) still running after the %.1fs graceful timeout were "
                "handed back to queue '%s'",
                len(leftover),
                timeout,
                self._config.queue_name,
            )
            self._store.release(leftover, self.owner, 0.0, uncount=False)
        self._keeper.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- threads -----------------------------------------------------------
    def _fetch_loop(self) -> None:
        wait = 0.001
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=0.1):
                continue
            try:
                claimed = self._store.claim(
                    self._config.queue_name, self.owner, self._config.lease_s
                )
            except Exception:
                logger.exception("taskserve: fetching from '%s' failed", self._config.queue_name)
                claimed = None
            if claimed is None:
                self._slots.release()
                self._stopping.wait(wait)
                wait = min(wait * 2, self._poll_interval_s)
                continue
            wait = 0.001
            with self._idle:
                self._active += 1
            self._pool.submit(self._deliver, claimed)

    def _deliver(self, claimed: Claimed) -> None:
        recorder = _RowRecorder(self._store, claimed.row_id, self._config.result_ttl_s)
        try:
            self._runner.process(claimed.payload, claimed.attempt, recorder)
        except Exception:
            logger.exception(
                "taskserve: the outcome of task %s could not be recorded; it will be "
                "delivered again",
                claimed.row_id,
            )
            try:
                self._store.release([claimed.row_id], self.owner, _REDELIVERY_DELAY_S, uncount=True)
            except Exception:
                logger.exception("taskserve: could not hand task %s back", claimed.row_id)
        finally:
            self._slots.release()
            with self._idle:
                self._active -= 1
                self._idle.notify_all()
