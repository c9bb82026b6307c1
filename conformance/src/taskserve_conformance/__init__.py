"""taskserve-conformance: the conformance suite every taskserve adapter passes.

An adapter author wires it in with a test class::

    import pytest
    from taskserve_conformance import AdapterConformance

    pytest_plugins = ["taskserve_conformance.plugin"]

    class TestMyAdapterConformance(AdapterConformance):
        adapter = "myqueue"

        @pytest.fixture
        def adapter_config(self):
            return {"url": "myqueue://localhost"}

        @pytest.fixture
        def harness(self):
            return MyQueueHarness()

The names below are imported on first use, so that consumer processes, which
import only :mod:`taskserve_conformance.handlers`, never import pytest.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskserve_conformance.consumers import ConsumerPool, ConsumerProcess
    from taskserve_conformance.deadlines import Deadlines
    from taskserve_conformance.gating import requires
    from taskserve_conformance.harness import BrokerHarness
    from taskserve_conformance.journal import Journal
    from taskserve_conformance.sqlite_harness import SqliteHarness
    from taskserve_conformance.suite import AdapterConformance
    from taskserve_conformance.waiting import hold_for, wait_for_status, wait_until

__all__ = [
    "AdapterConformance",
    "BrokerHarness",
    "ConsumerPool",
    "ConsumerProcess",
    "Deadlines",
    "Journal",
    "SqliteHarness",
    "hold_for",
    "requires",
    "wait_for_status",
    "wait_until",
]

_EXPORTS = {
    "AdapterConformance": "taskserve_conformance.suite",
    "BrokerHarness": "taskserve_conformance.harness",
    "ConsumerPool": "taskserve_conformance.consumers",
    "ConsumerProcess": "taskserve_conformance.consumers",
    "Deadlines": "taskserve_conformance.deadlines",
    "Journal": "taskserve_conformance.journal",
    "SqliteHarness": "taskserve_conformance.sqlite_harness",
    "hold_for": "taskserve_conformance.waiting",
    "requires": "taskserve_conformance.gating",
    "wait_for_status": "taskserve_conformance.waiting",
    "wait_until": "taskserve_conformance.waiting",
}

_ASSERTING_MODULES = (
    "taskserve_conformance.groups",
    "taskserve_conformance.suite",
    "taskserve_conformance.waiting",
    "taskserve_conformance.harness",
    "taskserve_conformance.serve",
)
"""Modules whose ``assert`` statements pytest should rewrite."""

if "pytest" in sys.modules:  # running under pytest: rewrite before they are imported
    sys.modules["pytest"].register_assert_rewrite(*_ASSERTING_MODULES)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskserve_conformance' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
