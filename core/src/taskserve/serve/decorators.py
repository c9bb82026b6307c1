"""``@task_consumer`` and ``@task_handler``: a Serve deployment that consumes a queue.

Used exactly as Ray Serve's alpha API::

    @serve.deployment(max_ongoing_requests=8)
    @task_consumer(task_processor_config=config)
    class Indexer:
        @task_handler(name="index_document")
        def index_document(self, document_id: str) -> dict: ...

        @task_handler                      # task name: "summarize"
        async def summarize(self, text: str) -> str: ...

The decorated class is a subclass of the original. Its ``__init__`` runs the
user's constructor and then starts the consumer (see
:class:`~taskserve.serve.consumer.ConsumerRuntime`); ``check_health`` fails when
the consumer died or the broker is unreachable, then calls the user's own
``check_health``; ``__del__`` (called by Serve on replica shutdown) drains the
consumer within ``graceful_shutdown_timeout_s`` before the user's ``__del__``;
``record_autoscaling_stats`` reports the queue to
:class:`~taskserve.serve.autoscaling.QueueDepthAutoscalingPolicy`.

Nothing here imports Ray: the decorators work on plain classes too (the
consumer then starts when the class is instantiated).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from taskserve.batch import BATCH_ATTRIBUTE, BatchOptions
from taskserve.config import TaskProcessorConfig
from taskserve.directory import declare_consumer
from taskserve.errors import ConfigError
from taskserve.policy import NOT_GIVEN, POLICY_ATTRIBUTE, HandlerPolicy, NotGiven
from taskserve.serve.consumer import ConsumerRuntime

_F = TypeVar("_F", bound=Callable[..., Any])
_C = TypeVar("_C", bound=type)

HANDLER_MARK = "_is_task_handler"
"""Attribute set to True on handler methods (the name Ray Serve uses)."""
HANDLER_NAME = "_task_name"
"""Attribute holding a handler's task name (the name Ray Serve uses)."""
RUNTIME_ATTRIBUTE = "_taskserve_consumer"
"""Instance attribute holding the replica's :class:`ConsumerRuntime`."""
CONSUMER_CONFIG_ATTRIBUTE = "__taskserve_task_processor_config__"
"""Class attribute holding the consumer's :class:`TaskProcessorConfig`."""


@overload
def task_handler(
    _func: _F,
    *,
    name: str | None = None,
    max_retries: int | NotGiven | None = NOT_GIVEN,
    retry_backoff_s: float | NotGiven = NOT_GIVEN,
    retry_backoff_max_s: float | NotGiven = NOT_GIVEN,
    non_retryable: type[BaseException] | tuple[type[BaseException], ...] = (),
    time_limit_s: float | NotGiven | None = NOT_GIVEN,
    batch_max_size: int | None = None,
    batch_wait_timeout_s: float | None = None,
) -> _F: ...


@overload
def task_handler(
    _func: None = None,
    *,
    name: str | None = None,
    max_retries: int | NotGiven | None = NOT_GIVEN,
    retry_backoff_s: float | NotGiven = NOT_GIVEN,
    retry_backoff_max_s: float | NotGiven = NOT_GIVEN,
    non_retryable: type[BaseException] | tuple[type[BaseException], ...] = (),
    time_limit_s: float | NotGiven | None = NOT_GIVEN,
    batch_max_size: int | None = None,
    batch_wait_timeout_s: float | None = None,
) -> Callable[[_F], _F]: ...


def task_handler(
    _func: _F | None = None,
    *,
    name: str | None = None,
    max_retries: int | NotGiven | None = NOT_GIVEN,
    retry_backoff_s: float | NotGiven = NOT_GIVEN,
    retry_backoff_max_s: float | NotGiven = NOT_GIVEN,
    non_retryable: type[BaseException] | tuple[type[BaseException], ...] = (),
    time_limit_s: float | NotGiven | None = NOT_GIVEN,
    batch_max_size: int | None = None,
    batch_wait_timeout_s: float | None = None,
) -> _F | Callable[[_F], _F]:
    """Mark a method of a ``@task_consumer`` class as the handler of task ``name``.

    ``name`` defaults to the method's name. Works with and without
    parentheses, on ``def`` and ``async def`` methods, and on plain functions
    registered with ``register_task_handle`` or a worker's ``--handlers``. The
    function itself is returned unchanged apart from a few attributes: two
    markers, its :class:`~taskserve.policy.HandlerPolicy` and, for a batched
    handler, its :class:`~taskserve.batch.BatchOptions`.

    The retry options override the consumer's ``TaskProcessorConfig`` for
    this task name only; each one not given is the config's:
    ``max_retries`` (None retries without limit; crashed deliveries count
    toward it), ``retry_backoff_s``, ``retry_backoff_max_s``, and
    ``non_retryable``, exception types whose instances fail the task at once
    without a retry, as :class:`~taskserve.NonRetryableError` does.
    ``time_limit_s`` overrides the config's ``task_time_limit_s``: each
    attempt running longer is interrupted and fails with
    :class:`~taskserve.TaskTimeLimitExceeded` (None: no limit for this task
    name). A bad value raises :class:`ConfigError` naming the argument, here
    and now.

    ``batch_max_size`` makes the handler a batched one (see
    :mod:`taskserve.batch`): it is called with one argument, a list of
    :class:`~taskserve.BatchItem` (one per task: ``args``, ``kwargs``,
    ``task_id`` and the task's own context ``task``), and must return a list
    of results of the same length, in order; a slot holding an exception
    instance fails that task alone. A call takes up to ``batch_max_size``
    ready tasks of its name, or whatever has arrived ``batch_wait_timeout_s``
    (default :data:`~taskserve.batch.DEFAULT_BATCH_WAIT_TIMEOUT_S`) after the
    first one, and never more than the consumer's concurrency. Each task
    keeps its own status, result, attempts, retries, lease, cancel and hooks;
    ``current_task()`` is not set in a batched handler (each item's ``task``
    is). The call runs under the handler's time limit, from its start.
    Without ``batch_max_size`` the handler takes each task's own arguments.
    A ``batch_max_size`` that is not an int, or a ``batch_wait_timeout_s``
    that is not a number, raises TypeError; one below 1, a negative or
    infinite wait, or a wait without a size raise :class:`ConfigError`; each
    names the handler.
    """
    if name is not None and (not isinstance(name, str) or not name.strip()):
        shown = f"{name!r}" if isinstance(name, str) else f"a {type(name).__name__}"
        # Ray Serve's wording, so that code matching its message keeps working.
        raise ConfigError(f"Task name must be a non-empty string, got {name} ({shown})")
    policy = HandlerPolicy(
        max_retries=max_retries,
        retry_backoff_s=retry_backoff_s,
        retry_backoff_max_s=retry_backoff_max_s,
        non_retryable=(non_retryable,) if isinstance(non_retryable, type) else non_retryable,
        time_limit_s=time_limit_s,
    )

    def mark(func: _F) -> _F:
        if not callable(func):
            raise TypeError(f"@task_handler decorates a method, got {func!r}")
        task_name = name or func.__name__
        batch = BatchOptions.checked(task_name, batch_max_size, batch_wait_timeout_s)
        setattr(func, HANDLER_MARK, True)
        setattr(func, HANDLER_NAME, task_name)
        setattr(func, POLICY_ATTRIBUTE, policy)
        if batch is not None:
            setattr(func, BATCH_ATTRIBUTE, batch)
        return func

    if _func is not None:
        return mark(_func)
    return mark


def handler_methods(cls: type) -> dict[str, str]:
    """Task name -> attribute name of every ``@task_handler`` method of ``cls``.

    Raises :class:`ConfigError` when two methods claim the same task name.
    """
    found: dict[str, str] = {}
    for attribute in dir(cls):
        member = inspect.getattr_static(cls, attribute, None)
        func = getattr(member, "__func__", member)  # staticmethod / classmethod
        if not getattr(func, HANDLER_MARK, False):
            continue
        task_name = str(getattr(func, HANDLER_NAME, attribute))
        if task_name in found and found[task_name] != attribute:
            raise ConfigError(
                f"{cls.__name__}: methods '{found[task_name]}' and '{attribute}' both "
                f"handle task '{task_name}'; give one of them another name="
            )
        found[task_name] = attribute
    return found


def _as_config(value: Any) -> TaskProcessorConfig:
    if isinstance(value, TaskProcessorConfig):
        return value
    if isinstance(value, Mapping):
        return TaskProcessorConfig.from_dict(value)
    if isinstance(value, type):
        raise TypeError(
            "@task_consumer needs a TaskProcessorConfig: write "
            "@task_consumer(task_processor_config=config), not a bare @task_consumer"
        )
    raise ConfigError(
        f"task_processor_config must be a TaskProcessorConfig or a mapping, got "
        f"{type(value).__name__}"
    )


def task_consumer(
    task_processor_config: TaskProcessorConfig | Mapping[str, Any] | None = None,
) -> Callable[[_C], _C]:
    """Turn a class into a task consumer of ``task_processor_config``'s queue.

    The config may be passed by keyword (as in Ray Serve's guide) or
    positionally, as a :class:`TaskProcessorConfig` or a mapping (a Serve YAML
    section). Tasks run at most ``consumer_concurrency`` at a time per replica,
    by default the deployment's ``max_ongoing_requests``.
    """
    if task_processor_config is None:
        raise TypeError("@task_consumer needs task_processor_config=TaskProcessorConfig(...)")
    config = _as_config(task_processor_config)

    def decorate(cls: _C) -> _C:
        if not isinstance(cls, type):
            raise TypeError(f"@task_consumer decorates a class, got {cls!r}")
        handlers = handler_methods(cls)
        declare_consumer(config, handlers)
        return _consumer_class(cls, config, handlers)

    return decorate


def get_consumer(instance: object) -> ConsumerRuntime:
    """The running consumer of a ``@task_consumer`` instance (inside its replica)."""
    runtime = instance.__dict__.get(RUNTIME_ATTRIBUTE)
    if not isinstance(runtime, ConsumerRuntime):
        raise RuntimeError(f"{type(instance).__name__} is not a started @task_consumer instance")
    return runtime


def _start(instance: Any, cls: type, config: TaskProcessorConfig, handlers: dict[str, str]) -> None:
    bound = {task: getattr(instance, attribute) for task, attribute in handlers.items()}
    runtime = ConsumerRuntime(config, bound, owner=cls.__qualname__)
    instance.__dict__[RUNTIME_ATTRIBUTE] = runtime
    runtime.start()


def _consumer_class(cls: _C, config: TaskProcessorConfig, handlers: dict[str, str]) -> _C:
    user_init: Callable[..., Any] = cls.__init__  # type: ignore[misc]
    user_health = getattr(cls, "check_health", None)
    user_stats = getattr(cls, "record_autoscaling_stats", None)
    user_del = getattr(cls, "__del__", None)
    namespace: dict[str, Any] = {}

    if inspect.iscoroutinefunction(user_init):

        async def async_init(self: Any, *args: Any, **kwargs: Any) -> None:
            await user_init(self, *args, **kwargs)
            await asyncio.to_thread(_start, self, cls, config, handlers)

        namespace["__init__"] = async_init
    else:

        def sync_init(self: Any, *args: Any, **kwargs: Any) -> None:
            user_init(self, *args, **kwargs)
            _start(self, cls, config, handlers)

        namespace["__init__"] = sync_init

    async def check_health(self: Any) -> None:
        """Fail when the consumer died or the broker is unreachable, then run the
        class's own ``check_health``."""
        runtime = self.__dict__.get(RUNTIME_ATTRIBUTE)
        if runtime is not None:
            await asyncio.to_thread(runtime.raise_if_unhealthy)
        if user_health is not None:
            outcome = user_health(self)
            if inspect.isawaitable(outcome):
                await outcome

    async def record_autoscaling_stats(self: Any) -> dict[str, float]:
        """Queue depth and this replica's running tasks, for the autoscaling policy."""
        stats: dict[str, float] = {}
        if user_stats is not None:
            outcome = user_stats(self)
            if inspect.isawaitable(outcome):
                outcome = await outcome
            stats.update(outcome or {})
        runtime = self.__dict__.get(RUNTIME_ATTRIBUTE)
        if runtime is not None:
            stats.update(runtime.autoscaling_stats())
        return stats

    def __del__(self: Any) -> Any:
        """Drain the consumer (Serve calls this on replica shutdown), then run the
        class's own ``__del__``; its result is returned so Serve awaits an async one."""
        runtime = self.__dict__.get(RUNTIME_ATTRIBUTE)
        if runtime is not None:
            runtime.stop()
        if user_del is not None:
            return user_del(self)
        return None

    namespace.update(
        check_health=check_health,
        record_autoscaling_stats=record_autoscaling_stats,
        __del__=__del__,
        __module__=cls.__module__,
        __qualname__=cls.__qualname__,
        __doc__=cls.__doc__,
    )
    namespace[CONSUMER_CONFIG_ATTRIBUTE] = config
    wrapper = type(cls)(cls.__name__, (cls,), namespace)
    return wrapper
