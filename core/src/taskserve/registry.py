"""Finding adapters: aliases from entry points, dotted paths, or classes.

Entry points of the group ``taskserve.adapters`` map a short alias to
``module:Class``. Nothing is imported until an adapter is selected.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from taskserve.errors import AdapterNotFound

if TYPE_CHECKING:
    from taskserve.adapter import TaskProcessorAdapter

ADAPTERS_ENTRY_POINT_GROUP = "taskserve.adapters"

FIRST_PARTY_DISTRIBUTIONS: dict[str, str] = {
    "celery": "taskserve-celery",
    "dramatiq": "taskserve-dramatiq",
    "postgres": "taskserve-postgres",
    "rq": "taskserve-rq",
}
"""Aliases of adapters published by this project outside the core."""

_loaded: dict[str, type[TaskProcessorAdapter]] = {}


def installed_adapters() -> dict[str, EntryPoint]:
    """Alias -> entry point of every installed adapter (nothing imported)."""
    return {ep.name: ep for ep in entry_points(group=ADAPTERS_ENTRY_POINT_GROUP)}


def _check_adapter_class(obj: object, origin: str) -> type[TaskProcessorAdapter]:
    from taskserve.adapter import TaskProcessorAdapter

    if not (isinstance(obj, type) and issubclass(obj, TaskProcessorAdapter)):
        raise AdapterNotFound(
            f"{origin} is {obj!r}, not a subclass of taskserve.TaskProcessorAdapter"
        )
    return obj


def _import_dotted(path: str) -> type[TaskProcessorAdapter]:
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
        obj = getattr(module, attr)
    except AttributeError as e:
        raise AdapterNotFound(f"Adapter path '{path}': '{module_name}' has no '{attr}'") from e
    return _check_adapter_class(obj, f"Adapter path '{path}'")


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


def resolve_adapter(selector: str | type) -> type[TaskProcessorAdapter]:
    """Return the adapter class named by an alias, a dotted path, or a class.

    Raises :class:`AdapterNotFound` with the installed aliases and a close
    match for an unknown alias, and an install hint for a first-party alias
    whose distribution is missing.
    """
    if isinstance(selector, type):
        return _check_adapter_class(selector, f"Adapter class {selector.__qualname__}")
    if not isinstance(selector, str) or not selector:
        raise AdapterNotFound(
            f"adapter must be an alias, a dotted path or a class, got {selector!r}"
        )
    if selector in _loaded:
        return _loaded[selector]
    if ":" in selector or "." in selector:
        adapter_cls = _import_dotted(selector)
    else:
        installed = installed_adapters()
        if selector not in installed:
            raise _unknown_alias(selector, installed)
        entry_point = installed[selector]
        try:
            obj = entry_point.load()
        except ImportError as e:
            raise AdapterNotFound(
                f"Adapter '{selector}' is installed ({entry_point.value}) but cannot be "
                f"imported: {e}"
            ) from e
        adapter_cls = _check_adapter_class(obj, f"Adapter '{selector}' ({entry_point.value})")
    _loaded[selector] = adapter_cls
    return adapter_cls
