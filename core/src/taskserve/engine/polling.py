"""The consumer of stores that are also the queue (sqlite, PostgreSQL).

One fetch thread claims a task from the :class:`~taskserve.engine.store.QueueStore`
only when a slot is free, so nothing is ever fetched and left waiting
(prefetch never exceeds concurrency) and a stop has next to nothing to hand
back. Between claims of an idle queue it waits on ``wait_for_work`` - a
notification the engine sends when a task is queued (PostgreSQL's
``LISTEN``), or a plain pause - backing off from 1 ms to ``poll_interval_s``;
``stop_waiting`` ends such a wait when the consumer stops. Housekeeping
deletes expired results.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from taskserve.config import TaskProcessorConfig
from taskserve.engine.consumer import ConsumerBase, Delivery, Settlement
from taskserve.engine.runner import TaskRunner
from taskserve.engine.store import QueueStore

logger = logging.getLogger("taskserve.consumer")

WaitForWork = Callable[[float], object]
"""Block up to the given seconds, returning early when work may be there."""


class PollingConsumer(ConsumerBase):
    """Claims tasks from a queue store in a fetch thread and runs them on the pool."""

    def __init__(
        self,
        *,
        store: QueueStore,
        config: TaskProcessorConfig,
        runner: TaskRunner,
        concurrency: int,
        name: str,
        poll_interval_s: float,
        wait_for_work: WaitForWork | None = None,
        stop_waiting: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(
            store=store, config=config, runner=runner, concurrency=concurrency, name=name
        )
        self.queue_store = store
        self._poll_interval_s = poll_interval_s
        self._wait_for_work: WaitForWork = wait_for_work or self._stopping.wait
        self._stop_waiting = stop_waiting
        """Ends a ``wait_for_work`` in progress and releases what it holds."""
        self._fetch_stop = threading.Event()
        self._fetcher = threading.Thread(
            target=self._fetch_loop, name=f"taskserve-{name}-fetch", daemon=True
        )

    # -- the engine's part -------------------------------------------------------
    def _start_engine(self) -> None:
        self._fetcher.start()

    def _stop_fetching(self) -> None:
        self._fetch_stop.set()
        if self._stop_waiting is not None:
            self._stop_waiting()
        if self._fetcher.is_alive():
            self._fetcher.join()

    def _stop_engine(self, abandoned: bool) -> None:
        return None

    def _engine_alive(self) -> bool:
        return self._fetcher.is_alive()

    def _settle(self, delivery: Delivery, how: Settlement) -> None:
        if how is Settlement.HAND_BACK and delivery.task_id is not None:
            # Claimed but never run (a stop came first): the claim did not count.
            self.queue_store.release([delivery.task_id], self.owner, uncount=True)

    # -- the fetch thread ------------------------------------------------------------
    def _fetch_loop(self) -> None:
        wait = 0.001
        while not self._fetch_stop.is_set():
            if not self.wait_for_capacity(0.1):
                continue
            try:
                # The claim counts before the task's name is known: it allows the
                # largest budget, and the runner holds each name to its own.
                claimed = self.queue_store.claim(
                    self.owner, self.config.lease_s, self.runner.attempt_ceiling
                )
            except Exception:
                logger.exception("taskserve: fetching from '%s' failed", self.config.queue_name)
                claimed = None
                wait = self._poll_interval_s
            if claimed is None:
                self._wait_for_work(wait)
                wait = min(wait * 2, self._poll_interval_s)
                continue
            wait = 0.001
            self.offer(
                Delivery(claimed, claimed.payload, task_id=claimed.task_id, begun=claimed.begun)
            )
