"""Publishing what a ledger store says still needs a message.

Adapters whose messages travel through an engine (Celery, Dramatiq, RQ) keep
every task's record in a :class:`~taskserve.engine.store.LedgerStore` before
its message exists. Their consumers run one :class:`Reconciler` each; at
most one of them per queue acts at a time (the store's lock), every
``every_s`` seconds. Each tick it takes from the store the tasks to publish
now and publishes them through the adapter:

* retries and hand-backs whose time came (``due``): the one way a retry's
  next delivery is sent, whatever the engine;
* tasks whose consumer stopped renewing the lease more than ``lease_grace_s``
  ago (``lease``): delivered again within the lease plus that grace, even where
  the engine would wait longer or never redeliver;
* tasks whose message was never claimed (``lost``): later messages of the
  queue's lowest priority were claimed more than ``claim_bound_s`` ago, or the
  engine's queue is empty. This closes every window in which an engine can lose a message.

Tasks published again after a crash or a loss go through ``publish_first``
where the engine has one (the head of the queue), so they run before a
backlog that was enqueued after them; due retries join the tail. A message
published at the head carries no publish number (``TaskMessage.seq``): begun
before messages published earlier, it must not mark them as passed, which
would publish the whole backlog again as lost.

A task published twice runs at most once at a time: the store's ``begin``
refuses a delivery of a task another delivery holds a live lease on, and
status never leaves a terminal state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from taskserve.config import TaskProcessorConfig
from taskserve.engine.store import LedgerStore
from taskserve.errors import TaskNotFound
from taskserve.serialization import TaskMessage

logger = logging.getLogger("taskserve.reconciler")


def claim_bound_s(lease_s: float) -> float:
    """How long a published message may go unclaimed after later ones were
    claimed before it counts as lost: long enough for a consumer that died
    holding it to lose it back to the engine (about one lease)."""
    return 2 * lease_s + 2.0


def lease_grace_s(lease_s: float) -> float:
    """How long after a running task's lease ran out it is published again: a
    moment, so that a consumer that was only slow to renew is not overtaken."""
    return min(0.25, lease_s / 4)


class Reconciler:
    """Publishes the tasks a ledger store hands out; see the module docstring."""

    def __init__(
        self,
        store: LedgerStore,
        config: TaskProcessorConfig,
        publish: Callable[[TaskMessage], None],
        engine_depth: Callable[[], int] | None = None,
        publish_first: Callable[[TaskMessage], None] | None = None,
    ) -> None:
        self._store = store
        self._publish = publish
        self._publish_first = publish_first
        self._engine_depth = engine_depth
        self.claim_bound_s = claim_bound_s(config.lease_s)
        self.lease_grace_s = lease_grace_s(config.lease_s)
        self.every_s = min(max(config.lease_s / 8, 0.1), 0.25)
        self._last = 0.0
        self.published = 0
        """Tasks this reconciler published (due retries included)."""

    def tick(self) -> int:
        """Publish what is due now (at most every ``every_s``); return how many."""
        now = time.monotonic()
        if now - self._last < self.every_s:
            return 0
        self._last = now
        empty = False
        if self._engine_depth is not None:
            try:
                empty = self._engine_depth() == 0
            except Exception:
                logger.debug("taskserve: reading the engine's queue depth failed", exc_info=True)
        wanted = self._store.reconcile(
            claim_bound_s=self.claim_bound_s,
            lease_grace_s=self.lease_grace_s,
            engine_empty=empty,
            every_s=self.every_s,
        )
        published = 0
        for item in wanted:
            try:
                message = self._store.message(item.task_id)
            except TaskNotFound:
                continue
            try:
                if item.reason == "due" or self._publish_first is None:
                    self._publish(message.with_seq(item.seq))
                else:
                    # Begun out of order, a message at the head must not move the
                    # ledger's mark of what was claimed: it carries no number.
                    self._publish_first(message.with_seq(None))
            except Exception:
                # The ledger still has it (unclaimed under its new number): a later
                # tick publishes it again once later messages pass it.
                logger.warning(
                    "taskserve: could not publish task %s (%s); trying again later",
                    item.task_id,
                    item.reason,
                    exc_info=True,
                )
                continue
            published += 1
            if item.reason != "due":
                logger.warning(
                    "taskserve: published task %s of queue '%s' again: %s",
                    item.task_id,
                    message.queue_name,
                    "its consumer stopped renewing the lease"
                    if item.reason == "lease"
                    else "its message was never claimed",
                )
        self.published += published
        return published
