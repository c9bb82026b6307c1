"""Warnings for the module paths that moved into :mod:`taskserve.kit`."""

from __future__ import annotations

import warnings


def moved(old: str, names: str) -> None:
    """Warn that module ``old`` is deprecated in favour of the kit."""
    warnings.warn(
        f"{old} is deprecated and will be removed in taskserve 0.3; import {names} "
        "from taskserve.kit instead",
        DeprecationWarning,
        stacklevel=3,
    )
