"""One Celery application per adapter instance, configured for its queue.

Nothing here touches Celery's process-wide state: the app is never made the
current or default app, no signal is connected, and every setting that the
delivery promises depend on is fixed (late acks, prefetch multiplier 1, the
threads pool, JSON only). On Redis the visibility timeout is the lease and
the unacked bookkeeping keys are per queue, so a consumer with a short lease
never restores another queue's messages. Priorities are the brokers' own:
RabbitMQ queues are declared with ``x-max-priority`` 9, and kombu's Redis
transport keeps one list per priority (:func:`broker_priority`). On the
filesystem broker the message folders are created if missing, idle consumers
poll every ``FILESYSTEM_POLL_S``, and messages are written whole before a
consumer can see them, under names that sort by priority
(:mod:`taskserve_celery.filesystem`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import amqp.exceptions
import redis
from celery import Celery
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.exceptions import KombuError

from taskserve.kit import (
    MAX_PRIORITY,
    BrokerUnavailable,
    ConfigError,
    TaskMessage,
    TaskProcessorConfig,
    redact_url,
    redis_unavailable,
    secret_value,
)
from taskserve_celery.config import (
    REDIS_PRIORITY_OPTIONS,
    BrokerKind,
    CeleryAdapterConfig,
    broker_kind_of,
)
from taskserve_celery.filesystem import TRANSPORT as FILESYSTEM_TRANSPORT
from taskserve_celery.settings import MAPPED_APP_SETTINGS
from taskserve_celery.wire import send_task_arguments

FILESYSTEM_POLL_S = 0.1
"""How often an idle consumer of the filesystem broker looks for new files
(kombu's default is a second); ``polling_interval`` overrides it."""

RESTORE_MUTEX_EXPIRE_S = 1
"""Longest a consumer that died (or froze) while restoring expired messages keeps
the others from restoring them. Restoring twice at once is safe (each message is
moved back in a transaction), so the lock only saves duplicate scans."""

QUEUE_ARGUMENTS: dict[str, Any] = {"x-max-priority": MAX_PRIORITY}
"""Arguments of every queue the adapter declares: on RabbitMQ, native priorities
0 to 9, higher first (the Redis and filesystem transports ignore them). RabbitMQ
refuses to declare a queue that exists with other arguments
(:func:`declaring`)."""


def broker_failure(error: BaseException) -> bool:
    """Whether ``error``, raised by Celery or kombu talking to the broker, means
    the broker cannot be used now (BrokerUnavailable, HTTP 503): connections
    refused or lost, timeouts, refused AMQP credentials (``AccessRefused``)
    and other AMQP errors, kombu's errors, and what the Redis mapping of the
    kit counts (a paused or read-only Redis). The one mapping of the Celery
    adapter, for publishing and for every other broker call."""
    if isinstance(error, (OSError, KombuError, amqp.exceptions.AMQPError)):
        return True
    return isinstance(error, redis.RedisError) and (
        redis_unavailable(error) or isinstance(error, redis.ResponseError)
    )


def unacked_keys(settings: CeleryAdapterConfig, queue_name: str) -> dict[str, str]:
    """kombu's Redis keys of fetched-but-unacknowledged messages of one queue."""
    base = f"{settings.key_prefix}:celery:{queue_name}"
    return {
        "unacked_key": f"{base}:unacked",
        "unacked_index_key": f"{base}:unacked_index",
        "unacked_mutex_key": f"{base}:unacked_mutex",
    }


def transport_options(config: TaskProcessorConfig, settings: CeleryAdapterConfig) -> dict[str, Any]:
    """kombu transport options: the user's, plus the lease-derived ones and, on
    Redis, the priority lists (:data:`~taskserve_celery.config.REDIS_PRIORITY_OPTIONS`)."""
    options: dict[str, Any] = {}
    if settings.broker_kind is BrokerKind.REDIS:
        options.update(unacked_keys(settings, config.queue_name))
        options["visibility_timeout"] = config.lease_s
        options["unacked_mutex_expire"] = RESTORE_MUTEX_EXPIRE_S
    elif settings.broker_kind is BrokerKind.AMQP:
        options["confirm_publish"] = True
    else:
        options["polling_interval"] = FILESYSTEM_POLL_S
    options.update(settings.broker_transport_options or {})
    if settings.broker_kind is BrokerKind.REDIS:
        options.update(REDIS_PRIORITY_OPTIONS)
    return options


def broker_priority(priority: int, broker_kind: BrokerKind) -> int:
    """The message priority a task of ``priority`` (0 to 9, higher first) is
    published with: the same on RabbitMQ (a queue of ``x-max-priority`` 9 delivers
    higher ones first) and on the filesystem broker (kombu's meaning, higher
    first, which :mod:`taskserve_celery.filesystem` puts first in the message's
    file name); inverted on Redis (``9 - priority``), where kombu keeps one list
    per priority and pops the list of 0 first."""
    if broker_kind is BrokerKind.REDIS:
        return MAX_PRIORITY - priority
    return priority


@contextlib.contextmanager
def declaring(queue_name: str) -> Iterator[None]:
    """Turn RabbitMQ's refusal to declare ``queue_name`` with the adapter's
    :data:`QUEUE_ARGUMENTS` (PRECONDITION_FAILED, inequivalent arg: the queue
    exists with other arguments, as queues created by an earlier version do,
    without ``x-max-priority``) into a ConfigError saying what to do."""
    try:
        yield
    except amqp.exceptions.PreconditionFailed as e:
        if "inequivalent arg" not in str(e):
            raise
        raise ConfigError(
            f"RabbitMQ refused to declare queue '{queue_name}': it exists with other "
            f"arguments than taskserve-celery declares (x-max-priority {MAX_PRIORITY}, for "
            f"task priorities), probably created by an earlier version ({e}). Delete the "
            "queue once it is drained (rabbitmqctl delete_queue, or the management UI) so "
            "that it is declared again, or use a new queue name"
        ) from e


def make_folders(settings: CeleryAdapterConfig) -> None:
    """Create the filesystem broker's message and control folders if missing."""
    if settings.broker_kind is not BrokerKind.FILESYSTEM:
        return
    options = settings.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        folder = options.get(key)
        if folder:
            Path(str(folder)).mkdir(parents=True, exist_ok=True)
    if options.get("store_processed") and options.get("processed_folder"):
        Path(str(options["processed_folder"])).mkdir(parents=True, exist_ok=True)


def task_queue(queue_name: str) -> Queue:
    """The durable queue of the adapter, bound to a direct exchange of its name,
    with :data:`QUEUE_ARGUMENTS`: every queue the adapter declares (its task
    queue, and the dead-letter queues it mirrors records to) is declared so."""
    exchange = Exchange(queue_name, type="direct", durable=True)  # type: ignore[no-untyped-call]
    return Queue(  # type: ignore[no-untyped-call]
        queue_name,
        exchange,
        routing_key=queue_name,
        durable=True,
        queue_arguments=dict(QUEUE_ARGUMENTS),
    )


def ready_count(channel: Any, queue_name: str) -> int:
    """Declare the queue on ``channel`` (idempotent); return how many messages wait
    in it. A RabbitMQ queue that exists with other arguments is a ConfigError
    (:func:`declaring`)."""
    with declaring(queue_name):
        declared = task_queue(queue_name)(channel).queue_declare()  # type: ignore[no-untyped-call]
    return int(declared.message_count)


def broker_queue_length(broker_url: str, queue_name: str) -> int:
    """Messages waiting in ``queue_name`` on the broker at ``broker_url``, read
    with a passive declare (0 when the queue does not exist); on Redis, in every
    priority list of the queue."""
    redis_broker = broker_kind_of(broker_url) is BrokerKind.REDIS
    options = dict(REDIS_PRIORITY_OPTIONS) if redis_broker else {}
    connection: Any = Connection(  # type: ignore[no-untyped-call]
        broker_url, connect_timeout=5, transport_options=options
    )
    try:
        channel = connection.channel()
        try:
            declared = channel.queue_declare(queue=queue_name, passive=True)
        except connection.channel_errors:
            return 0
        return int(declared.message_count)
    except Exception as e:
        if not broker_failure(e):
            raise
        raise BrokerUnavailable(
            f"cannot reach the broker {redact_url(broker_url)}: {redact_url(str(e))}"
        ) from e
    finally:
        connection.release()


def build_app(config: TaskProcessorConfig, settings: CeleryAdapterConfig) -> Celery:
    """A Celery app for ``config.queue_name``; not set as current or default.

    ``app_custom_config`` is applied (the config let through only settings that
    take effect here, :mod:`taskserve_celery.settings`), but for the ones that
    are taskserve's (``task_time_limit``, which the runner applies), and then
    the settings the adapter keeps."""
    app = Celery(
        f"taskserve-{config.queue_name}",
        broker=secret_value(settings.broker_url),
        set_as_current=False,
        fixups=[],
    )
    app.conf.update(broker_connection_retry_on_startup=True)  # unless the user says
    custom = settings.app_custom_config or {}
    app.conf.update({k: v for k, v in custom.items() if k not in MAPPED_APP_SETTINGS})
    if settings.broker_kind is BrokerKind.FILESYSTEM:
        app.conf.broker_transport = FILESYSTEM_TRANSPORT
    app.conf.update(
        broker_transport_options=transport_options(config, settings),
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_protocol=2,
        task_compression=None,
        task_acks_late=True,
        task_acks_on_failure_or_timeout=False,
        task_reject_on_worker_lost=True,
        task_always_eager=False,
        task_queues=[task_queue(config.queue_name)],
        task_default_queue=config.queue_name,
        task_create_missing_queues=False,
        task_routes=None,
        worker_pool="threads",
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=False,
        worker_enable_prefetch_count_reduction=False,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_consumer="celery.worker.consumer:Consumer",
    )
    return app


def publish(
    app: Celery,
    message: TaskMessage,
    queue_name: str,
    broker_kind: BrokerKind,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Publish ``message`` to ``queue_name``; raise BrokerUnavailable if it was not
    sent, and ConfigError if RabbitMQ refused to declare the queue (:func:`declaring`).

    ``options`` are publish options of every task (``task_custom_config``): their
    ``priority`` (0 to 9, higher first) is that of a message enqueued without one;
    the message's own wins. Either is published as :func:`broker_priority` says
    (a task with neither has priority 0, the lowest)."""
    publish_options = dict(options or {})
    publish_options.pop("time_limit", None)
    publish_options.pop("soft_time_limit", None)
    default = publish_options.pop("priority", None)
    priority = message.priority if message.priority is not None else default
    publish_options["priority"] = broker_priority(priority or 0, broker_kind)
    try:
        with declaring(queue_name):
            app.send_task(**send_task_arguments(message), queue=queue_name, **publish_options)
    except Exception as e:
        if not broker_failure(e):
            raise
        raise BrokerUnavailable(
            f"cannot publish task {message.id} to queue '{queue_name}' on "
            f"{redact_url(str(app.conf.broker_url))}: {redact_url(str(e))}"
        ) from e
