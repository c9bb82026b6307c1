"""Which queue engine the examples use: chosen by configuration, never by code.

``TASKSERVE_EXAMPLE_CONFIG`` names a YAML file with ``adapter`` and
``adapter_config`` (see ``configs/``); without it the examples use the
embedded sqlite adapter with a database in a fresh temporary directory, so
they need no server at all::

    python examples/quickstart.py                                       # sqlite
    TASKSERVE_EXAMPLE_CONFIG=examples/configs/celery-redis.yaml \\
        python examples/quickstart.py                                   # Celery on Redis
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from taskserve import AdapterConfig, resolve_adapter

CONFIG_ENV = "TASKSERVE_EXAMPLE_CONFIG"
DB_ENV = "TASKSERVE_EXAMPLE_SQLITE_PATH"


def _selection() -> dict[str, Any]:
    source = os.environ.get(CONFIG_ENV)
    if not source:
        path = os.environ.get(DB_ENV)
        if path is None:
            # Shared by the driver and every replica: they inherit this variable.
            path = str(Path(tempfile.mkdtemp(prefix="taskserve-example-")) / "tasks.db")
            os.environ[DB_ENV] = path
        return {"adapter": "sqlite", "adapter_config": {"path": path}}
    file = Path(source).resolve()
    data = yaml.safe_load(file.read_text())
    if not isinstance(data, dict) or "adapter" not in data:
        raise SystemExit(f"{source}: expected a mapping with 'adapter' and 'adapter_config'")
    settings = data.get("adapter_config") or {}
    if data["adapter"] == "sqlite" and "path" in settings:
        # Relative to the YAML file, so that every process finds the same database.
        settings["path"] = str(file.parent / settings["path"])
    return data


def example_adapter_config() -> AdapterConfig:
    """The typed adapter config selected by the environment (sqlite by default)."""
    selection = _selection()
    adapter_cls = resolve_adapter(selection["adapter"])
    return adapter_cls.config_model.model_validate(selection.get("adapter_config") or {})


def describe() -> str:
    """One line saying which engine is in use (passwords are not shown)."""
    config = example_adapter_config()
    return f"{resolve_adapter(_selection()['adapter']).alias}: {config!r}"
