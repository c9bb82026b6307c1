"""The Celery adapter's consumer, on the kit's consumer base.

The embedded Celery worker (:mod:`taskserve_celery.worker`) fetches messages
in its consumer thread and hands each to :meth:`CeleryConsumer.on_message`,
which reads its TaskMessage (:mod:`taskserve_celery.wire`) and offers it to
the base, whose pool runs it: begun in the store, run, recorded, and only
then acknowledged. What is Celery's own here:

* settling a message: acknowledge, or hand it back with a requeue (RabbitMQ
  puts it back where it was, kombu's Redis transport behind the queue); every
  settlement and every write of the consumer thread takes the wire lock
  (py-amqp connections are not thread-safe, and kombu's Redis transport would
  exhaust its pool of connections under a burst of acknowledgements);
* delivering again later when the store cannot take a task back: on RabbitMQ a
  copy is published at the tail of the queue and the original acknowledged
  (a requeued message would come straight back); on Redis the message is
  rejected after the pause;
* on Redis, kombu's visibility of fetched messages: extended with the lease
  while they run, and messages held longer than the lease restored
  (:mod:`taskserve_celery.visibility`).

Retries are not sent as Celery ETA messages (which Redis would deliver twice
past its visibility timeout, and which a worker holds in memory): the store's
ledger publishes them when due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from celery import Celery

from taskserve.kit import (
    Begun,
    BrokerUnavailable,
    ConsumerBase,
    DeadLetter,
    Delivery,
    Settlement,
    StoreRecorder,
    TaskMessage,
    TaskProcessorConfig,
    TaskRunner,
    TaskStore,
    redact_url,
)
from taskserve_celery.config import BrokerKind
from taskserve_celery.deadletters import MirroringRecorder
from taskserve_celery.visibility import RedisVisibility
from taskserve_celery.wire import body_bytes, read_delivery
from taskserve_celery.worker import EmbeddedWorker

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
"""Longest wait for the worker to connect and start consuming."""

HAND_BACK_TIMEOUT_S = 5.0
"""Longest wait, at stop, for the worker thread to hand back what it holds."""


class CeleryConsumer(ConsumerBase):
    """Consumes one queue with an embedded Celery worker (its DeliveryHandler)."""

    def __init__(
        self,
        *,
        app: Celery,
        config: TaskProcessorConfig,
        broker_kind: BrokerKind,
        store: TaskStore,
        runner: TaskRunner,
        concurrency: int,
        publish: Callable[[TaskMessage], None],
        engine_depth: Callable[[], int],
        mirror_dead_letter: Callable[[DeadLetter], None] | None = None,
    ) -> None:
        super().__init__(
            store=store,
            config=config,
            runner=runner,
            concurrency=concurrency,
            name="celery",
            publish=publish,
            engine_depth=engine_depth,
        )
        # Settlements from the pool threads and the consumer thread's own writes
        # take turns. py-amqp connections are not thread-safe; kombu's Redis
        # transport takes a connection from a pool of ten per acknowledgement,
        # and a burst of them (a batch ending) would exhaust it.
        self.wire_lock: AbstractContextManager[Any] = threading.Lock()
        self._app = app
        self.transport = broker_kind.value
        self._mirror_dead_letter = mirror_dead_letter
        self._resend_copies = broker_kind is BrokerKind.AMQP
        self._exit = threading.Event()
        self._handed_back = threading.Event()
        self._visibility = RedisVisibility(app) if broker_kind is BrokerKind.REDIS else None
        self._restore_every_s = min(max(config.lease_s / 4, 0.25), 5.0)
        self._last_restore = 0.0
        self._worker = EmbeddedWorker(
            app, config.queue_name, concurrency, broker_kind, self, config.lease_s
        )
        self._broker = redact_url(str(app.conf.broker_url))

    # -- the engine's part -------------------------------------------------------
    def _start_engine(self) -> None:
        self._worker.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._worker.ready.wait(0.05):
            if not self._worker.alive():
                self._exit.set()
                raise BrokerUnavailable(
                    f"the Celery worker for queue '{self.config.queue_name}' stopped before "
                    f"it could consume from {self._broker} (see its logged error; with "
                    "broker_connection_retry_on_startup=False it does not retry connecting)"
                )
            if time.monotonic() > deadline:
                self._exit.set()
                raise BrokerUnavailable(
                    f"the Celery worker for queue '{self.config.queue_name}' could not start "
                    f"consuming from {self._broker} within {START_TIMEOUT_S:.0f}s"
                )

    def _engine_alive(self) -> bool:
        return self._worker.alive() and self._worker.ready.is_set()

    def _stop_fetching(self) -> None:
        """The consumer thread cancels its consumer on its next turn."""

    def _stop_engine(self, abandoned: bool) -> None:
        self._exit.set()
        if self._worker.alive() and self._worker.ready.is_set():
            self._handed_back.wait(HAND_BACK_TIMEOUT_S)
            self._worker.join(0.0 if abandoned else HAND_BACK_TIMEOUT_S)
        if self._visibility is not None:
            self._visibility.close()

    def _settle(self, delivery: Delivery, how: Settlement) -> None:
        with self.wire_lock:
            if how is Settlement.ACK:
                delivery.handle.ack()
            else:
                delivery.handle.reject(requeue=True)

    def _resend_later(self, delivery: Delivery) -> Settlement:
        self._stopping.wait(self.redelivery_delay_s)
        if not self._resend_copies:
            return Settlement.HAND_BACK  # kombu's Redis transport requeues at the tail
        # RabbitMQ would put a rejected message back at the head, where it is
        # fetched again at once: publish a copy at the tail instead.
        message = delivery.handle
        properties = {
            key: message.properties[key]
            for key in ("correlation_id", "reply_to", "priority")
            if message.properties.get(key) is not None
        }
        with self._app.producer_or_acquire() as producer:
            producer.publish(
                message.body,
                exchange=self.config.queue_name,
                routing_key=self.config.queue_name,
                headers=message.headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                delivery_mode=2,
                retry=True,
                **properties,
            )
        return Settlement.ACK

    def _recorder(self, delivery: Delivery, begun: Begun) -> StoreRecorder:
        if self._mirror_dead_letter is None:
            return super()._recorder(delivery, begun)
        return MirroringRecorder(
            self.store, delivery.task_id, begun, self._mirror_dead_letter, owner=self.owner
        )

    def _extend_engine(self, held: list[Delivery]) -> None:
        if self._visibility is not None:
            self._visibility.extend(d.handle.delivery_tag for d in held)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self._visibility is not None and now - self._last_restore >= self._restore_every_s:
            self._last_restore = now
            self._visibility.restore_expired()

    # -- DeliveryHandler (called by the embedded worker's consumer thread) ----------
    def fetching_wanted(self) -> bool:
        return not self.stopping

    def exit_wanted(self) -> bool:
        return self._exit.is_set()

    def on_message(self, message: Any) -> None:
        payload = read_delivery(
            body_bytes(message.body), message.headers, message.content_type, self.config.queue_name
        )
        self.offer(Delivery(message, payload))

    def hand_back_unsettled(self) -> None:
        """Requeue what the consumer thread still holds, then let it end."""
        self._handed_back.set()

    def on_poison(self, error: Exception) -> None:
        doc = getattr(error, "doc", None)
        if isinstance(doc, str):
            # kombu's Redis transport popped an item that is not a kombu
            # message at all; keep its bytes as an undecodable dead letter.
            self.offer(Delivery(_Unacknowledgeable(), doc.encode()))
            return
        logger.error(
            "taskserve-celery: dropped an item of queue '%s' the transport cannot read: %r",
            self.config.queue_name,
            error,
        )


class _Unacknowledgeable:
    """The handle of an item kombu popped but could not parse: there is nothing
    to acknowledge or requeue on the broker."""

    delivery_tag = None

    def ack(self) -> None:
        """Nothing to acknowledge."""

    def reject(self, requeue: bool) -> None:
        """Nothing to requeue: the bytes are kept as a dead letter instead."""
