"""Hook plugin loading: entry points, broken plugins skipped, autoload switch."""

from __future__ import annotations

import logging
import sys
import types
from importlib.metadata import EntryPoint
from typing import Any

import pluggy
import pytest

from taskserve import hookimpl, plugins
from taskserve.hooks import TaskEvent


@pytest.fixture
def fresh_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "_manager", None)


def _install_module(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: Any) -> None:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)


def test_entry_point_plugins_are_loaded_and_broken_ones_skipped(
    fresh_manager: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    @hookimpl
    def taskserve_task_enqueued(event: TaskEvent) -> None:
        seen.append(event.task_id)

    _install_module(
        monkeypatch, "good_hooks_plugin", taskserve_task_enqueued=taskserve_task_enqueued
    )
    points = [
        EntryPoint("good", "good_hooks_plugin", plugins.HOOKS_ENTRY_POINT_GROUP),
        EntryPoint("broken", "no_such_module_for_hooks", plugins.HOOKS_ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(plugins, "entry_points", lambda group: points)
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="taskserve.plugins"):
        manager = plugins.get_plugin_manager()
    assert manager.has_plugin("good") and not manager.has_plugin("broken")
    assert any("skipped hook plugin 'broken'" in r.getMessage() for r in caplog.records)
    plugins.emit("enqueued", TaskEvent(task_id="t1", task_name="n", queue_name="q", adapter="a"))
    assert seen == ["t1"]


def test_autoload_can_be_disabled(fresh_manager: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        plugins, "entry_points", lambda group: pytest.fail("entry points must not be read")
    )
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    assert isinstance(plugins.get_plugin_manager(), pluggy.PluginManager)


def test_plugin_with_unknown_hook_is_rejected_by_check_pending(
    fresh_manager: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    @hookimpl
    def taskserve_task_exploded(event: TaskEvent) -> None:
        """Not a hook taskserve defines."""

    _install_module(
        monkeypatch, "typo_hooks_plugin", taskserve_task_exploded=taskserve_task_exploded
    )
    points = [EntryPoint("typo", "typo_hooks_plugin", plugins.HOOKS_ENTRY_POINT_GROUP)]
    monkeypatch.setattr(plugins, "entry_points", lambda group: points)
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV, raising=False)
    with pytest.raises(pluggy.PluginValidationError, match="taskserve_task_exploded"):
        plugins.get_plugin_manager()
