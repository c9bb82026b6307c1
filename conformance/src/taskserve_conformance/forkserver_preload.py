"""Imported once by the consumers' fork server (:mod:`taskserve_conformance.launcher`).

Imports the consumer entry points and every installed adapter with its
consumer and engine modules, so that forked consumers start without importing
them. An adapter that fails to import here is simply imported (and fails, with
its own error) in the consumer that uses it.
"""

from __future__ import annotations

import contextlib
import importlib
from importlib.metadata import entry_points

import taskserve.worker  # noqa: F401
import taskserve_conformance.handlers
import taskserve_conformance.shared_consumer  # noqa: F401

for _entry in entry_points(group="taskserve.adapters"):
    for _part in ("", ".adapter", ".consumer", ".engine", ".worker"):
        with contextlib.suppress(Exception):
            importlib.import_module(_entry.module + _part)
    with contextlib.suppress(Exception):
        _entry.load()
