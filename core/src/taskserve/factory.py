"""Creating a producer-side adapter from a config, outside any replica."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskserve.adapter import TaskProcessorAdapter
from taskserve.config import TaskProcessorConfig
from taskserve.registry import resolve_adapter


def instantiate_adapter_from_config(
    task_processor_config: TaskProcessorConfig | Mapping[str, Any],
) -> TaskProcessorAdapter:
    """Return an initialized adapter for ``task_processor_config``.

    Usable from scripts, tests and other services to enqueue tasks, read their
    status, cancel them and manage dead letters. A mapping is validated first
    (raising :class:`ConfigError` naming each bad field).
    """
    config = (
        task_processor_config
        if isinstance(task_processor_config, TaskProcessorConfig)
        else TaskProcessorConfig.from_dict(task_processor_config)
    )
    assert config.adapter is not None  # set by validation
    adapter = resolve_adapter(config.adapter)(config)
    adapter.initialize()
    return adapter
