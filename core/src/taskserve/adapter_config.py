"""The base of every adapter's typed configuration (pydantic v2)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_serializer

from taskserve.redaction import redact_url


class AdapterConfig(BaseModel):
    """Base class of every adapter's typed configuration.

    Subclasses set ``adapter_alias`` to the entry-point alias of their adapter,
    so that passing an instance as ``TaskProcessorConfig.adapter_config``
    selects that adapter. Unknown keys are rejected (with a close match named).
    A plugin also publishes its config class under the entry-point group
    ``taskserve.adapter_configs`` (same alias), so that validating a
    configuration imports only the config module, never the engine.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)

    adapter_alias: ClassVar[str | None] = None

    def check_queue_name(self, name: str, field: str) -> None:
        """Raise ValueError (saying why) if the engine cannot carry a queue called
        ``name``; called for each queue name of every TaskProcessorConfig using
        this config, ``field`` saying which (``queue_name``,
        ``failed_task_queue_name``, ``unprocessable_task_queue_name``). Any name
        taskserve accepts is fine by default."""


class OpaqueAdapterConfig(AdapterConfig):
    """The ``adapter_config`` of an adapter written against Ray Serve's
    ``TaskProcessorAdapter`` interface: kept exactly as given (``value``), as
    Ray does, and handed to that adapter unchanged. It is the adapter's own
    business to check it."""

    value: Any = None

    @field_serializer("value")
    def _serialize_value(self, value: Any) -> Any:
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            dump = getattr(value, "model_dump", None)
            if callable(dump):
                try:
                    return dump(mode="json")
                except Exception:
                    pass
            return redact_url(repr(value))
        return value
