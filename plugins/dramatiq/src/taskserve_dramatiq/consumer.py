"""A Dramatiq worker embedded in the adapter's process, on the kit's consumer base.

One :class:`dramatiq.Worker` per adapter instance, on the adapter's own
broker: ``concurrency`` worker threads, a prefetch of ``concurrency`` (so a
consumer never holds more messages than it can run), no signal handlers and
no command line. The prefetch bound is one for all priority levels (Redis:
one fetch takes the highest levels first; RabbitMQ: its own priority queue
behind one ``basic_qos``). Each message a worker thread takes runs through
:meth:`~taskserve.kit.ConsumerBase.run_inline` in that thread; Dramatiq
acknowledges it when the delivery returns, or hands it back when the base
settles it so (see :func:`taskserve_dramatiq.engine.hand_back`). Retries are
published by the ledger when due, not through Dramatiq's delay queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from dramatiq import Worker
from dramatiq.broker import MessageProxy
from dramatiq.common import iter_queue

from taskserve.kit import (
    ConsumerBase,
    Delivery,
    Settlement,
    TaskMessage,
    TaskProcessorConfig,
    TaskRunner,
    TaskStore,
)
from taskserve_dramatiq.config import DramatiqAdapterConfig
from taskserve_dramatiq.engine import TaskBroker, hand_back
from taskserve_dramatiq.wire import copy_for_resend, payload_of

logger = logging.getLogger(__name__)

_THREAD_EXIT_S = 5.0
"""How long a stop waits for idle Dramatiq threads to exit."""


class DramatiqConsumer(ConsumerBase):
    """Consumes one queue with an embedded Dramatiq worker."""

    def __init__(
        self,
        *,
        broker: TaskBroker,
        store: TaskStore,
        config: TaskProcessorConfig,
        settings: DramatiqAdapterConfig,
        runner: TaskRunner,
        concurrency: int,
        publish: Callable[[TaskMessage], None],
        publish_first: Callable[[TaskMessage], None],
    ) -> None:
        super().__init__(
            store=store,
            config=config,
            runner=runner,
            concurrency=concurrency,
            name="dramatiq",
            publish=publish,
            publish_first=publish_first,
            engine_depth=broker.queue_depth,
        )
        self._broker = broker
        self._worker = Worker(
            broker,
            worker_timeout=max(int(settings.worker_timeout_s * 1000), 1),
            worker_threads=concurrency,
        )
        self._worker.queue_prefetch = concurrency
        if settings.delay_prefetch is not None:
            self._worker.delay_prefetch = settings.delay_prefetch
        self._heartbeat_every_s = broker.heartbeat_every_s
        self._last_heartbeat = 0.0
        self._started = False

    # -- the engine's part -------------------------------------------------------
    def _start_engine(self) -> None:
        self._broker.prepare()  # a queue RabbitMQ refuses to declare: ConfigError here
        self._broker.stopping.clear()
        self._broker.route_to(self._on_message)
        self._broker.boot()
        self._broker.keep_alive()
        self._worker.start()
        self._started = True

    def _on_message(self, message: MessageProxy) -> None:
        """A worker thread processes ``message``: run it as a delivery."""
        self.run_inline(Delivery(message, payload_of(message, self.config.queue_name)))

    def _engine_alive(self) -> bool:
        if not self._started or self._broker.stopping.is_set():
            return False
        threads: list[threading.Thread] = [*self._worker.workers, *self._worker.consumers.values()]
        return bool(threads) and all(t.is_alive() for t in threads)

    def _stop_fetching(self) -> None:
        # Consumers fetch nothing more and hand back what they buffered.
        self._broker.stopping.set()

    def _stop_engine(self, abandoned: bool) -> None:
        for worker_thread in self._worker.workers:
            worker_thread.stop()
        for consumer in self._worker.consumers.values():
            consumer.stop()
        exit_deadline = time.monotonic() + _THREAD_EXIT_S
        for consumer in self._worker.consumers.values():
            consumer.join(max(exit_deadline - time.monotonic(), 0.0))
        unstarted = [item.message for item in iter_queue(self._worker.work_queue)]  # type: ignore[no-untyped-call]
        for message in unstarted:
            try:
                self._worker.consumers[message.queue_name].requeue_messages([message])
            except Exception:
                logger.exception("taskserve: could not hand message %s back", message.message_id)
        for consumer in self._worker.consumers.values():
            try:
                consumer.close()  # also hands back delayed messages held in memory
            except Exception:
                logger.exception(
                    "taskserve: closing the consumer of '%s' failed", consumer.queue_name
                )
        if not abandoned:  # threads still running a handler are left to finish alone
            for worker_thread in self._worker.workers:
                worker_thread.join(max(exit_deadline - time.monotonic(), 0.0))
        # The worker's middleware leaves the broker, so that a later worker on
        # the same broker does not feed this one's consumers.
        self._broker.middleware = [
            m for m in self._broker.middleware if getattr(m, "worker", None) is not self._worker
        ]
        self._broker.route_to(None)
        self._started = False

    def _settle(self, delivery: Delivery, how: Settlement) -> None:
        # Dramatiq acknowledges the message once the delivery returns; a message
        # marked here is handed back to its queue instead.
        if how is Settlement.HAND_BACK:
            hand_back(delivery.handle)

    def _resend_later(self, delivery: Delivery) -> Settlement:
        delay_ms = int(self.redelivery_delay_s * 1000)
        try:
            self._broker.enqueue(copy_for_resend(delivery.handle), delay=delay_ms)
        except Exception:
            logger.exception(
                "taskserve: could not publish message %s again", delivery.handle.message_id
            )
            return Settlement.HAND_BACK
        return Settlement.ACK

    def _housekeeping(self) -> None:
        if self._heartbeat_every_s is None:
            return
        now = time.monotonic()
        if now - self._last_heartbeat >= self._heartbeat_every_s:
            self._last_heartbeat = now
            self._broker.keep_alive()

    def __repr__(self) -> str:
        return f"<DramatiqConsumer queue={self.config.queue_name!r}>"
