"""Dramatiq brokers owned by one adapter instance.

Each adapter builds its own broker (never Dramatiq's global one) with:

* one generic actor for its queue; every actor name resolves to it, so a task
  name no handler knows reaches the runner (and its unprocessable dead-letter
  queue) instead of Dramatiq's "actor not found" path;
* consumers that screen what they fetch: bytes that are not a Dramatiq
  message become a placeholder carrying them (see :mod:`taskserve_dramatiq.wire`);
* *hand back*: a delivery marked with :func:`hand_back` is returned to its
  queue when Dramatiq would acknowledge it (Redis: requeued; RabbitMQ:
  nacked with requeue), which is how a message whose outcome could not be
  recorded, or that arrived while the consumer stops, is never lost;
* a *stopping* mode in which consumers fetch nothing more and hand back what
  they had buffered;
* on Redis, heartbeats and queue maintenance on a timer derived from the
  lease, so a crashed consumer's messages are delivered again within it;
* task priorities 0 to 9, higher first: on RabbitMQ the queue's own
  (``x-max-priority``), on Redis one list per level, fetched highest first
  within the consumer's one prefetch bound (:mod:`taskserve_dramatiq.scripts`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import pika
import pika.exceptions
import redis
from dramatiq.actor import Actor
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from taskserve.kit import (
    MAX_PRIORITY,
    PRIORITY_LEVELS,
    ConfigError,
    TaskProcessorConfig,
    priority_level_name,
    secret_value,
)
from taskserve_dramatiq import scripts
from taskserve_dramatiq.config import DramatiqAdapterConfig
from taskserve_dramatiq.wire import as_bytes, decode_checked, placeholder, priority_level

logger = logging.getLogger(__name__)

_HAND_BACK = "_taskserve_hand_back"

Deliver = Callable[[MessageProxy], None]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def hand_back(message: MessageProxy) -> None:
    """Return ``message`` to its queue instead of acknowledging it."""
    message.__dict__[_HAND_BACK] = True


def _handed_back(message: MessageProxy) -> bool:
    return bool(message.__dict__.get(_HAND_BACK, False))


class CurrentDelivery(Middleware):
    """Keeps the message each worker thread is processing."""

    def __init__(self) -> None:
        self._local = threading.local()

    def message(self) -> MessageProxy | None:
        """The message of the calling worker thread, if any."""
        message: MessageProxy | None = getattr(self._local, "message", None)
        return message

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        self._local.message = message

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._local.message = None

    after_skip_message = after_process_message


class TaskBroker(Broker):
    """What the adapter adds to Dramatiq's brokers (mixed in before them)."""

    queue_name: str
    stopping: threading.Event
    current: CurrentDelivery
    actor: Actor[..., None]
    _deliver: Deliver | None

    def _init_routing(self, queue_name: str, current: CurrentDelivery) -> None:
        self.queue_name = queue_name
        self.stopping = threading.Event()
        self.current = current
        self._deliver = None
        self.actor = Actor(
            self._receive,
            broker=self,
            actor_name=f"taskserve:{queue_name}",
            queue_name=queue_name,
            priority=0,
            options={},
        )

    def get_actor(self, actor_name: str) -> Actor[..., None]:
        """Every actor name is served by the queue's generic actor."""
        return self.actor

    def route_to(self, deliver: Deliver | None) -> None:
        """Send the messages the worker threads process to ``deliver``."""
        self._deliver = deliver

    def _receive(self, *args: Any, **kwargs: Any) -> None:
        message = self.current.message()
        deliver = self._deliver
        if message is None or deliver is None:
            raise RuntimeError("a taskserve message was processed outside a started consumer")
        deliver(message)

    def boot(self) -> None:
        """Tell the middleware the process booted (starts TimeLimit's timer), once."""
        if not getattr(self, "_booted", False):
            self._booted = True
            self.emit_after("process_boot")

    def keep_alive(self) -> None:
        """Periodic upkeep while consuming (nothing by default)."""

    @property
    def heartbeat_every_s(self) -> float | None:
        """How often :meth:`keep_alive` must run; None if never."""
        return None

    def ping(self) -> None:
        """Raise if the broker cannot be reached."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Declare the queue where the broker needs it, before consuming; raise
        ConfigError if the broker refuses it (nothing to declare by default)."""

    def enqueue_first(self, message: Message[Any]) -> Message[Any]:
        """Enqueue ``message`` at the head of its queue where the broker can
        (Redis); at the tail otherwise (RabbitMQ has no head to put it at)."""
        return self.enqueue(message)

    def queue_depth(self) -> int:
        """Messages waiting in the queue (every priority level) and its delay queue."""
        raise NotImplementedError


# -- Redis -------------------------------------------------------------------


class TaskRedisBroker(TaskBroker, RedisBroker):
    """Dramatiq's Redis broker with priority levels, and heartbeats and
    maintenance on a timer.

    The queue is one list of message ids per priority level (Dramatiq's own
    list is level 0; see :mod:`taskserve_dramatiq.scripts`), sharing
    Dramatiq's hash of bodies and its sets of fetched ids. A fetch takes the
    highest levels first, up to the consumer's free prefetch; a message handed
    back or recovered returns to the head of its own level. The delay queue
    stays Dramatiq's single list: a delayed message is enqueued at its level
    when it is due.

    A consumer whose process died stops heartbeating; after ``lease_s`` the
    maintenance of any live consumer of the queue moves its unacknowledged
    messages back to their levels. Live consumers heartbeat every quarter lease.
    """

    def __init__(
        self,
        *,
        queue_name: str,
        url: str,
        lease_s: float,
        middleware: list[Middleware],
        current: CurrentDelivery,
        namespace: str = "dramatiq",
        dead_message_ttl: int | None = None,
    ) -> None:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
        )
        extra = {} if dead_message_ttl is None else {"dead_message_ttl": dead_message_ttl}
        RedisBroker.__init__(  # type: ignore[no-untyped-call]
            self,
            middleware=middleware,
            namespace=namespace,
            maintenance_chance=0,
            heartbeat_timeout=max(int(lease_s * 1000), 1),
            client=client,
            **extra,
        )
        self._lease_s = lease_s
        self._maintaining = threading.local()
        self._claims: set[str] = set()
        self._claims_lock = threading.Lock()
        self._init_routing(queue_name, current)
        base = f"{namespace}:{queue_name}"
        self._level_keys = [priority_level_name(base, level) for level in PRIORITY_LEVELS]
        self._bodies_key = f"{base}.msgs"
        self._heartbeats_key = f"{namespace}:__heartbeats__"
        self._fetched_prefix = f"{namespace}:__acks__."
        self._fetch_script = client.register_script(scripts.FETCH)
        self._requeue_script = client.register_script(scripts.REQUEUE)
        self._recover_script = client.register_script(scripts.RECOVER)

    @property
    def level_keys(self) -> list[str]:
        """The Redis lists of the queue's priority levels, lowest first."""
        return list(self._level_keys)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _TaskRedisConsumer

    @property
    def heartbeat_every_s(self) -> float | None:
        return self._lease_s / 4

    def _should_do_maintenance(self, command: str) -> int:
        return int(getattr(self._maintaining, "on", False))

    def keep_alive(self) -> None:
        """Heartbeat, and move messages of dead consumers back to the queue: to
        their own levels (:data:`~taskserve_dramatiq.scripts.RECOVER`), then, by
        Dramatiq's maintenance, to the delay queue."""
        self._recover_script(
            keys=[self._heartbeats_key, self._bodies_key, *self._level_keys],
            args=[
                current_millis(),
                self.heartbeat_timeout,
                self.broker_id,
                self._fetched_prefix,
                self.queue_name,
            ],
        )
        self._maintaining.on = True
        try:
            self.do_qsize(dq_name(self.queue_name))
        finally:
            self._maintaining.on = False

    def ping(self) -> None:
        self.client.ping()

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Enqueue like Dramatiq, at the tail of the list of the message's
        priority level; a delayed message goes to Dramatiq's delay queue, and
        to its level when it is due."""
        if delay is not None or message.queue_name != self.queue_name:
            enqueued: Message[Any] = super().enqueue(message, delay=delay)
            return enqueued
        return self._push(message, first=False)

    def enqueue_first(self, message: Message[Any]) -> Message[Any]:
        """Enqueue like :meth:`enqueue` (no delay), but at the head of the list
        of the message's level."""
        return self._push(message, first=True)

    def _push(self, message: Message[Any], *, first: bool) -> Message[Any]:
        """The message body in the queue's hash and its Redis id (ending with
        its level, see :mod:`taskserve_dramatiq.scripts`) pushed on its level's
        list, in one transaction."""
        level = priority_level(message)
        redis_id = priority_level_name(str(uuid.uuid4()), level)
        message = message.copy(options={"redis_message_id": redis_id})
        self.emit_before("enqueue", message, None)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(f"{self.namespace}:{message.queue_name}.msgs", redis_id, message.encode())
        if message.queue_name == self.queue_name:
            key = self._level_keys[level]
        else:  # a queue with no levels: Dramatiq's one list
            key = f"{self.namespace}:{message.queue_name}"
        if first:
            pipe.lpush(key, redis_id)
        else:
            pipe.rpush(key, redis_id)
        pipe.execute()
        self.emit_after("enqueue", message, None)
        return message

    def queue_depth(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in self._level_keys:
            pipe.llen(key)
        pipe.hlen(f"{self.namespace}:{dq_name(self.queue_name)}.msgs")
        return sum(int(count) for count in pipe.execute())

    def do_fetch(self, queue_name: str, count: int) -> list[bytes | None]:
        """Fetch up to ``count`` messages, replacing what Dramatiq's consumer could
        not process: from the queue's levels, highest first
        (:data:`~taskserve_dramatiq.scripts.FETCH`), or like Dramatiq from the
        delay queue."""
        if queue_name != self.queue_name:
            fetched: list[bytes | None] = self._dispatch("fetch")(queue_name, count)  # type: ignore[no-untyped-call]
            return [None if data is None else self._screen(queue_name, data) for data in fetched]
        pairs = self._fetch_script(
            keys=[self._heartbeats_key, self._bodies_key, self._fetched_key, *self._level_keys],
            args=[count, current_millis(), self.broker_id],
        )
        return [
            self._screen(queue_name, pairs[i + 1], _text(pairs[i])) for i in range(0, len(pairs), 2)
        ]

    @property
    def _fetched_key(self) -> str:
        """This broker's set of fetched, unacknowledged ids of the queue."""
        return f"{self._fetched_prefix}{self.broker_id}.{self.queue_name}"

    def requeue_ids(self, redis_ids: list[str]) -> None:
        """Hand fetched messages of the queue back, each to the head of its level
        (:data:`~taskserve_dramatiq.scripts.REQUEUE`)."""
        if redis_ids:
            self._requeue_script(
                keys=[self._bodies_key, self._fetched_key, *self._level_keys], args=redis_ids
            )

    def _screen(self, queue_name: str, data: bytes, redis_id: str | None = None) -> bytes:
        """``data`` as fetched, or a message standing in for it that Dramatiq's
        consumer can process under the Redis id it was fetched with (``redis_id``
        when known, found otherwise)."""
        message = decode_checked(data)
        if message is not None and message.queue_name == queue_name:
            carried = message.options.get("redis_message_id")
            usable = isinstance(carried, str) if redis_id is None else carried == redis_id
            if usable:
                return data
        if redis_id is None:
            redis_id = self._claim_fetched_id(queue_name, data)
        if message is None:
            replacement = placeholder(as_bytes(data), queue_name, redis_message_id=redis_id)
        else:
            replacement = message.copy(
                queue_name=queue_name, options={"redis_message_id": redis_id}
            )
        return bytes(replacement.encode())

    def _claim_fetched_id(self, queue_name: str, data: bytes) -> str:
        """The Redis id under which ``data`` was just fetched.

        Dramatiq's fetch returns message bodies only and finds the id inside
        them; for a body that has none, it is found among this consumer's
        unacknowledged ids by comparing the stored bodies.
        """
        acks = f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"
        ids = sorted(_text(i) for i in self.client.smembers(acks))
        bodies = self.client.hmget(f"{self.namespace}:{queue_name}.msgs", ids) if ids else []
        with self._claims_lock:
            for redis_id, body in zip(ids, bodies, strict=True):
                if body == data and redis_id not in self._claims:
                    self._claims.add(redis_id)
                    return redis_id
        logger.warning("taskserve: could not find the Redis id of a message on '%s'", queue_name)
        return f"unknown-{time.time_ns()}"

    def release_claim(self, redis_id: object) -> None:
        """Forget an id found by :meth:`_claim_fetched_id` once it is acknowledged."""
        if isinstance(redis_id, str):
            with self._claims_lock:
                self._claims.discard(redis_id)


class _TaskRedisConsumer(_RedisConsumer):
    broker: TaskRedisBroker

    def __next__(self) -> MessageProxy | None:
        if self.broker.stopping.is_set() and not self.message_cache:
            time.sleep(self.timeout / 1000)
            return None
        proxy: MessageProxy | None = super().__next__()  # type: ignore[no-untyped-call]
        return proxy

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Hand fetched messages back: those of the queue each to the head of its
        own level, those of the delay queue as Dramatiq does."""
        if self.queue_name != self.broker.queue_name:
            super().requeue(messages)  # type: ignore[no-untyped-call]
            return
        self.broker.requeue_ids([message.options["redis_message_id"] for message in messages])

    def ack(self, message: MessageProxy) -> None:
        try:
            if _handed_back(message):
                self.queued_message_ids.discard(message.message_id)
                try:
                    self.requeue([message])
                except redis.ConnectionError as e:
                    raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]
            else:
                super().ack(message)  # type: ignore[no-untyped-call]
        finally:
            self.broker.release_claim(message.options.get("redis_message_id"))


# -- RabbitMQ ------------------------------------------------------------------

_AMQP_ERRORS = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)


class TaskRabbitmqBroker(TaskBroker, RabbitmqBroker):
    """Dramatiq's RabbitMQ broker; a dead consumer's connection closes and
    RabbitMQ delivers its unacknowledged messages again.

    The queue and its delay queue are declared with ``x-max-priority``
    (``max_priority``, 9 by default), and a message is published with its
    ``broker_priority``: RabbitMQ hands a consumer the highest priority
    waiting first, and keeps a message's priority when it requeues it. A queue
    that exists without that argument cannot be declared: see :meth:`_declaring`.
    """

    def __init__(
        self,
        *,
        queue_name: str,
        url: str,
        lease_s: float,
        middleware: list[Middleware],
        current: CurrentDelivery,
        confirm_delivery: bool = True,
        max_priority: int = MAX_PRIORITY,
    ) -> None:
        RabbitmqBroker.__init__(
            self,
            url=url,
            middleware=middleware,
            confirm_delivery=confirm_delivery,
            max_priority=max_priority,
        )
        # Publishing connections keep the URL's settings. Consuming connections
        # get a heartbeat of one lease (unless the URL sets one): a consumer that
        # stops answering (frozen, cut off) then loses its connection, and with
        # it its unacknowledged messages, after about one lease.
        self.producer_parameters = self.parameters
        self.parameters = _with_heartbeat(self.parameters, max(math.ceil(lease_s), 1))
        self._init_routing(queue_name, current)

    def _thread_connection(self) -> pika.BlockingConnection:
        """The publishing connection of the calling thread."""
        connection = getattr(self.state, "connection", None)
        if connection is None:
            connection = pika.BlockingConnection(parameters=self.producer_parameters)
            self.state.connection = connection
            self.connections.add(connection)
        return connection

    connection = property(
        _thread_connection,
        None,
        RabbitmqBroker.connection.fdel,  # type: ignore[attr-defined]
    )

    @property
    def consumer_class(self) -> type[_RabbitmqConsumer]:
        return _TaskRabbitmqConsumer

    def _on_this_thread(self, action: Callable[[], Any]) -> Any:
        """Run ``action`` on this thread's connection, reconnecting once."""
        try:
            return action()
        except _AMQP_ERRORS:
            del self.connection
            return action()

    def ping(self) -> None:
        self._on_this_thread(lambda: self.connection.process_data_events(time_limit=0))

    def prepare(self) -> None:
        """Declare the queue on this thread, so that a queue RabbitMQ refuses to
        declare is a ConfigError of the caller and not a consumer thread that
        restarts for ever; a broker that cannot be reached is left to the
        consumer threads, which connect again until it can."""
        try:
            self.declare_queue(self.queue_name, ensure=True)
        except ConnectionClosed as e:
            logger.warning("taskserve: could not declare queue '%s' yet: %s", self.queue_name, e)

    @contextlib.contextmanager
    def _declaring(self, queue_name: str) -> Iterator[None]:
        """Turn RabbitMQ's refusal to declare ``queue_name`` with this broker's
        arguments (PRECONDITION_FAILED, inequivalent arg: the queue exists with
        others, as queues created before task priorities or by plain Dramatiq
        do, without ``x-max-priority``) into a ConfigError saying what to do."""
        try:
            yield
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code != 406 or "inequivalent arg" not in str(e.reply_text):
                raise
            del self.channel  # closed by RabbitMQ; the next call opens another
            raise ConfigError(
                f"RabbitMQ refused to declare queue '{queue_name}': it exists with other "
                f"arguments than taskserve-dramatiq declares (x-max-priority "
                f"{self.max_priority}, for task priorities), probably created by an "
                f"earlier version or by plain Dramatiq ({e.reply_text}). Delete the queue "
                "once it is drained (rabbitmqctl delete_queue, or the management UI; "
                f"'{self.queue_name}' and '{dq_name(self.queue_name)}' are both declared "
                "so) so that it is declared again, set broker_options max_priority to "
                "the queue's x-max-priority if it has one of at least "
                f"{MAX_PRIORITY}, or use a new queue name"
            ) from e

    def _declare_queue(self, queue_name: str) -> Any:
        with self._declaring(queue_name):
            return super()._declare_queue(queue_name)  # type: ignore[no-untyped-call]

    def _declare_dq_queue(self, queue_name: str) -> Any:
        with self._declaring(dq_name(queue_name)):
            return super()._declare_dq_queue(queue_name)  # type: ignore[no-untyped-call]

    def queue_depth(self) -> int:
        counts = self._on_this_thread(lambda: self.get_queue_message_counts(self.queue_name))
        return int(counts[0]) + int(counts[1])


def _with_heartbeat(parameters: Any, heartbeat_s: int) -> Any:
    """Copies of pika ``parameters`` (one or a list) with ``heartbeat_s`` where
    none was set."""
    if isinstance(parameters, list):
        return [_with_heartbeat(p, heartbeat_s) for p in parameters]
    changed = copy.copy(parameters)
    if changed.heartbeat is None:
        changed.heartbeat = heartbeat_s
    return changed


class _TaskRabbitmqConsumer(_RabbitmqConsumer):
    broker: TaskRabbitmqBroker

    def __init__(self, broker: TaskRabbitmqBroker, queue_name: str, prefetch: int, timeout: int):
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self.iterator = self._screened(self.iterator)
        self._idle_s = timeout / 1000
        self._cancelled = False

    def _screened(self, deliveries: Iterator[Any]) -> Iterator[Any]:
        for method, properties, body in deliveries:
            if method is not None:
                message = decode_checked(body)
                if message is None:
                    body = placeholder(as_bytes(body), self.queue_name).encode()
                elif message.queue_name != self.queue_name:
                    body = message.copy(queue_name=self.queue_name).encode()
            yield method, properties, body

    def __next__(self) -> MessageProxy | None:
        if not self.broker.stopping.is_set():
            proxy: MessageProxy | None = super().__next__()  # type: ignore[no-untyped-call]
            return proxy
        try:
            if not self._cancelled:
                self._cancelled = True
                self.channel.cancel()  # buffered deliveries go back to the queue
            self.connection.process_data_events(time_limit=self._idle_s)
        except _AMQP_ERRORS as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]
        return None

    def ack(self, message: MessageProxy) -> None:
        if not _handed_back(message):
            super().ack(message)  # type: ignore[no-untyped-call]
            return
        self.known_tags.discard(message._tag)
        try:
            self.connection.add_callback_threadsafe(
                partial(self.channel.basic_nack, message._tag, requeue=True)
            )
        except Exception as e:
            # The connection is gone: RabbitMQ delivers the message again anyway.
            logger.warning("taskserve: could not hand message %s back: %s", message.message_id, e)


# -- factory -------------------------------------------------------------------


def build_broker(settings: DramatiqAdapterConfig, config: TaskProcessorConfig) -> TaskBroker:
    """The broker of one adapter instance for ``config.queue_name``."""
    current = CurrentDelivery()
    middleware: list[Middleware] = [current]
    options = dict(settings.broker_options)
    if settings.kind == "redis":
        return TaskRedisBroker(
            queue_name=config.queue_name,
            url=secret_value(settings.broker_url),
            lease_s=config.lease_s,
            middleware=middleware,
            current=current,
            **options,
        )
    broker = TaskRabbitmqBroker(
        queue_name=config.queue_name,
        url=secret_value(settings.broker_url),
        lease_s=config.lease_s,
        middleware=middleware,
        current=current,
        **options,
    )
    return broker
