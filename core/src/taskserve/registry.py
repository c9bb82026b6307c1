"""Finding adapter classes: aliases from entry points, dotted paths, or classes.

See :mod:`taskserve.selection` for what a selector is; this module checks
that what it names is a :class:`~taskserve.TaskProcessorAdapter` subclass and
keeps the classes found.
"""

from __future__ import annotations

from taskserve.adapter import TaskProcessorAdapter
from taskserve.errors import AdapterNotFound
from taskserve.ray_adapter import shim_for
from taskserve.selection import (
    ADAPTERS_ENTRY_POINT_GROUP,
    FIRST_PARTY_DISTRIBUTIONS,
    installed_adapters,
    is_ray_interface_adapter,
    load_selected,
)

__all__ = [
    "ADAPTERS_ENTRY_POINT_GROUP",
    "FIRST_PARTY_DISTRIBUTIONS",
    "installed_adapters",
    "resolve_adapter",
]

_loaded: dict[str, type[TaskProcessorAdapter]] = {}


def resolve_adapter(selector: str | type) -> type[TaskProcessorAdapter]:
    """Return the adapter class named by an alias, a dotted path, or a class.

    Raises :class:`AdapterNotFound` with the installed aliases and a close
    match for an unknown alias, and an install hint for a first-party alias
    whose distribution is missing. A class written against Ray Serve's adapter
    interface comes back wrapped (:func:`taskserve.ray_adapter.shim_for`).
    """
    if isinstance(selector, str) and selector in _loaded:
        return _loaded[selector]
    found, origin = load_selected(selector)
    if is_ray_interface_adapter(found):
        assert isinstance(found, type)
        found = shim_for(found)
    if not (isinstance(found, type) and issubclass(found, TaskProcessorAdapter)):
        raise AdapterNotFound(
            f"{origin} is {found!r}, not a subclass of taskserve.TaskProcessorAdapter"
        )
    if isinstance(selector, str):
        _loaded[selector] = found
    return found
