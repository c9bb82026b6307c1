"""The plugin manager that loads and calls lifecycle hooks.

Built-in hooks are registered first (the task logs of :mod:`taskserve.logs`),
then every ``taskserve.hooks`` entry point (unless
``TASKSERVE_DISABLE_PLUGIN_AUTOLOAD`` is set); a plugin that fails to load is
skipped with one log line.
"""

from __future__ import annotations

import logging
import os
import threading
from importlib.metadata import entry_points

import pluggy

from taskserve.hooks import PROJECT_NAME, TaskEvent, TaskLifecycleSpec
from taskserve.logs import TASK_LOG_PLUGIN_NAME, TaskLogHooks

logger = logging.getLogger(__name__)

HOOKS_ENTRY_POINT_GROUP = "taskserve.hooks"
DISABLE_AUTOLOAD_ENV = "TASKSERVE_DISABLE_PLUGIN_AUTOLOAD"

_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None


def _load_entry_point_plugins(manager: pluggy.PluginManager) -> None:
    for entry_point in entry_points(group=HOOKS_ENTRY_POINT_GROUP):
        if manager.has_plugin(entry_point.name):
            continue
        try:
            plugin = entry_point.load()
            manager.register(plugin, name=entry_point.name)
        except Exception as e:  # a broken plugin must not stop the others
            logger.warning(
                "taskserve: skipped hook plugin %r (%s): %s: %s",
                entry_point.name,
                entry_point.value,
                type(e).__name__,
                e,
            )


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created and loaded on first use."""
    global _manager
    with _lock:
        if _manager is None:
            manager = pluggy.PluginManager(PROJECT_NAME)
            manager.add_hookspecs(TaskLifecycleSpec)
            manager.register(TaskLogHooks(), name=TASK_LOG_PLUGIN_NAME)
            if not os.environ.get(DISABLE_AUTOLOAD_ENV):
                _load_entry_point_plugins(manager)
            manager.check_pending()
            _manager = manager
        return _manager


def emit(hook_name: str, event: TaskEvent) -> None:
    """Call hook ``taskserve_task_<hook_name>`` with ``event``; log, never raise."""
    hook = getattr(get_plugin_manager().hook, f"taskserve_task_{hook_name}")
    try:
        hook(event=event)
    except Exception:
        logger.exception("taskserve: a %s hook raised for task %s", hook_name, event.task_id)
