"""Configuration models (pydantic v2).

:class:`TaskProcessorConfig` is what users write, in code, in a dict or in a
Serve YAML file. Its ``adapter_config`` is validated by the selected adapter's
own model (a subclass of :class:`AdapterConfig`), so an unknown key is an
error naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from taskserve.errors import AdapterNotFound, ConfigError

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")

DEFAULT_ADAPTER = "sqlite"
"""Adapter used when neither ``adapter`` nor a typed ``adapter_config`` says."""


class AdapterConfig(BaseModel):
    """Base class of every adapter's typed configuration.

    Subclasses set ``adapter_alias`` to the entry-point alias of their adapter,
    so that passing an instance as ``TaskProcessorConfig.adapter_config``
    selects that adapter. Unknown keys are rejected.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)

    adapter_alias: ClassVar[str | None] = None


class TaskProcessorConfig(BaseModel):
    """How a consumer or producer talks to its queue.

    The field names follow Ray Serve's ``TaskProcessorConfig``; the retry,
    lease and result-TTL fields are taskserve's additions.
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        arbitrary_types_allowed=True,
        validate_assignment=False,
    )

    queue_name: str = Field(description="Queue the tasks are sent to and consumed from.")
    adapter: str | type | None = Field(
        default=None,
        description=(
            "Adapter alias ('sqlite', 'celery', ...), dotted path ('pkg.mod:Class' or "
            "'pkg.mod.Class') or class. Defaults to the typed adapter_config's "
            f"adapter, else '{DEFAULT_ADAPTER}'."
        ),
    )
    adapter_config: Any = Field(
        default=None,
        description="The adapter's settings: a dict or the adapter's typed config.",
    )
    max_retries: int = Field(default=3, ge=0, description="Retries after the first attempt.")
    retry_backoff_s: float = Field(
        default=1.0, ge=0, description="Delay before the first retry, doubled each retry."
    )
    retry_backoff_max_s: float = Field(default=60.0, ge=0, description="Cap of the retry delay.")
    retry_jitter: bool = Field(
        default=True, description="Randomize each delay between half and all of it."
    )
    failed_task_queue_name: str | None = Field(
        default=None, description="Dead-letter queue for tasks that failed every attempt."
    )
    unprocessable_task_queue_name: str | None = Field(
        default=None,
        description="Dead-letter queue for unknown task names and undecodable messages.",
    )
    result_ttl_s: float = Field(
        default=24 * 3600.0, gt=0, description="How long results are kept after a task ends."
    )
    lease_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Visibility timeout: a task fetched by a consumer that stops renewing "
            "this lease (it crashed) is delivered again after at most this long."
        ),
    )
    max_payload_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest encoded task payload accepted."
    )
    max_recording_failures: int = Field(
        default=5,
        ge=1,
        description=(
            "Deliveries in a row whose outcome cannot be recorded (a result the store "
            "refuses, say) before the task ends FAILURE with the recording error instead "
            "of being delivered again."
        ),
    )
    consumer_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Tasks run at once per consumer (default: max_ongoing_requests).",
    )

    @field_validator("queue_name", "failed_task_queue_name", "unprocessable_task_queue_name")
    @classmethod
    def _check_queue_name(cls, value: str | None) -> str | None:
        if value is not None and not _QUEUE_NAME.match(value):
            raise ValueError("must be 1-200 characters of letters, digits, '_', '.', ':' or '-'")
        return value

    @model_validator(mode="after")
    def _validate_adapter_config(self) -> TaskProcessorConfig:
        # Imported here: the registry imports this module for AdapterConfig.
        from taskserve.registry import resolve_adapter

        typed = isinstance(self.adapter_config, AdapterConfig)
        selector: str | type
        if self.adapter is not None:
            selector = self.adapter
        elif typed and type(self.adapter_config).adapter_alias:
            selector = str(type(self.adapter_config).adapter_alias)
        else:
            selector = DEFAULT_ADAPTER
        try:
            adapter_cls = resolve_adapter(selector)
        except AdapterNotFound as e:
            raise ValueError(f"adapter: {e}") from e
        model = adapter_cls.config_model
        raw = self.adapter_config
        if isinstance(raw, model):
            checked = raw
        else:
            if isinstance(raw, AdapterConfig):
                raise ValueError(
                    f"adapter_config: a {type(raw).__name__} was given but adapter "
                    f"'{adapter_cls.alias}' expects a {model.__name__}"
                )
            if raw is None:
                raw = {}
            if not isinstance(raw, Mapping):
                raise ValueError(
                    f"adapter_config: expected a mapping or {model.__name__}, "
                    f"got {type(raw).__name__}"
                )
            try:
                checked = model.model_validate(dict(raw))
            except ValidationError as e:
                raise ValueError(
                    f"adapter_config is invalid for adapter '{adapter_cls.alias}': "
                    + describe_validation_error(e, prefix="adapter_config")
                ) from None
        object.__setattr__(self, "adapter", self.adapter if self.adapter is not None else selector)
        object.__setattr__(self, "adapter_config", checked)
        return self

    @property
    def max_attempts(self) -> int:
        """Total runs allowed: the first attempt plus ``max_retries``."""
        return self.max_retries + 1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskProcessorConfig:
        """Validate ``data``; raise :class:`ConfigError` naming every bad field."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            raise ConfigError(
                "Invalid TaskProcessorConfig: " + describe_validation_error(e)
            ) from None

    @classmethod
    def from_yaml(cls, source: str | Path, key: str | None = None) -> TaskProcessorConfig:
        """Load from a YAML file path or YAML text, optionally under ``key``."""
        text = Path(source).read_text() if _looks_like_path(source) else str(source)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"Invalid YAML for TaskProcessorConfig: {e}") from e
        if key is not None:
            if not isinstance(data, Mapping) or key not in data:
                raise ConfigError(f"YAML has no top-level key '{key}'")
            data = data[key]
        if not isinstance(data, Mapping):
            raise ConfigError("TaskProcessorConfig YAML must be a mapping of fields")
        return cls.from_dict(data)


def _looks_like_path(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    return "\n" not in source and ":" not in source.split("/")[0] and Path(source).is_file()


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the field path; inputs never shown."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        loc = ".".join(str(part) for part in item["loc"])
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        msg = item["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(lines)
