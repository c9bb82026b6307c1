"""Names used by Ray Serve's async-inference PDF template that Ray itself lacks.

With these, the template's server runs after changing only its imports::

    from taskserve import serve                       # serve.deployment, serve.route, serve.run
    from taskserve.serve import TaskAdapter as CeleryAdapter

- :func:`route` marks a method of a deployment class as an HTTP endpoint
  (``@serve.route("/process", methods=["POST"])``), and :func:`deployment`
  builds the FastAPI ingress from those methods before handing the class to
  ``ray.serve.deployment``.
- :class:`TaskAdapter` is a producer built from a full
  :class:`~taskserve.TaskProcessorConfig` or, as in the template, from the
  adapter config alone; then each task goes to the queue whose
  ``@task_consumer`` handles it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from taskserve.adapter import TaskIdLike, TaskProcessorAdapter
from taskserve.config import AdapterConfig, TaskProcessorConfig
from taskserve.errors import ConfigError
from taskserve.factory import instantiate_adapter_from_config
from taskserve.models import CancelOutcome, TaskResult
from taskserve.serve.registry import known_queues, queue_for

_F = TypeVar("_F", bound=Callable[..., Any])

ROUTES_ATTRIBUTE = "_taskserve_routes"

STATUS_QUEUE_FALLBACK = "default"
"""Queue name given to the adapter used for status reads before any enqueue."""


def route(path: str, methods: Sequence[str] = ("GET",), **route_options: Any) -> Callable[[_F], _F]:
    """Mark a deployment method as the endpoint of ``methods`` on ``path``.

    The class must then be deployed with :func:`taskserve.serve.deployment`,
    which turns the marked methods into a FastAPI ingress. ``route_options``
    go to ``FastAPI.add_api_route`` (``status_code``, ``response_model``, ...).
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"route path must start with '/', got {path!r}")
    method_list = [m.upper() for m in ([methods] if isinstance(methods, str) else methods)]

    def mark(func: _F) -> _F:
        routes = list(getattr(func, ROUTES_ATTRIBUTE, []))
        routes.append((path, method_list, dict(route_options)))
        setattr(func, ROUTES_ATTRIBUTE, routes)
        return func

    return mark


def _routed_methods(
    cls: type,
) -> list[tuple[Callable[..., Any], list[tuple[str, list[str], dict[str, Any]]]]]:
    found = []
    for klass in reversed(cls.__mro__):
        for member in vars(klass).values():
            routes = getattr(member, ROUTES_ATTRIBUTE, None)
            if routes:
                found.append((member, routes))
    return found


def _is_ingress(cls: type) -> bool:
    return any(base.__name__ == "ASGIAppReplicaWrapper" for base in cls.__mro__)


def with_route_ingress(cls: type) -> type:
    """``cls`` wrapped in a FastAPI ingress built from its :func:`route` methods
    (returned unchanged when it has none or already is an ingress)."""
    routed = _routed_methods(cls)
    if not routed or _is_ingress(cls):
        return cls
    from fastapi import FastAPI
    from ray import serve as ray_serve

    app = FastAPI(title=cls.__name__)
    for func, routes in routed:
        for path, methods, options in routes:
            app.add_api_route(path, func, methods=methods, **options)
    wrapped: type = ray_serve.ingress(app)(cls)
    return wrapped


def deployment(_func_or_class: Any = None, /, **options: Any) -> Any:
    """``ray.serve.deployment`` that also accepts classes with :func:`route` methods.

    Usable as ``@deployment`` and ``@deployment(num_replicas=2, ...)``.
    """
    from ray import serve as ray_serve

    def apply(target: Any) -> Any:
        if isinstance(target, type):
            target = with_route_ingress(target)
        return ray_serve.deployment(target, **options)

    if _func_or_class is not None:
        return apply(_func_or_class)
    return apply


class TaskAdapter:
    """A producer: enqueue tasks, read their status, cancel them.

    ``config`` is a :class:`TaskProcessorConfig` (one queue), or only an
    adapter config (typed, or a mapping with ``adapter``): then each task is
    sent to the queue declared by the ``@task_consumer`` that handles its name,
    or to ``queue_name`` when given. Other adapter methods are available on
    :meth:`adapter_for_task`'s result.
    """

    def __init__(
        self,
        config: TaskProcessorConfig | AdapterConfig | Mapping[str, Any],
        queue_name: str | None = None,
        *,
        adapter: str | type | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._adapters: dict[str, TaskProcessorAdapter] = {}
        if isinstance(config, Mapping):
            config = TaskProcessorConfig.from_dict(config)
        if isinstance(config, TaskProcessorConfig):
            self._base: TaskProcessorConfig | None = config
            self._adapter_config: AdapterConfig = config.adapter_config
            self._adapter_selector: str | type | None = config.adapter
            self._queue_name: str | None = queue_name or config.queue_name
        elif isinstance(config, AdapterConfig):
            self._base = None
            self._adapter_config = config
            self._adapter_selector = adapter
            self._queue_name = queue_name
        else:
            raise ConfigError(
                "TaskAdapter needs a TaskProcessorConfig or an adapter config, got "
                f"{type(config).__name__}"
            )

    def _config_for(self, queue_name: str) -> TaskProcessorConfig:
        if self._base is not None:
            return self._base.model_copy(update={"queue_name": queue_name})
        return TaskProcessorConfig(
            queue_name=queue_name,
            adapter=self._adapter_selector,
            adapter_config=self._adapter_config,
        )

    def _adapter(self, queue_name: str) -> TaskProcessorAdapter:
        with self._lock:
            adapter = self._adapters.get(queue_name)
            if adapter is None:
                adapter = instantiate_adapter_from_config(self._config_for(queue_name))
                self._adapters[queue_name] = adapter
            return adapter

    def adapter_for_task(self, task_name: str) -> TaskProcessorAdapter:
        """The adapter bound to the queue that handles ``task_name``."""
        if self._queue_name is not None:
            return self._adapter(self._queue_name)
        queue = queue_for(self._adapter_config, task_name, self._adapter_selector)
        if queue is None:
            raise ConfigError(
                f"no queue known for task '{task_name}': no @task_consumer with this adapter "
                "config handles it (or its replicas have not started yet); pass queue_name= "
                "or a TaskProcessorConfig"
            )
        return self._adapter(queue)

    def _any_adapter(self) -> TaskProcessorAdapter:
        if self._queue_name is not None:
            return self._adapter(self._queue_name)
        with self._lock:
            if self._adapters:
                return next(iter(self._adapters.values()))
        queues = known_queues(self._adapter_config, self._adapter_selector)
        return self._adapter(queues[0] if queues else STATUS_QUEUE_FALLBACK)

    def enqueue_task_sync(
        self,
        task_name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> TaskResult:
        """Enqueue ``task_name`` on its queue; see ``TaskProcessorAdapter.enqueue_task_sync``."""
        return self.adapter_for_task(task_name).enqueue_task_sync(
            task_name, args, kwargs, **options
        )

    def get_task_status_sync(self, task_id: TaskIdLike) -> TaskResult:
        """The task's :class:`TaskResult` (raises ``TaskNotFound`` if unknown)."""
        return self._any_adapter().get_task_status_sync(task_id)

    def cancel_task_sync(self, task_id: TaskIdLike) -> CancelOutcome:
        """Cancel a task; see ``TaskProcessorAdapter.cancel_task_sync``."""
        return self._any_adapter().cancel_task_sync(task_id)

    async def enqueue_task_async(
        self,
        task_name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> TaskResult:
        """Async version of :meth:`enqueue_task_sync`."""
        return await asyncio.to_thread(self.enqueue_task_sync, task_name, args, kwargs, **options)

    async def get_task_status_async(self, task_id: TaskIdLike) -> TaskResult:
        """Async version of :meth:`get_task_status_sync`."""
        return await asyncio.to_thread(self.get_task_status_sync, task_id)

    async def cancel_task_async(self, task_id: TaskIdLike) -> CancelOutcome:
        """Async version of :meth:`cancel_task_sync`."""
        return await asyncio.to_thread(self.cancel_task_sync, task_id)

    enqueue_task = enqueue_task_async
    get_task_status = get_task_status_async

    def close(self) -> None:
        """Release the connections of every adapter created."""
        with self._lock:
            adapters, self._adapters = list(self._adapters.values()), {}
        for adapter in adapters:
            adapter.shutdown()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_adapters"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
