"""The adapter contract: one abstract base class every queue engine implements.

Public methods (``enqueue_task_sync``, ``get_task_status_sync``, ...) are
defined here once, with argument checks, capability checks and lifecycle
hooks; each has an ``..._async`` twin. An adapter implements the protected
primitives below them (``_enqueue``, ``_get_status``, ``_cancel``,
``_start_consumer``, ...). Consumers run delivered tasks through
:class:`~taskserve.execution.TaskRunner`, so retries, dead letters,
cancellation and status rules are the same for every adapter.

Optional features are declared in ``capabilities``; calling one that is not
declared raises :class:`~taskserve.errors.UnsupportedCapability`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar

from taskserve.adapter_config import AdapterConfig
from taskserve.batch import batch_options
from taskserve.capabilities import Capability
from taskserve.config import TaskProcessorConfig
from taskserve.directory import queue_for
from taskserve.engine.runner import Handler, TaskRunner
from taskserve.errors import (
    BrokerUnavailable,
    ConfigError,
    InvalidArgument,
    TaskserveError,
    UnsupportedCapability,
)
from taskserve.hooks import TaskEvent
from taskserve.models import (
    CELERY_STATE_NAMES,
    AdapterMetrics,
    CancelOutcome,
    DeadLetter,
    DeadLetterKind,
    HealthReport,
    RedriveOutcome,
    TaskID,
    TaskResult,
)
from taskserve.plugins import emit
from taskserve.redaction import redact_url
from taskserve.scheduling import due_time, task_priority
from taskserve.serialization import TaskMessage, build_message
from taskserve.states import TaskState
from taskserve.webhooks.targets import WebhookTarget, webhook_target

logger = logging.getLogger(__name__)

DEFAULT_CONSUMER_CONCURRENCY = 5
"""Matches Ray Serve's default ``max_ongoing_requests``."""

DEFAULT_GRACEFUL_TIMEOUT_S = 20.0
"""Matches Ray Serve's default ``graceful_shutdown_timeout_s``."""

ROUTER_QUEUE = "default"
"""The queue of an adapter built from its typed config alone (a router): tasks
it cannot place and status reads go through it."""

MAX_TASK_LIST_LIMIT = 1000
"""Most task records one listing (``list_tasks_sync``, a store's ``recent``) returns."""

DEFAULT_TASK_LIST_LIMIT = 50
"""How many task records ``list_tasks_sync`` returns when no ``limit`` is given."""

_R = TypeVar("_R")

TaskIdLike = str | TaskID | TaskResult


class RunningConsumer(Protocol):
    """What ``_start_consumer`` returns: the adapter's consumer threads."""

    def alive(self) -> bool:
        """Whether every thread of the consumer is running."""

    def stop(self, timeout: float) -> None:
        """Stop fetching, hand back fetched-but-unstarted tasks at once, let
        running tasks finish for up to ``timeout`` seconds, then hand back the
        rest; return once done."""


@dataclass(frozen=True)
class EnqueueOptions:
    """What an adapter makes of the engine options of one enqueue
    (:meth:`TaskProcessorAdapter._enqueue_options`)."""

    not_before: float | None = None
    """Unix time before which the task must not run (the store keeps it back)."""
    expires_at: float | None = None
    """Unix time after which it is not run any more (it ends CANCELLED)."""


def _async_twin(sync_method: Callable[..., _R]) -> Callable[..., Awaitable[_R]]:
    """The ``..._async`` version of a ``..._sync`` method, run in a thread.

    It calls the sync method by name, so an adapter that overrides the sync
    method gets a matching async one; an adapter with a native async client
    may override the async method itself.
    """

    async def run_in_thread(self: TaskProcessorAdapter, /, *args: Any, **kwargs: Any) -> _R:
        bound: Callable[..., _R] = getattr(self, sync_method.__name__)
        return await asyncio.to_thread(bound, *args, **kwargs)

    run_in_thread.__name__ = sync_method.__name__.removesuffix("_sync") + "_async"
    run_in_thread.__qualname__ = run_in_thread.__name__
    run_in_thread.__doc__ = f"Async version of :meth:`{sync_method.__name__}`."
    return run_in_thread


def task_id_of(task: TaskIdLike) -> str:
    """The id string of a task given as str, :class:`TaskID` or :class:`TaskResult`."""
    if isinstance(task, (TaskID, TaskResult)):
        task = task.id
    if not isinstance(task, str):
        raise InvalidArgument(
            f"task_id must be a str, TaskID or TaskResult, got {type(task).__name__}"
        )
    if not task:
        raise InvalidArgument("task_id must not be empty")
    return task


def _limit(limit: Any) -> int:
    if type(limit) is not int or limit < 1:
        raise InvalidArgument(f"limit must be a positive int, got {limit!r:.50}")
    return limit


def listing_limit(limit: Any) -> int:
    """``limit`` of a task listing if it is an int from 1 to
    :data:`MAX_TASK_LIST_LIMIT`; InvalidArgument naming ``limit`` otherwise."""
    if type(limit) is not int or not 1 <= limit <= MAX_TASK_LIST_LIMIT:
        raise InvalidArgument(
            f"limit must be an int from 1 to {MAX_TASK_LIST_LIMIT}, got {limit!r:.50}"
        )
    return limit


def _state(value: Any) -> TaskState:
    if isinstance(value, TaskState):
        return value
    if isinstance(value, str):
        name = value.strip().upper()
        if name in CELERY_STATE_NAMES:
            return CELERY_STATE_NAMES[name]
        try:
            return TaskState(name)
        except ValueError:
            pass
    choices = ", ".join(s.value for s in TaskState)
    raise InvalidArgument(f"status must be one of {choices}; got {value!r:.50}")


def listing_states(status: Any) -> frozenset[TaskState] | None:
    """The states a task listing keeps: None (every state) for None; else a
    :class:`TaskState`, a state's name (Celery's names too), or a non-empty
    collection of them. InvalidArgument naming ``status`` otherwise."""
    if status is None:
        return None
    if isinstance(status, (TaskState, str)):
        return frozenset({_state(status)})
    if isinstance(status, bytes) or not isinstance(status, Collection):
        raise InvalidArgument(
            "status must be a TaskState, a state name or a collection of them, got "
            f"{type(status).__name__}"
        )
    states = frozenset(_state(item) for item in status)
    if not states:
        raise InvalidArgument("status must name at least one state (None lists every state)")
    return states


def listing_before(before: Any) -> float | None:
    """``before`` of a task listing as a unix time: None, a finite number, or an
    aware datetime; InvalidArgument naming ``before`` otherwise."""
    if before is None:
        return None
    if isinstance(before, datetime):
        if before.tzinfo is None or before.utcoffset() is None:
            raise InvalidArgument(
                "before must be an aware datetime (with a time zone); a naive one is not guessed"
            )
        return before.timestamp()
    if isinstance(before, bool) or not isinstance(before, (int, float)):
        raise InvalidArgument(
            f"before must be a unix time (a number) or an aware datetime, got "
            f"{type(before).__name__}"
        )
    if not math.isfinite(before):
        raise InvalidArgument(f"before must be a finite unix time, got {before!r}")
    return float(before)


def _kind(kind: Any) -> DeadLetterKind:
    try:
        return DeadLetterKind(kind)
    except ValueError:
        choices = ", ".join(k.value for k in DeadLetterKind)
        raise InvalidArgument(f"kind must be one of {choices}; got {kind!r:.50}") from None


def _ids(ids: Any) -> list[str] | None:
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, set, frozenset)):
        raise InvalidArgument(
            f"ids must be a list of dead-letter record ids (str) or None, got {type(ids).__name__}"
        )
    checked = list(ids)
    for item in checked:
        if not isinstance(item, str):
            raise InvalidArgument(f"ids must hold str record ids, got {type(item).__name__}")
    return checked


class TaskProcessorAdapter(ABC):
    """Base class of every queue adapter.

    Class attributes, readable without a broker: ``alias`` (entry-point name),
    ``config_model`` (the typed ``adapter_config``), ``capabilities``.

    Built from a :class:`~taskserve.TaskProcessorConfig`, an adapter serves its
    ``queue_name``. Built from the adapter's typed config and a ``queue_name``,
    the same. Built from the typed config alone, as Ray Serve's PDF template
    builds its ``CeleryAdapter(adapter_config)``, it is a producer that sends
    each task to the queue whose ``@task_consumer`` handles its name, and reads
    and cancels tasks of any queue.
    """

    alias: ClassVar[str] = ""
    config_model: ClassVar[type[AdapterConfig]] = AdapterConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(
        self, config: TaskProcessorConfig | AdapterConfig, queue_name: str | None = None
    ) -> None:
        self.routing = False
        """True for an adapter built from its typed config alone (see above)."""
        self._routes: dict[str, TaskProcessorAdapter] = {}
        self._routes_lock = threading.Lock()
        if isinstance(config, AdapterConfig):
            if not isinstance(config, self.config_model):
                raise ConfigError(
                    f"{type(self).__name__} needs a {self.config_model.__name__}, got "
                    f"{type(config).__name__}"
                )
            self.routing = queue_name is None
            config = TaskProcessorConfig(
                queue_name=queue_name or ROUTER_QUEUE, adapter=type(self), adapter_config=config
            )
        elif not isinstance(config, TaskProcessorConfig):
            raise ConfigError(
                f"{type(self).__name__} needs a TaskProcessorConfig, got {type(config).__name__}"
            )
        elif queue_name is not None:
            raise ConfigError("queue_name is taken from the TaskProcessorConfig; do not pass both")
        self.config = config
        self.adapter_config: AdapterConfig = config.adapter_config
        self.consumer_concurrency: int = config.consumer_concurrency or DEFAULT_CONSUMER_CONCURRENCY
        self._handlers: dict[str, Handler] = {}
        self._runner: TaskRunner | None = None
        self._consumer: RunningConsumer | None = None

    # -- capabilities ----------------------------------------------------
    @classmethod
    def broker_queue_length(cls, broker_url: str, queue_name: str) -> int:
        """Messages waiting in ``queue_name`` on the broker at ``broker_url``, read
        from the broker alone (no task state): what Ray Serve's queue autoscaling
        policy polls, given only those two. Adapters whose broker can tell
        override it; by default it raises UnsupportedCapability."""
        raise UnsupportedCapability(cls.alias or cls.__name__, "broker_queue_length")

    @classmethod
    def supports(cls, capability: Capability | str) -> bool:
        """Whether this adapter declares ``capability``."""
        return capability in cls.capabilities

    def require(self, capability: Capability) -> None:
        """Raise UnsupportedCapability unless ``capability`` is declared."""
        if not self.supports(capability):
            raise UnsupportedCapability(self.alias or type(self).__name__, capability.value)

    # -- lifecycle -------------------------------------------------------
    def initialize(self, consumer_concurrency: int | None = None) -> None:
        """Prepare the adapter (connect, create tables); safe to call twice."""
        if consumer_concurrency is not None:
            if consumer_concurrency < 1:
                raise ConfigError("consumer_concurrency must be at least 1")
            self.consumer_concurrency = consumer_concurrency
        self._connect()

    def register_task_handle(self, func: Handler, name: str | None = None) -> None:
        """Route tasks called ``name`` (default: the function's name) to ``func``.
        A batched handler (``@task_handler(batch_max_size=...)``) needs the
        ``batching`` capability: UnsupportedCapability otherwise."""
        task_name = name or getattr(func, "__name__", None)
        if not task_name:
            raise ConfigError(f"cannot infer a task name for {func!r}; pass name=")
        if batch_options(func) is not None:
            self.require(Capability.BATCHING)
        if self._runner is not None:
            raise RuntimeError("register handlers before start_consumer()")
        self._handlers[task_name] = func

    @property
    def registered_task_names(self) -> list[str]:
        """Names of the registered handlers."""
        return sorted(self._handlers)

    def start_consumer(self) -> None:
        """Start consuming ``queue_name`` in background threads of this process."""
        if self._runner is not None:
            return
        self._connect()
        self._runner = TaskRunner(
            self.config,
            self.alias or type(self).__name__,
            self._handlers,
            progress=self.supports(Capability.PROGRESS),
        )
        try:
            self._consumer = self._start_consumer(self._runner, self.consumer_concurrency)
        except BaseException:
            self._runner.close()
            self._runner = None
            raise

    @property
    def consumer_overran(self) -> bool:
        """Whether a handler of the started consumer outlived its time limit by
        ``task_time_limit_grace_s``: the consumer then reports itself not
        running for good (its tasks are delivered again elsewhere) and must be
        replaced."""
        return self._runner is not None and not self._runner.healthy

    def stop_consumer(self, timeout: float | None = None) -> None:
        """Stop fetching, hand back fetched-but-unstarted tasks at once, and let
        running tasks finish for up to ``timeout`` seconds (then their leases are
        released so another consumer runs them again)."""
        runner, consumer = self._runner, self._consumer
        if runner is None:
            return
        try:
            if consumer is not None:
                consumer.stop(DEFAULT_GRACEFUL_TIMEOUT_S if timeout is None else timeout)
        finally:
            runner.close()
            self._runner = self._consumer = None

    @property
    def running_consumer(self) -> RunningConsumer | None:
        """The consumer :meth:`start_consumer` started (None before and after);
        for operations and tests that must reach it."""
        return self._consumer

    @property
    def consumer_started(self) -> bool:
        """True between start_consumer() and stop_consumer()."""
        return self._runner is not None

    def shutdown(self) -> None:
        """Stop the consumer (graceful) and release connections."""
        self.stop_consumer()
        with self._routes_lock:
            routed, self._routes = list(self._routes.values()), {}
        for adapter in routed:
            adapter.shutdown()
        self._close()

    # -- producer side ---------------------------------------------------
    def enqueue_task_sync(
        self,
        task_name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        idempotency_key: str | None = None,
        retried_from: str | None = None,
        delay_s: float | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        webhook_url: str | None = None,
        webhook_events: Collection[str] | None = None,
        **options: Any,
    ) -> TaskResult:
        """Enqueue a task; return its PENDING :class:`TaskResult`.

        Arguments must be JSON values; a value that is not, or a payload over
        ``max_payload_bytes``, raises :class:`PayloadError` and nothing is sent.
        With ``idempotency_key``, a second call with the same key returns the
        first task instead of enqueuing another.

        With ``webhook_url`` (WEBHOOKS) the queue's consumers POST a signed event
        (Standard Webhooks) there for each of ``webhook_events`` (names of
        :class:`~taskserve.webhooks.WebhookEvent`; default: succeeded, failed,
        cancelled), retried until accepted, at least once under a stable id.
        The URL must be http(s) and, unless the config's
        ``webhooks.allow_private_targets`` is set, name public addresses only;
        the config must hold ``webhooks.signing_secret``
        (:class:`ConfigError` otherwise). A bad URL or event name raises
        :class:`InvalidArgument` naming it.

        With ``delay_s`` (seconds from now) or ``eta`` (an aware datetime) the
        task waits until it is due (DELAYED_TASKS): PENDING with ``due_at`` set,
        kept by the store (a consumer or broker restart does not lose it),
        cancelable while it waits, never started before it is due.

        With ``priority`` (0 to 9, higher first; PRIORITIES) a consumer with a
        free slot starts the ready tasks of its queue with the highest priority
        first; a task without one has the lowest, 0.

        ``options`` are the engine's own (Celery's ``countdown``, ``expires``);
        an option the adapter does not take is a
        :class:`ConfigError`.
        """
        if self.routing:
            return self.route(task_name).enqueue_task_sync(
                task_name,
                args,
                kwargs,
                task_id=task_id,
                idempotency_key=idempotency_key,
                retried_from=retried_from,
                delay_s=delay_s,
                eta=eta,
                priority=priority,
                webhook_url=webhook_url,
                webhook_events=webhook_events,
                **options,
            )
        due = due_time(delay_s, eta)
        priority = task_priority(priority)
        if priority is not None:
            self.require(Capability.PRIORITIES)
        engine_options = self._enqueue_options(dict(options))
        not_before = engine_options.not_before
        if due is not None:
            self.require(Capability.DELAYED_TASKS)
            if not_before is not None:
                raise InvalidArgument(
                    "give delay_s or eta, or the engine's own delay option, not both"
                )
            not_before = due
        if idempotency_key is not None:
            self.require(Capability.IDEMPOTENCY_KEYS)
        webhook = self._webhook(webhook_url, webhook_events)
        message = build_message(
            task_name=task_name,
            args=args,
            kwargs=kwargs,
            queue_name=self.config.queue_name,
            max_payload_bytes=self.config.max_payload_bytes,
            task_id=task_id,
            retried_from=retried_from,
            not_before=not_before,
            expires_at=engine_options.expires_at,
            priority=priority,
            webhook_url=webhook.url if webhook else None,
            webhook_events=tuple(e.value for e in webhook.events) if webhook else None,
        )
        result = self._enqueue(message, idempotency_key)
        if result.id == message.id:
            emit("enqueued", self._event(result))
        return result

    def _webhook(self, url: Any, events: Any) -> WebhookTarget | None:
        """The webhook an enqueue asks for, checked (None for none)."""
        if url is None and events is None:
            return None
        self.require(Capability.WEBHOOKS)
        return webhook_target(url, events, self.config.webhooks)

    def get_task_status_sync(self, task_id: TaskIdLike) -> TaskResult:
        """The task's current :class:`TaskResult`.

        Raises :class:`TaskNotFound` for an id never enqueued or expired.
        """
        return self._get_status(task_id_of(task_id))

    def get_task_payload_sync(self, task_id: TaskIdLike) -> TaskMessage:
        """The task as first enqueued (name, args, kwargs, priority, times), while
        its record lives. Raises :class:`TaskNotFound` for an id never enqueued
        or expired."""
        return self._get_message(task_id_of(task_id))

    def cancel_task_sync(self, task_id: TaskIdLike) -> CancelOutcome:
        """Cancel a task.

        A queued task becomes CANCELLED at once and never runs, with or without
        a consumer online. A running one is interrupted (if the adapter declares
        ``cancel_running``) and becomes CANCELLED when its handler stops. A
        finished one is left as it is, and the outcome says so.
        """
        self.require(Capability.CANCEL_PENDING)
        task_id = task_id_of(task_id)
        if self.routing:
            queue = self._get_status(task_id).queue_name
            if queue and queue != self.config.queue_name:
                return self.for_queue(queue).cancel_task_sync(task_id)
        changed, status = self._cancel(task_id)
        if status is TaskState.CANCELLED and changed:
            message = "cancelled before it started; it will never run"
            emit(
                "cancelled",
                TaskEvent(
                    task_id=task_id,
                    task_name=None,
                    queue_name=self.config.queue_name,
                    adapter=self.alias,
                ),
            )
        elif changed:
            message = "cancel requested; the running handler is being stopped"
        else:
            message = f"already {status.value}; nothing changed"
        return CancelOutcome(id=task_id, cancelled=changed, status=status, message=message)

    def retry_task_sync(self, task_id: TaskIdLike) -> TaskResult:
        """Enqueue a finished task's original payload again, with its priority
        and webhook, under a new id linked to the old one (``retried_from``)."""
        original = self._get_message(task_id_of(task_id))
        if self.routing and original.queue_name:
            return self.for_queue(original.queue_name).retry_task_sync(original.id)
        return self.enqueue_task_sync(
            original.name,
            original.args,
            original.kwargs,
            retried_from=original.id,
            priority=original.priority,
            webhook_url=original.webhook_url,
            webhook_events=original.webhook_events,
        )

    # -- routing (an adapter built from its typed config alone) -------------
    def route(self, task_name: str) -> TaskProcessorAdapter:
        """The adapter of the queue whose ``@task_consumer`` handles ``task_name``
        (for an adapter built from its typed config alone; else this adapter)."""
        if not self.routing:
            return self
        queue = queue_for(self.adapter_config, task_name, type(self))
        if queue is None:
            raise ConfigError(
                f"no queue known for task '{task_name}': no @task_consumer with this adapter "
                "config handles it (or its replicas have not started yet); build the adapter "
                "with a queue_name or a TaskProcessorConfig"
            )
        return self.for_queue(queue)

    def for_queue(self, queue_name: str) -> TaskProcessorAdapter:
        """An initialized adapter of this class and config on ``queue_name``
        (this one if it already serves that queue)."""
        if queue_name == self.config.queue_name:
            return self
        with self._routes_lock:
            adapter = self._routes.get(queue_name)
            if adapter is None:
                adapter = type(self)(self.config.model_copy(update={"queue_name": queue_name}))
                adapter.initialize()
                self._routes[queue_name] = adapter
            return adapter

    # -- operations ------------------------------------------------------
    def health_check_sync(self) -> HealthReport:
        """Whether the broker answers and, if started, the consumer is alive; the
        report also lists every consumer of the queue alive now (``workers``,
        ``len(report)``), as Ray Serve's Celery adapter lists Celery's workers."""
        try:
            self._ping()
            broker_ok, detail = True, ""
        except Exception as e:
            broker_ok, detail = False, redact_url(f"broker unreachable: {type(e).__name__}: {e}")
        consumer: bool | None = None
        if self._runner is not None:
            consumer = self._consumer is not None and self._consumer.alive()
            if not consumer:
                detail = (detail + "; " if detail else "") + "consumer is not running"
            if self.consumer_overran:
                detail += " (a handler outlived its time limit)"
        workers: dict[str, dict[str, Any]] = {}
        if broker_ok:
            try:
                workers = self._workers()
            except Exception as e:
                logger.debug("taskserve: listing the consumers of '%s' failed: %s", self, e)
        return HealthReport(
            healthy=broker_ok and consumer is not False,
            broker_reachable=broker_ok,
            consumer_running=consumer,
            detail=detail,
            workers=[{name: {"ok": "pong"}} for name in workers],
        )

    def get_metrics_sync(self) -> AdapterMetrics:
        """Queue depth, in-flight count and dead-letter counts of this queue, and
        the statistics of every consumer alive now (``workers``; ``len(metrics)``
        and ``metrics[name]`` as with Ray Serve's Celery adapter)."""
        self.require(Capability.QUEUE_METRICS)
        metrics = self._metrics()
        return metrics.model_copy(
            update={
                "consumer_concurrency": self.consumer_concurrency if self._runner else None,
                "local_in_flight": self._runner.in_flight if self._runner else None,
                "workers": self._workers(),
            }
        )

    def list_dead_letters_sync(
        self, kind: DeadLetterKind | str = DeadLetterKind.FAILED, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead-letter records of ``kind``, oldest first."""
        self.require(Capability.DEAD_LETTERS)
        limit = _limit(limit)
        return self._list_dead_letters(self._dead_letter_queue(_kind(kind)), limit, None)

    def redrive_dead_letters_sync(
        self,
        ids: Sequence[str] | None = None,
        kind: DeadLetterKind | str = DeadLetterKind.FAILED,
    ) -> RedriveOutcome:
        """Enqueue dead-lettered tasks again, exactly as first enqueued, under new
        ids linked to the original ones. ``ids=None`` redrives the whole queue.

        All or nothing per record: a record is removed only once its new task
        is recorded. Records that cannot be redriven (undecodable, an unknown
        id, a payload the queue now refuses) stay, each listed with its reason
        in the outcome's ``not_redriven``; if the broker fails midway, the
        records not yet redriven stay and are listed too (BrokerUnavailable is
        raised only when nothing was redriven). Where the adapter has
        idempotency keys, the record id is the new task's key, so redriving a
        record again whose removal failed returns the same task.
        """
        self.require(Capability.DEAD_LETTERS)
        wanted = _ids(ids)
        queue = self._dead_letter_queue(_kind(kind))
        records = self._list_dead_letters(queue, None, wanted)
        outcome = RedriveOutcome()
        found = {record.id for record in records}
        for missing in dict.fromkeys(wanted or []):
            if missing not in found:
                outcome.refuse(missing, f"no dead letter with id '{missing[:200]}' in '{queue}'")
        keyed = self.supports(Capability.IDEMPOTENCY_KEYS)
        for index, record in enumerate(records):
            if record.task_name is None or record.args is None or record.kwargs is None:
                outcome.refuse(
                    record.id,
                    "it holds a message that cannot be decoded; inspect its raw bytes "
                    "(raw_base64) and purge it",
                )
                continue
            try:
                task = self.enqueue_task_sync(
                    record.task_name,
                    record.args,
                    record.kwargs,
                    retried_from=record.task_id,
                    priority=record.priority,
                    idempotency_key=f"redrive:{record.id}" if keyed else None,
                )
            except BrokerUnavailable as e:
                if not outcome:
                    raise
                for left in records[index:]:
                    outcome.refuse(left.id, f"the broker became unavailable: {e}")
                break
            except TaskserveError as e:
                outcome.refuse(record.id, f"{type(e).__name__}: {e}")
                continue
            try:
                self._delete_dead_letters(queue, [record.id])
            except BrokerUnavailable:
                logger.warning(
                    "taskserve: dead letter %s was enqueued again as task %s but could not be "
                    "removed from '%s'; redriving it again returns the same task",
                    record.id,
                    task.id,
                    queue,
                )
                outcome.add(record.id, task, removed=False)
            else:
                outcome.add(record.id, task)
        return outcome

    def purge_dead_letters_sync(
        self,
        kind: DeadLetterKind | str = DeadLetterKind.FAILED,
        ids: Sequence[str] | None = None,
    ) -> int:
        """Delete dead-letter records (all of ``kind`` when ``ids`` is None)."""
        self.require(Capability.DEAD_LETTERS)
        wanted = _ids(ids)
        return self._delete_dead_letters(self._dead_letter_queue(_kind(kind)), wanted)

    def list_tasks_sync(
        self,
        status: TaskState | str | Collection[TaskState | str] | None = None,
        limit: int = DEFAULT_TASK_LIST_LIMIT,
        before: float | datetime | None = None,
    ) -> list[TaskResult]:
        """This queue's task records, newest first (by ``created_at``, then by id,
        descending), each as :meth:`get_task_status_sync` reads it (TASK_LISTING).

        ``status`` keeps the tasks in that state, or in any of several (None:
        every state); ``limit`` is how many at most, 1 to
        :data:`MAX_TASK_LIST_LIMIT`; ``before`` (a unix time or an aware
        datetime) keeps the tasks created strictly before it, so that passing
        the ``created_at`` of a page's last task gets the next page. Expired
        records and tasks of other queues are never listed; a task whose
        status changes while it is being listed may be left out. A bad argument
        raises :class:`InvalidArgument` naming it.
        """
        self.require(Capability.TASK_LISTING)
        states = listing_states(status)
        limit = listing_limit(limit)
        since = listing_before(before)
        if self.routing:
            raise ConfigError(
                "listing tasks needs a queue: build the adapter with a queue_name or a "
                "TaskProcessorConfig"
            )
        return self._list_tasks(states, limit, since)

    def _dead_letter_queue(self, kind: DeadLetterKind) -> str:
        queue = (
            self.config.failed_task_queue_name
            if kind is DeadLetterKind.FAILED
            else self.config.unprocessable_task_queue_name
        )
        if queue is None:
            field = "failed" if kind is DeadLetterKind.FAILED else "unprocessable"
            raise ConfigError(
                f"no {field} dead-letter queue: set {field}_task_queue_name in TaskProcessorConfig"
            )
        return queue

    def _event(self, result: TaskResult) -> TaskEvent:
        return TaskEvent(
            task_id=result.id,
            task_name=result.name,
            queue_name=self.config.queue_name,
            adapter=self.alias,
        )

    # -- async twins -----------------------------------------------------
    enqueue_task_async = _async_twin(enqueue_task_sync)
    get_task_status_async = _async_twin(get_task_status_sync)
    get_task_payload_async = _async_twin(get_task_payload_sync)
    cancel_task_async = _async_twin(cancel_task_sync)
    retry_task_async = _async_twin(retry_task_sync)
    health_check_async = _async_twin(health_check_sync)
    get_metrics_async = _async_twin(get_metrics_sync)
    list_dead_letters_async = _async_twin(list_dead_letters_sync)
    redrive_dead_letters_async = _async_twin(redrive_dead_letters_sync)
    purge_dead_letters_async = _async_twin(purge_dead_letters_sync)
    list_tasks_async = _async_twin(list_tasks_sync)
    # Names used by Ray Serve's PDF template.
    enqueue_task = enqueue_task_async
    get_task_status = get_task_status_async

    # -- primitives an adapter implements ---------------------------------
    def _enqueue_options(self, options: dict[str, Any]) -> EnqueueOptions:
        """Read the engine options of one enqueue (``enqueue_task_sync``'s
        ``**options``); raise ConfigError for one the adapter does not take. A
        delay (``not_before``) is kept back by the store until due. By default
        no option is taken."""
        if options:
            raise ConfigError(
                f"unknown enqueue options: {', '.join(sorted(options))} (adapter "
                f"'{self.alias or type(self).__name__}' takes none)"
            )
        return EnqueueOptions()

    def _connect(self) -> None:
        """Open connections and create what the adapter needs; idempotent."""

    def _close(self) -> None:
        """Release connections."""

    @abstractmethod
    def _ping(self) -> None:
        """Raise if the broker cannot be reached."""

    @abstractmethod
    def _enqueue(self, message: TaskMessage, idempotency_key: str | None) -> TaskResult:
        """Store the PENDING record and publish the message, atomically where the
        broker allows; with a known idempotency key return the existing task."""

    @abstractmethod
    def _get_status(self, task_id: str) -> TaskResult:
        """The task's record; raise TaskNotFound if unknown or expired."""

    @abstractmethod
    def _get_message(self, task_id: str) -> TaskMessage:
        """The task as first enqueued; raise TaskNotFound if unknown or expired."""

    @abstractmethod
    def _cancel(self, task_id: str) -> tuple[bool, TaskState]:
        """Cancel durably as :meth:`cancel_task_sync` describes; return whether
        anything changed and the status after the call (STARTED for a running
        task whose cancel was requested). TaskNotFound if unknown or expired."""

    @abstractmethod
    def _start_consumer(self, runner: TaskRunner, concurrency: int) -> RunningConsumer:
        """Start fetching with at most ``concurrency`` tasks fetched at once,
        handing each to ``runner.process`` with a DeliveryRecorder; return the
        running consumer (stopped by :meth:`stop_consumer`)."""

    def _workers(self) -> dict[str, dict[str, Any]]:
        """Name -> statistics of every consumer of the queue alive now. By
        default only this process's consumer, if it is a kit consumer."""
        consumer = self._consumer
        name = getattr(consumer, "worker_name", None)
        stats = getattr(consumer, "worker_stats", None)
        if consumer is not None and consumer.alive() and isinstance(name, str) and callable(stats):
            return {name: stats()}
        return {}

    def _metrics(self) -> AdapterMetrics:
        """Queue depth and in-flight count (QUEUE_METRICS)."""
        raise UnsupportedCapability(self.alias, Capability.QUEUE_METRICS.value)

    def _list_dead_letters(
        self, queue: str, limit: int | None, ids: list[str] | None
    ) -> list[DeadLetter]:
        """Records of a dead-letter queue, oldest first (DEAD_LETTERS)."""
        raise UnsupportedCapability(self.alias, Capability.DEAD_LETTERS.value)

    def _delete_dead_letters(self, queue: str, ids: list[str] | None) -> int:
        """Delete records (all when ``ids`` is None); return how many (DEAD_LETTERS)."""
        raise UnsupportedCapability(self.alias, Capability.DEAD_LETTERS.value)

    def _list_tasks(
        self, statuses: frozenset[TaskState] | None, limit: int, before: float | None
    ) -> list[TaskResult]:
        """The queue's live records in ``statuses`` (all when None) created before
        ``before``, newest first, at most ``limit`` (TASK_LISTING; the arguments
        are checked)."""
        raise UnsupportedCapability(self.alias, Capability.TASK_LISTING.value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} queue={self.config.queue_name!r} config={self.adapter_config!r}>"
