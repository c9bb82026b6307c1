"""Package attributes imported on first use.

A plugin package exports its config class eagerly (validating a
configuration must not import the engine) and its adapter class lazily:
``__getattr__ = lazy_attributes(__name__, {"MyAdapter": "my_plugin.adapter"})``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from ``names[name]`` on
    first use and keeps it in the package's namespace."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
