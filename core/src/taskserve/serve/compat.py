"""Names used by Ray Serve's async-inference PDF template that Ray itself lacks.

With these, the template's server runs after changing only its imports::

    from taskserve import serve                       # serve.deployment, serve.route, serve.run
    from taskserve.serve import TaskAdapter as CeleryAdapter

- :func:`route` marks a method of a deployment class as an HTTP endpoint
  (``@serve.route("/process", methods=["POST"])``), and :func:`deployment`
  builds the FastAPI ingress from those methods before handing the class to
  ``ray.serve.deployment``.
- :func:`TaskAdapter` builds a producer from a full
  :class:`~taskserve.TaskProcessorConfig` or, as in the template, from the
  adapter config alone; then each task goes to the queue whose
  ``@task_consumer`` handles it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from taskserve.adapter import TaskProcessorAdapter
from taskserve.adapter_config import AdapterConfig
from taskserve.config import TaskProcessorConfig
from taskserve.errors import ConfigError
from taskserve.factory import count_in_ray, instantiate_adapter_from_config
from taskserve.registry import resolve_adapter

_F = TypeVar("_F", bound=Callable[..., Any])

ROUTES_ATTRIBUTE = "_taskserve_routes"


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


def TaskAdapter(
    config: TaskProcessorConfig | AdapterConfig | Mapping[str, Any],
    queue_name: str | None = None,
    *,
    adapter: str | type | None = None,
) -> TaskProcessorAdapter:
    """A producer: enqueue tasks, read their status, cancel them.

    ``config`` is a :class:`TaskProcessorConfig` (one queue; ``queue_name``
    overrides it), or only an adapter config (typed, or a mapping with
    ``adapter``): then each task is sent to the queue declared by the
    ``@task_consumer`` that handles its name, or to ``queue_name`` when given.
    The result is the adapter itself, initialized (see
    :class:`~taskserve.TaskProcessorAdapter` for building one from its typed
    config alone); inside Ray its enqueues and cancels are counted in Ray's
    metrics, as with :func:`~taskserve.instantiate_adapter_from_config`.
    """
    if isinstance(config, Mapping):
        config = TaskProcessorConfig.from_dict(config)
    if isinstance(config, TaskProcessorConfig):
        if queue_name is not None:
            config = config.model_copy(update={"queue_name": queue_name})
        return instantiate_adapter_from_config(config)
    if not isinstance(config, AdapterConfig):
        raise ConfigError(
            "TaskAdapter needs a TaskProcessorConfig or an adapter config, got "
            f"{type(config).__name__}"
        )
    selector = adapter if adapter is not None else (type(config).adapter_alias or "sqlite")
    count_in_ray()
    producer = resolve_adapter(selector)(config, queue_name)
    producer.initialize()
    return producer
