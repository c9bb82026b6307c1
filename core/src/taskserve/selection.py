"""What an adapter selector names, found without importing the adapter contract.

A selector is an alias (an entry point of the group ``taskserve.adapters``,
mapping a short name to ``module:Class``), a dotted path
(``pkg.mod:Class`` or ``pkg.mod.Class``) or the class itself. Nothing is
imported until an adapter is selected, and validating a configuration
imports only the adapter's config module where the plugin publishes it under
``taskserve.adapter_configs``. :mod:`taskserve.registry` checks that what is
found is an adapter class.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import EntryPoint, entry_points

from taskserve.adapter_config import AdapterConfig, OpaqueAdapterConfig
from taskserve.errors import AdapterNotFound

ADAPTERS_ENTRY_POINT_GROUP = "taskserve.adapters"
CONFIGS_ENTRY_POINT_GROUP = "taskserve.adapter_configs"
"""Alias -> ``module:ConfigClass``: lets a configuration be validated without
importing the adapter (and its engine)."""

FIRST_PARTY_DISTRIBUTIONS: dict[str, str] = {
    "celery": "taskserve-celery",
    "dramatiq": "taskserve-dramatiq",
    "rq": "taskserve-rq",
    "postgres": "taskserve-postgres",
}
"""Aliases of adapters published by this project outside the core."""

RAY_ADAPTER_PATHS: dict[str, str] = {
    "ray.serve.task_processor.CeleryTaskProcessorAdapter": "celery",
    "ray.serve.task_processor:CeleryTaskProcessorAdapter": "celery",
}
"""Ray Serve's dotted paths of its built-in adapters -> the taskserve alias they
select (``TaskProcessorConfig.adapter``'s default in Ray). Nothing of Ray is
imported."""

RAY_UNSUPPORTED_PATHS: dict[str, str] = {
    "ray.serve.taskiq_task_processor.TaskiqTaskProcessorAdapter": "Ray Serve's Taskiq adapter",
    "ray.serve.taskiq_task_processor:TaskiqTaskProcessorAdapter": "Ray Serve's Taskiq adapter",
}
"""Ray Serve adapters taskserve has no counterpart of."""

RAY_INTERFACE_METHODS = (
    "initialize",
    "register_task_handle",
    "enqueue_task_sync",
    "get_task_status_sync",
    "start_consumer",
    "stop_consumer",
    "cancel_task_sync",
    "get_metrics_sync",
    "health_check_sync",
)
"""The abstract methods of Ray Serve's ``TaskProcessorAdapter``."""

_configs: dict[str, type[AdapterConfig]] = {}


def canonical_selector(selector: str | type) -> str | type:
    """``selector`` with Ray Serve's dotted paths of its built-in adapters
    replaced by the taskserve alias they select."""
    if isinstance(selector, str):
        path = selector.strip()
        if path in RAY_UNSUPPORTED_PATHS:
            raise AdapterNotFound(
                f"'{path}' is {RAY_UNSUPPORTED_PATHS[path]}, which taskserve has no "
                "counterpart of; use 'celery', 'dramatiq', 'rq' or 'sqlite'"
            )
        return RAY_ADAPTER_PATHS.get(path, selector)
    return selector


def is_ray_interface_adapter(found: object) -> bool:
    """Whether ``found`` is an adapter class written against Ray Serve's
    ``TaskProcessorAdapter`` interface (its abstract methods, no taskserve
    ``config_model``); such classes run behind
    :class:`taskserve.ray_adapter.RayAdapterShim`."""
    if not isinstance(found, type):
        return False
    model = getattr(found, "config_model", None)
    if isinstance(model, type) and issubclass(model, AdapterConfig):
        return False
    return all(callable(getattr(found, name, None)) for name in RAY_INTERFACE_METHODS)


def installed_adapters() -> dict[str, EntryPoint]:
    """Alias -> entry point of every installed adapter (nothing imported)."""
    return {ep.name: ep for ep in entry_points(group=ADAPTERS_ENTRY_POINT_GROUP)}


def is_alias(selector: str | type) -> bool:
    """Whether ``selector`` is a short alias (not a dotted path or a class)."""
    return isinstance(selector, str) and ":" not in selector and "." not in selector


def _import_dotted(path: str) -> object:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise AdapterNotFound(f"Adapter path '{path}' must look like 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise AdapterNotFound(f"Adapter path '{path}': cannot import '{module_name}': {e}") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise AdapterNotFound(f"Adapter path '{path}': '{module_name}' has no '{attr}'") from e


def _unknown_alias(alias: str, installed: dict[str, EntryPoint]) -> AdapterNotFound:
    names = sorted(installed)
    listing = ", ".join(names) if names else "none"
    if alias in FIRST_PARTY_DISTRIBUTIONS:
        return AdapterNotFound(
            f"Adapter '{alias}' is not installed. Install it with "
            f"`pip install {FIRST_PARTY_DISTRIBUTIONS[alias]}`. Installed: {listing}"
        )
    candidates = sorted(set(names) | set(FIRST_PARTY_DISTRIBUTIONS))
    close = difflib.get_close_matches(alias, candidates, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return AdapterNotFound(f"No adapter '{alias}'.{hint} Installed: {listing}")


def _load_entry_point(entry_point: EntryPoint, what: str) -> object:
    try:
        return entry_point.load()
    except ImportError as e:
        raise AdapterNotFound(
            f"Adapter '{entry_point.name}' is installed ({entry_point.value}) but its {what} "
            f"cannot be imported: {e}"
        ) from e


def load_selected(selector: str | type) -> tuple[object, str]:
    """The object ``selector`` names, and how to name its origin in errors.

    Raises :class:`AdapterNotFound` with the installed aliases and a close match
    for an unknown alias, and an install hint for a first-party alias whose
    distribution is missing.
    """
    selector = canonical_selector(selector)
    if isinstance(selector, type):
        return selector, f"Adapter class {selector.__qualname__}"
    if not isinstance(selector, str) or not selector:
        raise AdapterNotFound(
            f"adapter must be an alias, a dotted path or a class, got {selector!r}"
        )
    if not is_alias(selector):
        return _import_dotted(selector), f"Adapter path '{selector}'"
    installed = installed_adapters()
    if selector not in installed:
        raise _unknown_alias(selector, installed)
    entry_point = installed[selector]
    return _load_entry_point(entry_point, "adapter"), f"Adapter '{selector}' ({entry_point.value})"


def config_model_for(selector: str | type) -> type[AdapterConfig]:
    """The typed config class of the adapter ``selector`` names.

    For an alias whose plugin publishes its config under
    ``taskserve.adapter_configs``, only that config module is imported;
    otherwise the adapter is loaded and its ``config_model`` read. An adapter
    written against Ray Serve's interface takes its config as given
    (:class:`~taskserve.adapter_config.OpaqueAdapterConfig`).
    """
    selector = canonical_selector(selector)
    if is_alias(selector):
        assert isinstance(selector, str)
        cached = _configs.get(selector)
        if cached is not None:
            return cached
        published = {ep.name: ep for ep in entry_points(group=CONFIGS_ENTRY_POINT_GROUP)}
        if selector in published:
            model = _load_entry_point(published[selector], "config")
            origin = f"Adapter '{selector}' ({published[selector].value})"
            if not (isinstance(model, type) and issubclass(model, AdapterConfig)):
                raise AdapterNotFound(f"{origin} is not a taskserve AdapterConfig subclass")
            _configs[selector] = model
            return model
    found, origin = load_selected(selector)
    if is_ray_interface_adapter(found):
        return OpaqueAdapterConfig
    model = getattr(found, "config_model", None)
    if not (isinstance(model, type) and issubclass(model, AdapterConfig)):
        raise AdapterNotFound(f"{origin} is {found!r}, not a taskserve adapter class")
    return model
