"""The base of every adapter's typed configuration (pydantic v2)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


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
