"""Creating a producer-side adapter from a config, outside any replica."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from taskserve.adapter import TaskProcessorAdapter
from taskserve.config import TaskProcessorConfig
from taskserve.registry import resolve_adapter

logger = logging.getLogger(__name__)


def count_in_ray() -> None:
    """Register the Ray metrics plugin (once per process) if this process is
    connected to Ray, so that a producer's enqueues and cancels are counted.

    A process that never imported Ray is not connected: then nothing is
    imported, neither Ray nor the Serve integration. A failure to register is
    logged, never raised: metrics do not stop a producer.
    """
    if "ray" not in sys.modules:
        return
    # The one import of the Serve layer from here (declared in the import contract):
    # the metrics plugin is needed only inside Ray, where that layer is available.
    from taskserve.serve.metrics import register_ray_metrics_in_ray

    try:
        register_ray_metrics_in_ray()
    except Exception as e:
        logger.warning("taskserve: Ray metrics are not recorded in this process: %s", e)


def instantiate_adapter_from_config(
    task_processor_config: TaskProcessorConfig | Mapping[str, Any],
) -> TaskProcessorAdapter:
    """Return an initialized adapter for ``task_processor_config``.

    Usable from scripts, tests and other services to enqueue tasks, read their
    status, cancel them and manage dead letters. A mapping is validated first
    (raising :class:`ConfigError` naming each bad field). Inside Ray (a Serve
    replica such as the HTTP ingress, a task or actor, a driver after
    ``ray.init``) the adapter's enqueues and cancels are counted in Ray's
    metrics (:func:`count_in_ray`); elsewhere Ray is neither imported nor started.
    """
    config = (
        task_processor_config
        if isinstance(task_processor_config, TaskProcessorConfig)
        else TaskProcessorConfig.from_dict(task_processor_config)
    )
    assert config.adapter is not None  # set by validation
    count_in_ray()
    adapter = resolve_adapter(config.adapter)(config)
    adapter.initialize()
    return adapter
