"""Celery's worker, embedded in a background thread of the calling process.

:class:`EmbeddedWorker` runs a Celery ``WorkController`` (the worker without
its command-line shell) with the ``threads`` pool, so tasks run in the same
process as the Serve replica. What the command-line worker adds and an
embedded one must not have is left out or replaced:

* no signal handlers, no logging setup, no remote control, events, gossip,
  mingle or heartbeat broadcasts;
* no event-loop hub (kombu keeps one per process), so the consumer uses a
  blocking drain loop of its own: two adapters in one process share nothing;
* deliveries go to a :class:`DeliveryHandler` instead of Celery's request
  machinery, whose bookkeeping is process-global and which acknowledges or
  drops messages on its own terms (decode errors, unknown task names);
* stopping never goes through Celery's shutdown path, which waits for every
  running thread and changes the process-wide default socket timeout.

Celery still manages the broker connection (reconnecting after a loss) and
the prefetch limit (QoS of ``concurrency`` messages, acknowledged late);
tasks run on the consumer's pool (:class:`taskserve.kit.ConsumerBase`).
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from celery import Celery, bootsteps
from celery import _state as celery_state
from celery.concurrency.thread import TaskPool
from celery.worker import WorkController
from celery.worker.consumer import Consumer

from taskserve_celery.config import BrokerKind

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 0.2
"""Longest the consumer thread blocks on the broker before checking for a stop."""


class DeliveryHandler(Protocol):
    """What the embedded worker's consumer thread calls."""

    wire_lock: AbstractContextManager[Any]
    """Held around every write on the consumer's broker connection."""

    def on_message(self, message: Any) -> None:
        """A message was delivered (consumer thread); settle it eventually."""

    def fetching_wanted(self) -> bool:
        """False once the consumer must stop fetching."""

    def exit_wanted(self) -> bool:
        """True once the consumer thread must hand back what it holds and end."""

    def wait_for_capacity(self, timeout: float) -> object:
        """Return once a pool slot is free, or after ``timeout`` seconds."""

    def hand_back_unsettled(self) -> None:
        """Requeue every delivery not yet acknowledged (consumer thread)."""

    def on_poison(self, error: Exception) -> None:
        """The transport could not even read a message off the broker."""


class _Finished(Exception):
    """Raised by the drain loop to end the embedded worker."""


class _TaskserveConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer with the drain loop handing messages to taskserve."""

    controller: _EmbeddedWorkController

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.controller.broker_kind is BrokerKind.AMQP:
            # The lease on RabbitMQ: a consumer that stops sending heartbeats
            # (frozen, cut off) loses its connection, and RabbitMQ requeues
            # its messages, within about a lease. The drain loop sends them.
            self.amqheartbeat = self.controller.heartbeat_s

    def on_close(self) -> None:
        # Celery's version clears process-global request bookkeeping; this
        # consumer keeps its deliveries in its DeliveryHandler instead.
        return None

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        if hasattr(message, "ack"):
            self.controller.delivery_handler.on_message(message)
        else:
            self.controller.delivery_handler.on_poison(exc)

    def loop(
        self,
        obj: Any,
        connection: Any,
        consumer: Any,
        blueprint: Any,
        hub: Any,
        qos: Any,
        heartbeat: Any,
        clock: Any,
        hbrate: float = 2.0,
        **kwargs: Any,
    ) -> None:
        handler = self.controller.delivery_handler
        consumer.on_message = handler.on_message
        fetching = handler.fetching_wanted()
        if fetching:
            consumer.consume()
        obj.on_ready()
        beats = bool(self.amqheartbeat) and connection.supports_heartbeats
        errors = tuple(connection.connection_errors) + tuple(connection.channel_errors)
        while blueprint.state == bootsteps.RUN and obj.connection:
            if handler.exit_wanted():
                handler.hand_back_unsettled()
                raise _Finished()
            if fetching and not handler.fetching_wanted():
                with handler.wire_lock:
                    consumer.cancel()
                fetching = False
            if qos.prev != qos.value:
                with handler.wire_lock:
                    qos.update()
            # While every slot is busy nothing can be fetched; wait for a slot to
            # free instead of on the broker (kombu's Redis transport would not
            # notice the freed slot before its poll timed out).
            handler.wait_for_capacity(DRAIN_TIMEOUT_S)
            try:
                if beats:
                    with handler.wire_lock:
                        connection.heartbeat_check(rate=hbrate)
                connection.drain_events(timeout=DRAIN_TIMEOUT_S)
            except TimeoutError:
                pass
            except errors:
                raise
            except OSError:
                if blueprint.state == bootsteps.RUN:
                    raise
            except Exception as e:
                handler.on_poison(e)


class _EmbeddedWorkController(WorkController):  # type: ignore[misc]
    """A WorkController without event-loop hub and without Celery's shutdown."""

    delivery_handler: DeliveryHandler
    broker_kind: BrokerKind
    heartbeat_s: int

    def __init__(
        self,
        *,
        delivery_handler: DeliveryHandler,
        broker_kind: BrokerKind,
        heartbeat_s: int,
        on_ready: Callable[[], None],
        **kwargs: Any,
    ) -> None:
        self.delivery_handler = delivery_handler
        self.broker_kind = broker_kind
        self.heartbeat_s = heartbeat_s
        self._on_ready = on_ready
        super().__init__(**kwargs)

    def should_use_eventloop(self) -> bool:
        return False

    def on_consumer_ready(self, consumer: Any) -> None:
        self._on_ready()

    def start(self) -> None:
        try:
            self.blueprint.start(self)
        except _Finished:
            pass
        finally:
            self._teardown()

    def _teardown(self) -> None:
        consumer = getattr(self, "consumer", None)
        if consumer is not None:
            try:
                consumer.shutdown()  # closes the channel and the connection
            except Exception:
                logger.exception("taskserve-celery: closing the broker connection failed")
        timer = getattr(self, "timer", None)
        if timer is not None:
            timer.stop()
        pool = getattr(self, "pool", None)
        if pool is not None:
            # Waits for handlers still running after the graceful timeout; their
            # messages were handed back already. Only this thread waits.
            pool.stop()


class EmbeddedWorker:
    """A Celery worker consuming one queue in a daemon thread of this process."""

    def __init__(
        self,
        app: Celery,
        queue_name: str,
        concurrency: int,
        broker_kind: BrokerKind,
        handler: DeliveryHandler,
        lease_s: float,
    ) -> None:
        self.ready = threading.Event()
        self.hostname = f"taskserve-{uuid.uuid4().hex[:12]}@{socket.gethostname()}"
        self._failure: BaseException | None = None
        # Creating a pool sets a process-wide flag that makes AsyncResult.get()
        # refuse to run anywhere in the process; tasks here never call it, so
        # the process keeps the value it had.
        join_will_block = celery_state.task_join_will_block()
        self._controller = _EmbeddedWorkController(
            app=app,
            hostname=self.hostname,
            delivery_handler=handler,
            broker_kind=broker_kind,
            heartbeat_s=max(1, math.ceil(lease_s)),
            on_ready=self.ready.set,
            # Tasks run on the consumer's own pool; Celery's threads pool only sets
            # the prefetch limit (its size), and never starts a thread.
            pool_cls=TaskPool,
            concurrency=concurrency,
            prefetch_multiplier=1,
            consumer_cls=_TaskserveConsumer,
            queues=[queue_name],
            task_events=False,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )
        celery_state._set_task_join_will_block(join_will_block)
        self._thread = threading.Thread(
            target=self._run, name=f"taskserve-celery-{queue_name}", daemon=True
        )

    def start(self) -> None:
        """Start the worker thread (it connects to the broker, then consumes)."""
        self._thread.start()

    def _run(self) -> None:
        try:
            self._controller.start()
        except BaseException as e:
            self._failure = e
            logger.exception("taskserve-celery: the embedded Celery worker died")

    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread.is_alive()

    @property
    def connected(self) -> bool:
        """Whether the consumer holds a broker connection right now."""
        consumer = getattr(self._controller, "consumer", None)
        return consumer is not None and consumer.connection is not None

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the thread to end; True if it ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()
