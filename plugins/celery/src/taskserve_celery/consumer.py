"""The Celery adapter's consumer: deliveries, their settlement, and stopping.

Every message the embedded worker fetches becomes a delivery, run in a
thread of Celery's pool:

1. its TaskMessage is read (:mod:`taskserve_celery.wire`); the store counts
   the delivery, crashed ones included, which gives the attempt number;
2. :meth:`TaskRunner.process` runs it to its recorded outcome (status,
   result, retry, dead letter) through a :class:`StoreRecorder`;
3. only then is the message acknowledged. If recording failed, the count is
   undone and the message is handed back to the broker after a pause.

A delivery is settled (acknowledged or handed back) exactly once, under the
lock that serializes writes on the consumer's connection. A stop stops
fetching, hands back what has not started, waits for running tasks up to the
graceful timeout, then hands back the rest; their handlers may go on, but
their late acknowledgement is dropped.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from celery import Celery

from taskserve.config import TaskProcessorConfig
from taskserve.errors import BrokerUnavailable
from taskserve.execution import DeliveryRecorder, TaskRunner
from taskserve.leases import LeaseKeeper
from taskserve.secrets import redact_url
from taskserve.serialization import TaskMessage
from taskserve.stores.redis_store import RedisTaskStore, StoreRecorder
from taskserve_celery.config import BrokerKind
from taskserve_celery.delays import DelayedRetries
from taskserve_celery.visibility import RedisVisibility
from taskserve_celery.wire import body_bytes, read_delivery
from taskserve_celery.worker import EmbeddedWorker

logger = logging.getLogger(__name__)

REDELIVERY_DELAY_S = 1.0
"""Pause before handing back a delivery whose outcome could not be recorded."""

START_TIMEOUT_S = 30.0
"""Longest wait for the worker to connect and start consuming."""

HAND_BACK_TIMEOUT_S = 5.0
"""Longest wait, at stop, for the worker thread to hand back what it holds."""

HOUSEKEEPING_EVERY_S = 0.25
"""How often due retries are published (bounds the lateness of a retry)."""


class _Settle(enum.Enum):
    """How a delivery ends on the broker."""

    ACK = "acknowledge"
    HAND_BACK = "hand back"
    """Requeue at once (an unstarted task at a stop): RabbitMQ puts it back where
    it was, kombu's Redis transport behind the queue."""
    RESEND = "resend"
    """Deliver again later, behind the tasks queued meanwhile: its outcome could
    not be recorded, and it must not block the queue while that lasts."""


class _Delivery:
    """One fetched message, until it is acknowledged or handed back."""

    __slots__ = ("message", "settled", "task_id")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.task_id: str | None = None
        self.settled = False


class CeleryConsumer:
    """Consumes one queue with an embedded Celery worker (a DeliveryHandler)."""

    def __init__(
        self,
        *,
        app: Celery,
        config: TaskProcessorConfig,
        broker_kind: BrokerKind,
        store: RedisTaskStore,
        delays: DelayedRetries,
        runner: TaskRunner,
        concurrency: int,
        publish: Callable[[TaskMessage], None],
    ) -> None:
        # py-amqp connections are not thread-safe: acknowledgements from the pool
        # threads and the consumer thread's own writes take turns. kombu's Redis
        # transport acknowledges through pooled Redis connections instead.
        self.wire_lock: AbstractContextManager[Any] = (
            threading.Lock() if broker_kind is BrokerKind.AMQP else contextlib.nullcontext()
        )
        self._settling = threading.Lock()
        self._resend_copies = broker_kind is BrokerKind.AMQP
        self._app = app
        self._concurrency = concurrency
        self._config = config
        self._store = store
        self._delays = delays
        self._runner = runner
        self._publish = publish
        self._deliveries: set[_Delivery] = set()
        self._idle = threading.Condition()
        self._stop_fetching = threading.Event()
        self._exit = threading.Event()
        self._handed_back = threading.Event()
        self._recorder = StoreRecorder(store, config.lease_s, self._republish)
        self._visibility = RedisVisibility(app) if broker_kind is BrokerKind.REDIS else None
        self._restore_every_s = min(max(config.lease_s / 4, HOUSEKEEPING_EVERY_S), 5.0)
        self._last_restore = 0.0
        self._worker = EmbeddedWorker(
            app, config.queue_name, concurrency, broker_kind, self, config.lease_s
        )
        self._keeper = LeaseKeeper(
            runner,
            config.lease_s,
            extend=self._extend,
            cancel_requested=store.cancel_requested,
            housekeeping=self._housekeeping,
            housekeeping_every_s=HOUSEKEEPING_EVERY_S,
            name=f"taskserve-celery-leases-{config.queue_name}",
        )
        self._broker = redact_url(str(app.conf.broker_url))

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        """Start the worker and wait until it consumes; BrokerUnavailable if it cannot."""
        self._worker.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._worker.ready.wait(0.05):
            if not self._worker.alive() or time.monotonic() > deadline:
                self.stop(0.0)
                raise BrokerUnavailable(
                    f"the Celery worker for queue '{self._config.queue_name}' could not start "
                    f"consuming from {self._broker} within {START_TIMEOUT_S:.0f}s"
                )
        self._keeper.start()

    def alive(self) -> bool:
        """Whether the worker and lease threads run and the consumer was not stopped."""
        return (
            self._worker.alive()
            and self._worker.ready.is_set()
            and self._keeper.alive()
            and not self._stop_fetching.is_set()
        )

    def stop(self, timeout: float) -> None:
        """Stop fetching, hand back unstarted deliveries at once, let running ones
        finish for up to ``timeout`` seconds, then hand back the rest."""
        self._stop_fetching.set()
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._deliveries and time.monotonic() < deadline:
                self._idle.wait(max(deadline - time.monotonic(), 0.0))
        leftover = self._runner.running_task_ids()
        if leftover:
            logger.warning(
                "taskserve-celery: %d task(s) still running after the %.1fs graceful timeout "
                "were handed back to queue '%s'",
                len(leftover),
                timeout,
                self._config.queue_name,
            )
        self._exit.set()
        if self._worker.alive() and self._worker.ready.is_set():
            self._handed_back.wait(HAND_BACK_TIMEOUT_S)
            self._worker.join(HAND_BACK_TIMEOUT_S if not leftover else 0.0)
        # With tasks left running the keeper would wait for them; they were handed back.
        self._keeper.stop(timeout=0.5 if leftover else 5.0)
        if self._visibility is not None:
            self._visibility.close()

    # -- DeliveryHandler (called by the embedded worker) -------------------
    def fetching_wanted(self) -> bool:
        return not self._stop_fetching.is_set()

    def exit_wanted(self) -> bool:
        return self._exit.is_set()

    def wait_for_capacity(self, timeout: float) -> None:
        with self._idle:
            if len(self._deliveries) >= self._concurrency:
                self._idle.wait(timeout)

    def on_message(self, message: Any) -> None:
        if self._stop_fetching.is_set():
            self._hand_back(message)
            return
        delivery = _Delivery(message)
        with self._idle:
            self._deliveries.add(delivery)
        try:
            self._worker.submit(self._deliver, delivery)
        except Exception:
            logger.exception("taskserve-celery: the worker pool refused a delivery")
            self._finish(delivery, _Settle.HAND_BACK)

    def hand_back_unsettled(self) -> None:
        with self._idle:
            unsettled = list(self._deliveries)
        for delivery in unsettled:
            self._settle(delivery, _Settle.HAND_BACK)
        self._handed_back.set()

    def on_poison(self, error: Exception) -> None:
        doc = getattr(error, "doc", None)
        if isinstance(doc, str):
            # kombu's Redis transport popped an item that is not a kombu
            # message at all; keep its bytes as an undecodable dead letter.
            try:
                self._runner.process(doc.encode(), 1, self._recorder)
                return
            except Exception:
                logger.exception("taskserve-celery: could not dead-letter an unreadable item")
        logger.error(
            "taskserve-celery: dropped an item of queue '%s' the transport cannot read: %r",
            self._config.queue_name,
            error,
        )

    # -- one delivery ------------------------------------------------------
    def _deliver(self, delivery: _Delivery) -> None:
        message = delivery.message
        try:
            payload = read_delivery(
                body_bytes(message.body),
                message.headers,
                message.content_type,
                self._config.queue_name,
            )
            if self._stop_fetching.is_set():
                self._finish(delivery, _Settle.HAND_BACK)
                return
            attempt = 1
            recorder: DeliveryRecorder = self._recorder
            if isinstance(payload, TaskMessage):
                delivery.task_id = payload.id
                attempt, recorder = self._recorder.begin(payload, self._runner)
            self._runner.process(payload, attempt, recorder)
        except Exception:
            logger.exception(
                "taskserve-celery: the outcome of task %s could not be recorded; it will be "
                "delivered again",
                delivery.task_id or "(undecoded)",
            )
            if delivery.task_id is not None:
                try:
                    self._store.release(delivery.task_id)
                except Exception:
                    logger.exception(
                        "taskserve-celery: could not release task %s", delivery.task_id
                    )
            self._stop_fetching.wait(REDELIVERY_DELAY_S)
            self._finish(delivery, _Settle.RESEND)
        else:
            self._finish(delivery, _Settle.ACK)

    def _finish(self, delivery: _Delivery, how: _Settle) -> None:
        try:
            self._settle(delivery, how)
        finally:
            with self._idle:
                self._deliveries.discard(delivery)
                self._idle.notify_all()

    def _settle(self, delivery: _Delivery, how: _Settle) -> None:
        with self._settling:
            if delivery.settled:
                return
            delivery.settled = True
        message = delivery.message
        try:
            if how is _Settle.RESEND and self._resend_copies:
                # RabbitMQ requeues a rejected message at the head of the queue,
                # where it would be fetched again at once: publish a copy at the
                # tail instead, then acknowledge the original.
                self._resend(message)
                how = _Settle.ACK
            with self.wire_lock:
                if how is _Settle.ACK:
                    message.ack()
                else:
                    # kombu's Redis transport puts a rejected message at the tail.
                    message.reject(requeue=True)
        except Exception as e:
            logger.warning(
                "taskserve-celery: could not %s task %s (%r); the broker will deliver it again",
                how.value,
                delivery.task_id or "(undecoded)",
                e,
            )

    def _resend(self, message: Any) -> None:
        properties = {
            key: message.properties[key]
            for key in ("correlation_id", "reply_to", "priority")
            if message.properties.get(key) is not None
        }
        with self._app.producer_or_acquire() as producer:
            producer.publish(
                message.body,
                exchange=self._config.queue_name,
                routing_key=self._config.queue_name,
                headers=message.headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                delivery_mode=2,
                retry=True,
                **properties,
            )

    def _hand_back(self, message: Any) -> None:
        with self.wire_lock:
            try:
                message.reject(requeue=True)
            except Exception as e:
                logger.warning("taskserve-celery: could not hand back a message: %r", e)

    # -- retries, leases, housekeeping -------------------------------------
    def _republish(self, message: TaskMessage, delay_s: float) -> None:
        if delay_s <= 0:
            self._publish(message)
        else:
            self._delays.schedule(message.id, delay_s)

    def _extend(self, task_ids: list[str]) -> None:
        self._store.extend_leases(task_ids, self._config.lease_s)
        if self._visibility is not None:
            with self._idle:
                held = [d.message.delivery_tag for d in self._deliveries if not d.settled]
            self._visibility.extend(held)

    def _housekeeping(self) -> None:
        if self._stop_fetching.is_set():
            return
        self._delays.publish_due(self._store.message, self._publish)
        now = time.monotonic()
        if self._visibility is not None and now - self._last_restore >= self._restore_every_s:
            self._last_restore = now
            self._visibility.restore_expired()
