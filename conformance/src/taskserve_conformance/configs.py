"""Task processor configurations for conformance tests.

Each test gets queues of its own (a unique name and its two dead-letter
queues), short leases and tiny backoffs, so tests neither see each other's
tasks nor wait long. An adapter author can change the timings for a slower
broker through the ``config_overrides`` fixture.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from taskserve import REVEAL_SECRETS, AdapterConfig, TaskProcessorConfig

DEFAULT_SETTINGS: Mapping[str, Any] = {
    "max_retries": 2,
    "retry_backoff_s": 0.05,
    "retry_backoff_max_s": 0.5,
    "retry_jitter": False,
    "lease_s": 2.0,
    "result_ttl_s": 3600.0,
}
"""Timings of every conformance config unless overridden."""

_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


def unique_queue_name(hint: str = "") -> str:
    """A queue name no other test uses: ``tsc-<hint>-<random>``."""
    readable = _UNSAFE.sub("-", hint).strip("-")[:40]
    return "-".join(part for part in ("tsc", readable, uuid.uuid4().hex[:12]) if part)


def adapter_selector(adapter: str | type) -> str:
    """The adapter as text another process can resolve (alias or ``module:Class``)."""
    if isinstance(adapter, str):
        return adapter
    return f"{adapter.__module__}:{adapter.__qualname__}"


def config_to_json(config: TaskProcessorConfig) -> str:
    """``config`` as the JSON text ``python -m taskserve.worker --config`` accepts."""
    data = config.model_dump(
        mode="json", exclude={"adapter", "adapter_config"}, context=REVEAL_SECRETS
    )
    assert config.adapter is not None  # set by validation
    data["adapter"] = adapter_selector(config.adapter)
    assert isinstance(config.adapter_config, AdapterConfig)  # typed by validation
    data["adapter_config"] = config.adapter_config.model_dump(mode="json", context=REVEAL_SECRETS)
    return json.dumps(data)


class ConfigFactory:
    """Builds validated configs for one test and remembers them for cleanup."""

    def __init__(
        self,
        adapter: str | type,
        adapter_config: Mapping[str, Any] | AdapterConfig,
        overrides: Mapping[str, Any] | None = None,
        name_hint: str = "",
    ) -> None:
        self.adapter = adapter
        self.adapter_config = adapter_config
        self.overrides = dict(overrides or {})
        self.name_hint = name_hint
        self.created: list[TaskProcessorConfig] = []

    def __call__(self, **settings: Any) -> TaskProcessorConfig:
        """A config with fresh queue names; ``settings`` override any field.

        Precedence: ``settings`` > the author's overrides > :data:`DEFAULT_SETTINGS`.
        """
        queue = settings.pop("queue_name", None) or unique_queue_name(self.name_hint)
        data: dict[str, Any] = {
            "queue_name": queue,
            "adapter": self.adapter,
            "adapter_config": self.adapter_config,
            "failed_task_queue_name": f"{queue}.failed",
            "unprocessable_task_queue_name": f"{queue}.unprocessable",
            **DEFAULT_SETTINGS,
            **self.overrides,
            **settings,
        }
        config = TaskProcessorConfig.from_dict(data)
        self.created.append(config)
        return config
