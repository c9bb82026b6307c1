"""A Dramatiq worker embedded in the adapter's process.

One :class:`dramatiq.Worker` per adapter instance, on the adapter's own
broker: ``concurrency`` worker threads, a prefetch of ``concurrency`` (so a
consumer never holds more messages than it can run), no signal handlers and
no command line. Every message its worker threads take is handed to
:meth:`TaskRunner.process`; Dramatiq acknowledges it only after the outcome
is recorded, and a message whose outcome could not be recorded is handed back
to the queue instead. A :class:`LeaseKeeper` extends the leases of running
tasks, relays cancel requests to them, and (on Redis) heartbeats.
"""

from __future__ import annotations

import logging
import threading
import time

from dramatiq import Worker
from dramatiq.broker import MessageProxy
from dramatiq.common import iter_queue

from taskserve.config import TaskProcessorConfig
from taskserve.execution import DeliveryRecorder, TaskRunner
from taskserve.leases import LeaseKeeper
from taskserve.serialization import TaskMessage
from taskserve.stores.redis_store import RedisTaskStore, StoreRecorder
from taskserve_dramatiq.brokers import TaskBroker, hand_back
from taskserve_dramatiq.config import DramatiqAdapterConfig
from taskserve_dramatiq.wire import copy_for_resend, payload_of, to_dramatiq

logger = logging.getLogger(__name__)

RESEND_DELAY_S = 1.0
"""Pause before a message whose outcome could not be recorded is delivered again."""

_THREAD_EXIT_S = 5.0
"""How long a stop waits for idle Dramatiq threads to exit."""


class DramatiqConsumer:
    """Consumes one queue with an embedded Dramatiq worker."""

    def __init__(
        self,
        broker: TaskBroker,
        store: RedisTaskStore,
        config: TaskProcessorConfig,
        settings: DramatiqAdapterConfig,
        runner: TaskRunner,
        concurrency: int,
    ) -> None:
        self._broker = broker
        self._store = store
        self._config = config
        self._runner = runner
        self._recorder = StoreRecorder(store, config.lease_s, self._republish)
        self._worker = Worker(
            self._broker,
            worker_timeout=max(int(settings.worker_timeout_s * 1000), 1),
            worker_threads=concurrency,
        )
        self._worker.queue_prefetch = concurrency
        if settings.delay_prefetch is not None:
            self._worker.delay_prefetch = settings.delay_prefetch
        self._active: dict[object, MessageProxy] = {}
        self._idle = threading.Condition()
        self._started = False
        heartbeat_every_s = broker.heartbeat_every_s
        self._keeper = LeaseKeeper(
            runner,
            config.lease_s,
            extend=lambda ids: store.extend_leases(ids, config.lease_s),
            cancel_requested=store.cancel_requested,
            housekeeping=broker.keep_alive if heartbeat_every_s is not None else None,
            housekeeping_every_s=heartbeat_every_s or 30.0,
            name="taskserve-dramatiq-leases",
        )

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Start the Dramatiq worker and the lease keeper."""
        self._broker.stopping.clear()
        self._broker.route_to(self._deliver)
        self._broker.boot()
        self._broker.keep_alive()
        self._worker.start()
        self._keeper.start()
        self._started = True

    def alive(self) -> bool:
        """Whether every worker, consumer and lease thread is running."""
        if not self._started or self._broker.stopping.is_set():
            return False
        threads: list[threading.Thread] = [*self._worker.workers, *self._worker.consumers.values()]
        return bool(threads) and all(t.is_alive() for t in threads) and self._keeper.alive()

    def stop(self, timeout: float) -> None:
        """Stop fetching and hand back what is buffered at once, let running
        tasks finish for up to ``timeout`` s, then hand back any still running."""
        self._broker.stopping.set()
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active and time.monotonic() < deadline:
                self._idle.wait(max(deadline - time.monotonic(), 0.0))
            leftover = list(self._active.values())
        if leftover:
            logger.warning(
                "taskserve: %d task(s) still running after the %.1fs graceful timeout were "
                "handed back to queue '%s'",
                len(leftover),
                timeout,
                self._config.queue_name,
            )
        for worker_thread in self._worker.workers:
            worker_thread.stop()
        for consumer in self._worker.consumers.values():
            consumer.stop()
        exit_deadline = time.monotonic() + _THREAD_EXIT_S
        for consumer in self._worker.consumers.values():
            consumer.join(max(exit_deadline - time.monotonic(), 0.0))
        unstarted = [item.message for item in iter_queue(self._worker.work_queue)]  # type: ignore[no-untyped-call]
        for message in [*leftover, *unstarted]:
            try:
                self._worker.consumers[message.queue_name].requeue_messages([message])
            except Exception:
                logger.exception("taskserve: could not hand message %s back", message.message_id)
        for consumer in self._worker.consumers.values():
            try:
                consumer.close()  # also hands back delayed retries held in memory
            except Exception:
                logger.exception(
                    "taskserve: closing the consumer of '%s' failed", consumer.queue_name
                )
        if not leftover:  # threads still running a handler are left to finish alone
            for worker_thread in self._worker.workers:
                worker_thread.join(max(exit_deadline - time.monotonic(), 0.0))
        self._detach_worker()
        self._keeper.stop()
        self._broker.route_to(None)
        self._started = False

    def _detach_worker(self) -> None:
        """Remove the worker's middleware from the broker, so that a later
        worker on the same broker does not feed this one's consumers."""
        self._broker.middleware = [
            m for m in self._broker.middleware if getattr(m, "worker", None) is not self._worker
        ]

    # -- deliveries ------------------------------------------------------------
    def _deliver(self, message: MessageProxy) -> None:
        """Run one delivered message through the runner (worker thread)."""
        if self._broker.stopping.is_set():
            hand_back(message)
            return
        token = object()
        with self._idle:
            self._active[token] = message
        task_id: str | None = None
        try:
            payload = payload_of(message, self._config.queue_name)
            attempt = 1
            recorder: DeliveryRecorder = self._recorder
            if isinstance(payload, TaskMessage):
                attempt, recorder = self._recorder.begin(payload, self._runner)
                task_id = payload.id
            self._runner.process(payload, attempt, recorder)
        except BaseException:
            logger.exception(
                "taskserve: the outcome of message %s could not be recorded; it will be "
                "delivered again",
                message.message_id,
            )
            if task_id is not None:
                try:
                    self._store.release(task_id)
                except Exception:
                    logger.exception("taskserve: could not release task %s", task_id)
            self._resend_later(message)
        finally:
            with self._idle:
                self._active.pop(token, None)
                self._idle.notify_all()

    def _resend_later(self, message: MessageProxy) -> None:
        """Deliver ``message`` again after a pause, at the back of the queue, so
        that a message whose outcome cannot be recorded does not hold up the
        others; if it cannot be published, return it to the queue as it is."""
        try:
            self._broker.enqueue(copy_for_resend(message), delay=int(RESEND_DELAY_S * 1000))
        except Exception:
            logger.exception("taskserve: could not publish message %s again", message.message_id)
            hand_back(message)

    def _republish(self, message: TaskMessage, delay_s: float) -> None:
        """Make ``message`` deliverable again after ``delay_s`` (a retry)."""
        delay_ms = int(delay_s * 1000)
        self._broker.enqueue(
            to_dramatiq(message, self._config.queue_name),
            delay=delay_ms if delay_ms > 0 else None,
        )

    def __repr__(self) -> str:
        return f"<DramatiqConsumer queue={self._config.queue_name!r}>"
