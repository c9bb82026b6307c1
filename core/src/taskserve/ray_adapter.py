"""Adapters written against Ray Serve's ``TaskProcessorAdapter`` interface.

Ray Serve's alpha API lets anyone write an adapter: a subclass of its
abstract ``TaskProcessorAdapter`` with the methods ``initialize``,
``register_task_handle``, ``enqueue_task_sync``, ``get_task_status_sync``,
``start_consumer``, ``stop_consumer``, ``cancel_task_sync``,
``get_metrics_sync`` and ``health_check_sync``, built from the
``TaskProcessorConfig`` (whose ``adapter_config`` is whatever the adapter
wants, ``{"param": "value"}`` say). Such a class runs in taskserve unchanged
but for its imports::

    from taskserve.ray_adapter import TaskProcessorAdapter   # was ray.serve.schema

    class MyAdapter(TaskProcessorAdapter):
        def __init__(self, config): ...
        ...

    TaskProcessorConfig(queue_name="q", adapter="my_pkg.MyAdapter",
                        adapter_config={"param": "value"})

Selected by class or dotted path (a subclass of Ray's own base works too, and
so does any class with that method set), it is wrapped in a
:class:`RayAdapterShim`: a taskserve adapter that hands Ray's method set to
the wrapped adapter and converts what comes back (``TaskResult``, Celery's
state names, health replies). The wrapped adapter runs the handlers itself,
its own way, as it would in Ray; the shim proves none of taskserve's promises
about them, so it declares no capability: dead letters, idempotency keys and
``retry_task_sync`` are refused, and ``get_metrics_sync`` returns what the
adapter returns.
"""

from __future__ import annotations

import inspect
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from taskserve.adapter import (
    DEFAULT_CONSUMER_CONCURRENCY,
    DEFAULT_GRACEFUL_TIMEOUT_S,
    RunningConsumer,
    TaskIdLike,
    task_id_of,
)
from taskserve.adapter import TaskProcessorAdapter as ContractAdapter
from taskserve.adapter_config import AdapterConfig, OpaqueAdapterConfig
from taskserve.capabilities import Capability
from taskserve.config import TaskProcessorConfig
from taskserve.engine.runner import Handler, TaskRunner
from taskserve.errors import ConfigError, TaskserveError
from taskserve.models import CancelOutcome, HealthReport, TaskResult
from taskserve.serialization import TaskMessage
from taskserve.states import TaskState

logger = logging.getLogger(__name__)

__all__ = ["RayAdapterShim", "RayTaskProcessorAdapter", "TaskProcessorAdapter", "shim_for"]


class RayTaskProcessorAdapter(ABC):
    """Ray Serve's adapter interface, to write an adapter against (or to keep
    one written for Ray): the abstract methods of Ray's ``TaskProcessorAdapter``,
    and its ``..._async`` methods, which raise NotImplementedError unless
    overridden. Exported here also as ``TaskProcessorAdapter``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing; a subclass takes the TaskProcessorConfig."""

    @abstractmethod
    def initialize(self, consumer_concurrency: int = DEFAULT_CONSUMER_CONCURRENCY) -> Any:
        """Prepare the adapter (connect...)."""

    @abstractmethod
    def register_task_handle(self, func: Callable[..., Any], name: str | None = None) -> Any:
        """Route tasks called ``name`` to ``func``."""

    @abstractmethod
    def enqueue_task_sync(
        self,
        task_name: str,
        args: Any | None = None,
        kwargs: Any | None = None,
        **options: Any,
    ) -> Any:
        """Enqueue a task; return its TaskResult."""

    @abstractmethod
    def get_task_status_sync(self, task_id: str) -> Any:
        """The task's TaskResult."""

    @abstractmethod
    def start_consumer(self, **kwargs: Any) -> Any:
        """Start consuming."""

    @abstractmethod
    def stop_consumer(self, timeout: float = 10.0) -> Any:
        """Stop consuming, waiting up to ``timeout`` seconds."""

    @abstractmethod
    def cancel_task_sync(self, task_id: str) -> Any:
        """Cancel a task."""

    @abstractmethod
    def get_metrics_sync(self) -> Any:
        """Adapter-specific metrics."""

    @abstractmethod
    def health_check_sync(self) -> Any:
        """Health replies of the workers (a list of dicts)."""

    async def enqueue_task_async(
        self,
        task_name: str,
        args: Any | None = None,
        kwargs: Any | None = None,
        **options: Any,
    ) -> Any:
        """Not implemented unless overridden."""
        raise NotImplementedError("Subclass must implement enqueue_task_async function")

    async def get_task_status_async(self, task_id: str) -> Any:
        """Not implemented unless overridden."""
        raise NotImplementedError("Subclass must implement get_task_status_async function")

    async def cancel_task_async(self, task_id: str) -> Any:
        """Not implemented unless overridden."""
        raise NotImplementedError("Subclass must implement cancel_task_async function")

    async def get_metrics_async(self) -> Any:
        """Not implemented unless overridden."""
        raise NotImplementedError("Subclass must implement get_metrics_async function")

    async def health_check_async(self) -> Any:
        """Not implemented unless overridden."""
        raise NotImplementedError("Subclass must implement health_check_async function")


TaskProcessorAdapter = RayTaskProcessorAdapter
"""Ray Serve's name of the interface: ``from taskserve.ray_adapter import
TaskProcessorAdapter`` replaces ``from ray.serve.schema import TaskProcessorAdapter``
(taskserve's own adapter base is :class:`taskserve.TaskProcessorAdapter`)."""


def as_task_result(value: Any, where: str) -> TaskResult:
    """What a Ray-interface adapter returned, as a taskserve TaskResult (Ray's
    own TaskResult, or anything with ``id`` and ``status``; Celery's state names
    are mapped: REVOKED is CANCELLED, RECEIVED is PENDING)."""
    if isinstance(value, TaskResult):
        return value
    if value is None or not hasattr(value, "id") or not hasattr(value, "status"):
        raise TaskserveError(f"{where} returned {value!r}, not a TaskResult")
    return TaskResult(
        id=str(value.id),
        status=value.status,
        created_at=getattr(value, "created_at", None),
        result=getattr(value, "result", None),
    )


def _takes_argument(method: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters
    )


class RayAdapterShim(ContractAdapter):
    """A taskserve adapter running an adapter written against Ray Serve's
    interface (``ray_adapter_class``); see the module docstring. Built only
    from a full :class:`~taskserve.TaskProcessorConfig`, as Ray builds one."""

    alias: ClassVar[str] = ""
    config_model: ClassVar[type[AdapterConfig]] = OpaqueAdapterConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    ray_adapter_class: ClassVar[type] = object

    def __init__(
        self, config: TaskProcessorConfig | AdapterConfig, queue_name: str | None = None
    ) -> None:
        name = self.ray_adapter_class.__name__
        if not isinstance(config, TaskProcessorConfig) or queue_name is not None:
            raise ConfigError(
                f"{name} is written against Ray Serve's adapter interface and is built from "
                "a TaskProcessorConfig alone"
            )
        super().__init__(config)
        opaque = config.adapter_config
        value = opaque.value if isinstance(opaque, OpaqueAdapterConfig) else opaque
        self.ray_config = config.model_copy(update={"adapter_config": value})
        """The config the wrapped adapter sees: ``adapter_config`` exactly as given."""
        try:
            self.ray_adapter: Any = self.ray_adapter_class(self.ray_config)
        except Exception as e:
            raise ConfigError(f"Failed to instantiate {name}: {e}") from e
        self._consuming = False
        self._lock = threading.Lock()

    @property
    def _name(self) -> str:
        return self.ray_adapter_class.__name__

    # -- lifecycle ---------------------------------------------------------------
    def initialize(self, consumer_concurrency: int | None = None) -> None:
        """Record the concurrency and call the adapter's ``initialize`` (with it,
        when the adapter's ``initialize`` takes an argument)."""
        super().initialize(consumer_concurrency)
        method = self.ray_adapter.initialize
        if _takes_argument(method):
            method(self.consumer_concurrency)
        else:
            method()

    def register_task_handle(self, func: Handler, name: str | None = None) -> None:
        """Record the handler and hand it to the adapter, as Ray does."""
        super().register_task_handle(func, name)
        task_name = name or getattr(func, "__name__", None)
        self.ray_adapter.register_task_handle(func, task_name)

    def start_consumer(self) -> None:
        """The adapter's ``start_consumer``."""
        with self._lock:
            if self._consuming:
                return
            self.ray_adapter.start_consumer()
            self._consuming = True

    def stop_consumer(self, timeout: float | None = None) -> None:
        """The adapter's ``stop_consumer(timeout)``."""
        with self._lock:
            if not self._consuming:
                return
            self._consuming = False
            self.ray_adapter.stop_consumer(
                timeout=DEFAULT_GRACEFUL_TIMEOUT_S if timeout is None else timeout
            )

    @property
    def consumer_started(self) -> bool:
        """True between start_consumer() and stop_consumer()."""
        return self._consuming

    def shutdown(self) -> None:
        """Stop consuming, then the adapter's ``shutdown`` if it has one."""
        self.stop_consumer()
        shutdown = getattr(self.ray_adapter, "shutdown", None)
        if callable(shutdown):
            shutdown()

    # -- producer side -------------------------------------------------------------
    def enqueue_task_sync(
        self,
        task_name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        idempotency_key: str | None = None,
        retried_from: str | None = None,
        **options: Any,
    ) -> TaskResult:
        """The adapter's ``enqueue_task_sync`` (``options`` passed through)."""
        if idempotency_key is not None:
            self.require(Capability.IDEMPOTENCY_KEYS)
        if retried_from is not None:
            raise ConfigError(f"{self._name} does not link retried tasks (retried_from)")
        if task_id is not None:
            options["task_id"] = task_id
        result = self.ray_adapter.enqueue_task_sync(task_name, args=args, kwargs=kwargs, **options)
        return as_task_result(result, f"{self._name}.enqueue_task_sync")

    def get_task_status_sync(self, task_id: TaskIdLike) -> TaskResult:
        """The adapter's ``get_task_status_sync``, as a taskserve TaskResult."""
        result = self.ray_adapter.get_task_status_sync(task_id_of(task_id))
        return as_task_result(result, f"{self._name}.get_task_status_sync")

    def cancel_task_sync(self, task_id: TaskIdLike) -> CancelOutcome:
        """The adapter's ``cancel_task_sync``; the outcome reports the status read
        afterwards (the interface itself reports nothing)."""
        key = task_id_of(task_id)
        self.ray_adapter.cancel_task_sync(key)
        try:
            status = self.get_task_status_sync(key).status
        except Exception as e:
            raise TaskserveError(
                f"the cancel of task {key} was handed to {self._name}, but reading its "
                f"status afterwards failed: {type(e).__name__}: {e}"
            ) from e
        return CancelOutcome(
            id=key,
            cancelled=status is TaskState.CANCELLED,
            status=status,
            message=f"cancel handed to {self._name}; the task is now {status.value}",
        )

    def retry_task_sync(self, task_id: TaskIdLike) -> TaskResult:
        """Refused: the interface keeps no original payload to enqueue again."""
        raise TaskserveError(
            f"{self._name} keeps no original payload (Ray Serve's interface has none), so "
            "a task cannot be retried by id; enqueue it again"
        )

    # -- operations ----------------------------------------------------------------
    def health_check_sync(self) -> HealthReport:
        """The adapter's ``health_check_sync`` replies as ``workers`` of a report
        that is healthy when the call succeeded (and, if consuming, the consumer
        was not stopped)."""
        try:
            replies = self.ray_adapter.health_check_sync()
        except Exception as e:
            return HealthReport(
                healthy=False,
                broker_reachable=False,
                consumer_running=self._consuming if self._consuming else None,
                detail=f"{self._name}.health_check_sync raised {type(e).__name__}: {e}",
            )
        workers = [dict(r) for r in replies or [] if isinstance(r, Mapping)]
        return HealthReport(
            healthy=True,
            broker_reachable=True,
            consumer_running=True if self._consuming else None,
            workers=workers,
        )

    def get_metrics_sync(self) -> Any:
        """What the adapter's ``get_metrics_sync`` returns (adapter-specific, as in
        Ray; the shim declares no ``queue_metrics``)."""
        return self.ray_adapter.get_metrics_sync()

    # -- the contract's primitives (the public methods above do not use them) -------
    def _ping(self) -> None:
        self.ray_adapter.health_check_sync()

    def _enqueue(self, message: TaskMessage, idempotency_key: str | None) -> TaskResult:
        return self.enqueue_task_sync(message.name, message.args, message.kwargs)

    def _get_status(self, task_id: str) -> TaskResult:
        return self.get_task_status_sync(task_id)

    def _get_message(self, task_id: str) -> TaskMessage:
        raise TaskserveError(f"{self._name} keeps no original payload")

    def _cancel(self, task_id: str) -> tuple[bool, TaskState]:
        outcome = self.cancel_task_sync(task_id)
        return outcome.cancelled, outcome.status

    def _start_consumer(self, runner: TaskRunner, concurrency: int) -> RunningConsumer:
        raise TaskserveError(f"{self._name} runs its own consumer (start_consumer)")

    def __repr__(self) -> str:
        return f"<{self._name} (Ray Serve interface) queue={self.config.queue_name!r}>"


_shims: dict[type, type[RayAdapterShim]] = {}
_shims_lock = threading.Lock()


def shim_for(ray_adapter_class: type) -> type[RayAdapterShim]:
    """The taskserve adapter class running ``ray_adapter_class`` (one per class)."""
    with _shims_lock:
        shim = _shims.get(ray_adapter_class)
        if shim is None:
            shim = type(
                f"{ray_adapter_class.__name__}Shim",
                (RayAdapterShim,),
                {"ray_adapter_class": ray_adapter_class, "__module__": __name__},
            )
            _shims[ray_adapter_class] = shim
        return shim
