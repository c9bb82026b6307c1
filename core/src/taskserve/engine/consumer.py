"""The consumer base: what every adapter's consumer does, written once.

A consumer of a store-backed adapter takes messages from its engine and runs
each through the :class:`~taskserve.engine.runner.TaskRunner`. What is the
same for every engine lives in :class:`ConsumerBase`:

* the active deliveries and the prefetch bound (never more than
  ``concurrency`` held at once), a pool of daemon threads to run them on;
* the delivery wrapper: decode, ``begin`` in the store (count the attempt,
  start it, or learn that it is finished or running elsewhere), run, record,
  and only then settle the message with the engine. A delivery of a task
  whose lease another delivery holds waits for that lease to run out (at most
  one lease) and begins it then if it was not renewed: an engine that
  redelivers a crashed consumer's messages at once (RabbitMQ) runs them again
  within the lease, not after the ledger's republish behind the backlog;
* what happens when an outcome cannot be recorded: the task is handed back
  uncounted and delivered again after ``redelivery_delay_s``, and after
  ``max_recording_failures`` deliveries in a row it ends FAILURE with the
  recording error instead of looping for ever;
* batches of batched handlers (:mod:`taskserve.batch`): the deliveries of a
  batched name wait for each other in their own threads inside the
  runner's ``process`` and share one handler call, each keeping its own
  begin, outcome, record and settle. A batch holds at most ``concurrency``
  tasks (``min(batch_max_size, concurrency)``; a warning at start says when
  a handler asks for more), and a stop starts every waiting batch at once;
* the lease keeper (leases renewed, cancel requests relayed), housekeeping,
  and for ledger stores the :class:`~taskserve.engine.reconciler.Reconciler`
  that publishes retries when due and what the engine lost;
* ``stop(timeout)``: stop fetching, hand back at once every delivery not yet
  begun, let running ones finish for up to ``timeout`` seconds, then hand the
  rest back to the store (their attempt counted) so another consumer runs them;
* where the store is a :class:`~taskserve.engine.store.WorkerDirectory`,
  beats: the consumer's name and statistics (Celery's worker layout), renewed
  every ``BEAT_EVERY_S`` and soon after each change, so producers anywhere
  list the consumers alive.

An engine subclass supplies only what is its own: starting and stopping its
fetching, settling a message (acknowledge, or hand back unbegun at once),
delivering a message again later when the store cannot take it, and quirks
(extending its own visibility, housekeeping). It hands each fetched message
to :meth:`ConsumerBase.offer` (run on the base's pool) or runs it in its own
thread with :meth:`ConsumerBase.run_inline`.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from taskserve.config import TaskProcessorConfig
from taskserve.engine.leases import MAX_TICK_S, LeaseKeeper
from taskserve.engine.pool import DaemonThreadExecutor
from taskserve.engine.reconciler import Reconciler
from taskserve.engine.recorder import StoreRecorder
from taskserve.engine.runner import Outcome, TaskRunner
from taskserve.engine.store import Begun, LedgerStore, TaskStore, WorkerDirectory
from taskserve.errors import PayloadError, RecordingFailed
from taskserve.models import TaskError
from taskserve.serialization import TaskMessage
from taskserve.states import TaskState
from taskserve.webhooks.sender import webhook_sender

logger = logging.getLogger("taskserve.consumer")

REDELIVERY_DELAY_S = 1.0
"""Pause before a delivery whose outcome could not be recorded runs again."""

BEAT_EVERY_S = 2.0
"""Longest pause between two beats of a consumer (WorkerDirectory stores)."""

WORKER_TTL_S = 10.0
"""How long a beat keeps a consumer listed as alive (at least)."""

BEGIN_WAIT_S = 5.0
"""Longest wait of a stop for deliveries in the middle of the store's begin."""

PURGE_EVERY_S = 30.0
"""How often a consumer has its store delete what expired (``purge_expired``)."""

LEASE_TAKEOVER_S = 0.1
"""How long after another delivery's lease ran out a delivery that waited for
it begins the task (before the ledger publishes it again)."""


class Settlement(enum.Enum):
    """How a delivery ends with the engine."""

    ACK = "acknowledge"
    """Done with the message: its outcome is recorded, or the store will see to
    the task (a duplicate, a hand-back, a retry the ledger publishes)."""
    HAND_BACK = "hand back"
    """Return the message to the engine's queue at once: it was never begun."""


class Delivery:
    """One message a consumer took from its engine, until it is settled."""

    __slots__ = ("begun", "handle", "outcome", "payload", "running", "settled", "task_id")

    def __init__(
        self,
        handle: Any,
        payload: TaskMessage | bytes,
        *,
        task_id: str | None = None,
        begun: Begun | None = None,
    ) -> None:
        self.handle = handle
        """The engine's own message object (what its settle needs)."""
        self.payload = payload
        self.task_id = (
            task_id
            if task_id is not None
            else (payload.id if isinstance(payload, TaskMessage) else None)
        )
        self.begun = begun
        """Set by the store's claim for queue stores, by ``begin`` otherwise."""
        self.outcome: Outcome | None = None
        self.running = False
        self.settled = False


def decode(payload: TaskMessage | bytes) -> TaskMessage | bytes:
    """``payload`` as a TaskMessage when it is one, else the bytes as they are
    (the runner dead-letters them as undecodable)."""
    if isinstance(payload, TaskMessage):
        return payload
    try:
        return TaskMessage.from_bytes(payload)
    except PayloadError:
        return payload


class ConsumerBase(ABC):
    """Consumes one queue of a store-backed adapter; see the module docstring."""

    redelivery_delay_s: float = REDELIVERY_DELAY_S
    transport: str = ""
    """The broker's transport name in the worker statistics (default: ``name``)."""

    def __init__(
        self,
        *,
        store: TaskStore,
        config: TaskProcessorConfig,
        runner: TaskRunner,
        concurrency: int,
        name: str,
        publish: Callable[[TaskMessage], None] | None = None,
        engine_depth: Callable[[], int] | None = None,
        housekeeping_every_s: float = MAX_TICK_S,
        publish_first: Callable[[TaskMessage], None] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.runner = runner
        self.concurrency = concurrency
        self.name = name
        self.owner = f"{name}-{uuid.uuid4().hex}"
        self.worker_name = f"{name}@{socket.gethostname()}-{os.getpid()}-{self.owner[-8:]}"
        """This consumer's name among the queue's workers (health and metrics)."""
        self._started_at = time.monotonic()
        self._beat_state: tuple[int, int] | None = None
        self._last_beat = 0.0
        self._worker_ttl_s = max(WORKER_TTL_S, 3 * housekeeping_every_s)
        self._deliveries: set[Delivery] = set()
        self._idle = threading.Condition()
        self._stopping = threading.Event()
        self._pool: DaemonThreadExecutor | None = None
        self._reconciler = (
            Reconciler(store, config, publish, engine_depth, publish_first)
            if isinstance(store, LedgerStore) and publish is not None
            else None
        )
        self._last_purge = time.monotonic()
        self._keeper = LeaseKeeper(
            runner,
            config.lease_s,
            extend=self._extend,
            cancel_requested=store.cancel_requested,
            housekeeping=self._housekeeping_tick,
            housekeeping_every_s=housekeeping_every_s,
            name=f"taskserve-{name}-leases",
        )
        self.webhooks = webhook_sender(store, config, self.owner)
        """Delivers the queue's webhook events (None without a signing secret)."""

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Start the lease keeper, then the engine's fetching."""
        self.runner.fit_batches(self.concurrency)
        self._keeper.start()
        try:
            self._start_engine()
        except BaseException:
            self._stopping.set()
            self._keeper.stop()
            raise
        self._started_at = time.monotonic()
        self._beat(force=True)
        if self.webhooks is not None:
            self.webhooks.start()

    def alive(self) -> bool:
        """Whether the consumer runs: not stopped, lease keeper and engine alive,
        and no handler outlived its time limit by the grace period (then the
        consumer must be replaced; see :attr:`TaskRunner.healthy`)."""
        return (
            not self._stopping.is_set()
            and self._keeper.alive()
            and self._engine_alive()
            and self.runner.healthy
        )

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` began."""
        return self._stopping.is_set()

    def stop(self, timeout: float) -> None:
        """Stop fetching, hand back unbegun deliveries at once, let running ones
        finish for up to ``timeout`` s, then hand the rest back to the store.
        Handlers abandoned past their time limit are not waited for. The
        ``timeout`` counts from this call, the hand-back of unbegun deliveries
        included."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._stop_fetching()
        self.runner.flush_batches()  # nothing more will join a waiting batch
        with self._idle:
            unbegun = [d for d in self._deliveries if not d.running and not d.settled]
            for delivery in unbegun:
                delivery.settled = True
        for delivery in unbegun:
            self._settle_quietly(delivery, Settlement.HAND_BACK)
            self._forget(delivery)
        with self._idle:
            while self._awaited() and time.monotonic() < deadline:
                self._idle.wait(min(max(deadline - time.monotonic(), 0.0), MAX_TICK_S))
            # A delivery in the middle of the store's begin: wait (briefly) for it,
            # so that it is handed back as begun, not as a message nobody holds.
            beginning = time.monotonic() + BEGIN_WAIT_S
            while self._beginning() and time.monotonic() < beginning:
                self._idle.wait(max(beginning - time.monotonic(), 0.0))
            leftover = [d for d in self._deliveries if not d.settled]
            for delivery in leftover:
                delivery.settled = True
        if leftover:
            logger.warning(
                "taskserve: %d task(s) still running after the %.1fs graceful timeout were "
                "handed back to queue '%s'",
                len(leftover),
                timeout,
                self.config.queue_name,
            )
            self._hand_back_running(leftover)
        self._keeper.stop(timeout=0.5 if leftover else 5.0)
        if isinstance(self.store, WorkerDirectory):
            try:
                self.store.forget(self.worker_name)
            except Exception:
                logger.debug("taskserve: could not unlist consumer %s", self.worker_name)
        self._stop_engine(abandoned=bool(leftover))
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self.webhooks is not None:
            self.webhooks.stop()

    def _awaited(self) -> bool:
        """Whether a delivery is held that a stop waits for (lock held)."""
        if not self._deliveries:
            return False
        abandoned = self.runner.abandoned_task_ids()
        return any(d.task_id not in abandoned for d in self._deliveries)

    def _beginning(self) -> bool:
        """Whether a delivery runs whose begin has not returned (lock held)."""
        return any(d.running and d.begun is None and not d.settled for d in self._deliveries)

    def _hand_back_running(self, deliveries: list[Delivery]) -> None:
        begun = [d for d in deliveries if d.task_id is not None and d.begun is not None]
        try:
            self.store.release([d.task_id for d in begun if d.task_id], self.owner, uncount=False)
        except Exception:
            logger.exception("taskserve: could not hand running tasks back to the store")
            for delivery in deliveries:
                self._settle_quietly(delivery, Settlement.HAND_BACK)
            return
        for delivery in deliveries:
            how = Settlement.ACK if delivery in begun else Settlement.HAND_BACK
            self._settle_quietly(delivery, how)

    # -- capacity --------------------------------------------------------------
    @property
    def held(self) -> int:
        """Deliveries held now (fetched and not settled)."""
        return len(self._deliveries)

    def wait_for_capacity(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a free slot; True if one is free. A
        consumer whose handler outlived its time limit has none: it takes no
        more tasks until it is replaced."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while len(self._deliveries) >= self.concurrency or not self.runner.healthy:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return False
                self._idle.wait(remaining)
            return True

    # -- taking deliveries -------------------------------------------------------
    def offer(self, delivery: Delivery) -> None:
        """Hold ``delivery`` and run it on the consumer's pool."""
        if self._stopping.is_set():
            self._settle_quietly(delivery, Settlement.HAND_BACK)
            return
        with self._idle:
            self._deliveries.add(delivery)
            if self._pool is None:
                self._pool = DaemonThreadExecutor(self.concurrency, f"taskserve-{self.name}")
        try:
            self._pool.submit(self._deliver, delivery)
        except RuntimeError:
            self._settle_quietly(delivery, Settlement.HAND_BACK)
            self._forget(delivery)

    def run_inline(self, delivery: Delivery) -> None:
        """Hold ``delivery`` and run it in the calling thread (engines whose own
        threads run tasks); returns once it is settled."""
        if self._stopping.is_set():
            self._settle_quietly(delivery, Settlement.HAND_BACK)
            return
        with self._idle:
            self._deliveries.add(delivery)
        self._deliver(delivery)

    # -- the delivery wrapper ------------------------------------------------------
    def _deliver(self, delivery: Delivery) -> None:
        try:
            with self._idle:
                if delivery.settled:  # handed back by a stop meanwhile
                    return
                delivery.running = True
            how = self._run(delivery)
            self._settle_once(delivery, how)
        finally:
            self._forget(delivery)

    def _run(self, delivery: Delivery) -> Settlement:
        payload = decode(delivery.payload)
        try:
            begun = delivery.begun
            if begun is None:
                if isinstance(payload, TaskMessage):
                    begun = self._begin(payload)
                else:
                    begun = Begun(attempt=1, started=False)
                with self._idle:
                    delivery.begun = begun
                    self._idle.notify_all()
                    if delivery.settled:
                        # A stop handed it back (as begun) while it began: not run here.
                        delivery.outcome = Outcome.SKIPPED
                        return Settlement.ACK
            if begun.attempt == 0:
                # Finished, or running elsewhere (a duplicate message): nothing to do.
                # Should the holder die, the store's lease brings the task back.
                delivery.outcome = Outcome.SKIPPED
                return Settlement.ACK
            recorder = self._recorder(delivery, begun)
            delivery.outcome = self.runner.process(payload, begun.attempt, recorder)
            return Settlement.ACK
        except Exception as e:
            return self._unrecorded(delivery, payload, e)

    def _begin(self, message: TaskMessage) -> Begun:
        """``begin`` in the store, within the attempt budget of the task's name;
        when another delivery holds the task's lease, wait until it runs out
        (unless this consumer stops) and begin once more."""
        lease_s = self.config.lease_s
        max_attempts = self.runner.retry_policy(message.name).max_attempts
        begun = self.store.begin(message, self.owner, lease_s, max_attempts)
        if not begun.running_elsewhere or begun.lease_deadline is None:
            return begun
        wait_s = begun.lease_deadline + LEASE_TAKEOVER_S - time.time()
        if wait_s > lease_s + LEASE_TAKEOVER_S or self._stopping.wait(max(wait_s, 0.0)):
            return begun
        return self.store.begin(message, self.owner, lease_s, max_attempts)

    def _unrecorded(
        self, delivery: Delivery, payload: TaskMessage | bytes, error: Exception
    ) -> Settlement:
        """A delivery whose outcome could not be recorded: deliver it again later,
        or end it FAILURE once that happened ``max_recording_failures`` times."""
        logger.error(
            "taskserve: the outcome of task %s could not be recorded (%s: %s); it will be "
            "delivered again",
            delivery.task_id or "(undecodable)",
            type(error).__name__,
            error,
            exc_info=error,
        )
        counted = delivery.begun is not None and delivery.begun.attempt > 0
        if delivery.task_id is None or not counted:
            return self._resend_later(delivery)
        try:
            failures = self.store.note_unrecorded(
                delivery.task_id, self.owner, self.redelivery_delay_s
            )
        except Exception:
            logger.warning(
                "taskserve: the store cannot take task %s back either; the engine delivers "
                "it again",
                delivery.task_id,
                exc_info=True,
            )
            return self._resend_later(delivery)
        if failures >= self.config.max_recording_failures and isinstance(payload, TaskMessage):
            self._give_up(payload, failures, error)
        # The store has the task back and delivers it again (a queue store's row
        # becomes due; a ledger publishes it), so the engine's message is done.
        return Settlement.ACK

    def _give_up(self, message: TaskMessage, failures: int, error: Exception) -> None:
        failed = TaskError.from_exception(
            RecordingFailed(
                f"the outcome of task {message.id} could not be recorded in {failures} "
                f"deliveries in a row (max_recording_failures); last error: "
                f"{type(error).__name__}: {error}"
            )
        )
        attempt = max(self._attempts(message.id), 1)
        recorder = StoreRecorder(self.store, message.id, Begun(attempt=attempt, started=False))
        try:
            self.runner.fail(message, failed, attempt, recorder)
            return
        except Exception:
            logger.warning(
                "taskserve: could not dead-letter task %s after %d unrecordable outcomes; "
                "ending it FAILURE without its dead letter",
                message.id,
                failures,
                exc_info=True,
            )
        try:
            self.store.finish(message.id, TaskState.FAILURE, error=failed)
        except Exception:
            logger.exception("taskserve: could not end task %s FAILURE", message.id)

    def _attempts(self, task_id: str) -> int:
        try:
            return self.store.status(task_id).attempts
        except Exception:
            return 0

    def _settle_once(self, delivery: Delivery, how: Settlement) -> None:
        with self._idle:
            if delivery.settled:
                return
            delivery.settled = True
        self._settle_quietly(delivery, how)

    def _settle_quietly(self, delivery: Delivery, how: Settlement) -> None:
        try:
            self._settle(delivery, how)
        except Exception as e:
            logger.warning(
                "taskserve: could not %s task %s (%r); the engine will deliver it again",
                how.value,
                delivery.task_id or "(undecodable)",
                e,
            )

    def _forget(self, delivery: Delivery) -> None:
        with self._idle:
            self._deliveries.discard(delivery)
            self._idle.notify_all()

    # -- the lease keeper's callbacks ------------------------------------------------
    def _extend(self, task_ids: list[str]) -> None:
        self.store.extend_leases(task_ids, self.owner, self.config.lease_s)
        with self._idle:
            held = [d for d in self._deliveries if not d.settled]
        self._extend_engine(held)

    def _housekeeping_tick(self) -> None:
        if self._stopping.is_set():
            return
        if self._reconciler is not None:
            self._reconciler.tick()
        self._beat()
        self._purge()
        self._housekeeping()

    def _purge(self) -> None:
        """Every :data:`PURGE_EVERY_S`, the store deletes records (and their
        traces) whose result TTL has passed; a failure is retried next time."""
        now = time.monotonic()
        if now - self._last_purge < PURGE_EVERY_S:
            return
        self._last_purge = now
        try:
            self.store.purge_expired()
        except Exception:
            logger.warning(
                "taskserve: purging expired records of '%s' failed",
                self.config.queue_name,
                exc_info=True,
            )

    # -- the queue's directory of workers -------------------------------------------
    def worker_stats(self) -> dict[str, Any]:
        """This consumer's statistics, in the layout of Celery's ``inspect().stats()``."""
        pool = self._pool
        return {
            "pool": {
                "implementation": "taskserve.threads",
                "max-concurrency": self.concurrency,
                "threads": pool.thread_count if pool is not None else 0,
            },
            "total": self.runner.runs_by_name(),
            "broker": {"transport": self.transport or self.name},
            "pid": os.getpid(),
            "uptime": int(time.monotonic() - self._started_at),
            "queue": self.config.queue_name,
            "in_flight": self.runner.in_flight,
        }

    def _beat(self, force: bool = False) -> None:
        """List this consumer as alive in the store: every ``BEAT_EVERY_S``, and
        on the next tick after its runs changed."""
        if not isinstance(self.store, WorkerDirectory):
            return
        runs = self.runner.runs_by_name()
        state = (sum(runs.values()), self.runner.in_flight)
        now = time.monotonic()
        if not force and state == self._beat_state and now - self._last_beat < BEAT_EVERY_S:
            return
        try:
            self.store.beat(self.worker_name, self.worker_stats(), self._worker_ttl_s)
        except Exception as e:
            logger.debug("taskserve: consumer %s could not beat: %s", self.worker_name, e)
            return
        self._beat_state, self._last_beat = state, now

    # -- what an engine supplies -------------------------------------------------------
    @abstractmethod
    def _start_engine(self) -> None:
        """Start fetching; raise BrokerUnavailable if the engine cannot start."""

    @abstractmethod
    def _stop_fetching(self) -> None:
        """Fetch nothing more (a stop began); called before the drain."""

    @abstractmethod
    def _stop_engine(self, abandoned: bool) -> None:
        """End the engine's threads and connections once drained; with
        ``abandoned`` some handlers still run (their tasks were handed back) and
        must not be waited for."""

    @abstractmethod
    def _engine_alive(self) -> bool:
        """Whether the engine's threads run and can fetch."""

    @abstractmethod
    def _settle(self, delivery: Delivery, how: Settlement) -> None:
        """Acknowledge the message, or hand it back to the engine's queue at once."""

    def _resend_later(self, delivery: Delivery) -> Settlement:
        """Have the engine deliver the message again after ``redelivery_delay_s``,
        behind the messages queued meanwhile; used when the store cannot take
        the task back (it is unreachable, or the bytes belong to no task).
        Returns how the delivery itself is then settled. By default: wait in
        this thread, then hand it back."""
        self._stopping.wait(self.redelivery_delay_s)
        return Settlement.HAND_BACK

    def _recorder(self, delivery: Delivery, begun: Begun) -> StoreRecorder:
        """The recorder of one begun delivery; an engine may return a subclass
        (to also tell its broker about dead letters, say)."""
        return StoreRecorder(self.store, delivery.task_id, begun, owner=self.owner)

    def _extend_engine(self, held: list[Delivery]) -> None:
        """Tell the engine the held deliveries are alive (its own visibility)."""

    def _housekeeping(self) -> None:
        """Engine upkeep, called about every ``housekeeping_every_s``."""
