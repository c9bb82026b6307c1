"""Configuration models (pydantic v2).

:class:`TaskProcessorConfig` is what users write, in code, in a dict or in a
Serve YAML file. Its ``adapter_config`` is validated by the selected adapter's
own model (a subclass of :class:`AdapterConfig`), so an unknown key is an
error naming the field.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from taskserve.adapter_config import AdapterConfig, OpaqueAdapterConfig
from taskserve.errors import AdapterNotFound, ConfigError
from taskserve.selection import canonical_selector, config_model_for
from taskserve.webhooks.settings import WebhookSettings

QUEUE_NAME_MAX = 200
"""Longest queue name accepted."""

UNLIMITED_ATTEMPTS = 2**31 - 1
"""``max_attempts`` of ``max_retries=None`` (retry without limit)."""

__all__ = [
    "DEFAULT_ADAPTER",
    "UNLIMITED_ATTEMPTS",
    "AdapterConfig",
    "TaskProcessorConfig",
    "describe_validation_error",
    "load_config_data",
    "max_attempts_for",
    "validation_problems",
    "with_engine_time_limit",
]

_QUEUE_FIELDS = ("queue_name", "failed_task_queue_name", "unprocessable_task_queue_name")

DEFAULT_ADAPTER = "sqlite"
"""Adapter used when neither ``adapter`` nor a typed ``adapter_config`` says."""


def max_attempts_for(max_retries: int | None) -> int:
    """Total runs allowed by ``max_retries``: the first attempt plus the retries,
    :data:`UNLIMITED_ATTEMPTS` when ``max_retries`` is None."""
    if max_retries is None:
        return UNLIMITED_ATTEMPTS
    return max_retries + 1


def with_engine_time_limit(
    config: TaskProcessorConfig, limit: float | None, source: str
) -> TaskProcessorConfig:
    """``config`` with an engine setting's time limit (``limit``, named by
    ``source`` in errors) as its ``task_time_limit_s``: ``config`` itself when
    ``limit`` is None or equal to it, a copy when ``task_time_limit_s`` is not
    set. Raise :class:`ConfigError` when both are set and differ, since one of
    them would be silently lost. For adapters whose engine has a time limit of
    its own under another name."""
    if limit is None or config.task_time_limit_s == limit:
        return config
    if config.task_time_limit_s is not None:
        raise ConfigError(
            f"TaskProcessorConfig.task_time_limit_s ({config.task_time_limit_s!r}) and "
            f"{source} ({limit!r}) disagree; give the limit once, as task_time_limit_s"
        )
    return config.model_copy(update={"task_time_limit_s": limit})


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
    max_retries: int | None = Field(
        default=3,
        ge=0,
        description=(
            "Retries after the first attempt; None retries without limit (Celery's and "
            "Ray Serve's meaning of max_retries=None)."
        ),
    )
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
            "this lease (it crashed) is delivered again after at most this long, "
            "plus about half a second (the reconciler's tick, or a polling "
            "consumer's interval), ahead of the tasks queued after it, while the "
            "broker is reachable."
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
    task_time_limit_s: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Longest run of one attempt, in seconds: at the limit an async handler is "
            "cancelled and a sync one gets TaskTimeLimitExceeded raised in its thread; "
            "the attempt fails with TaskTimeLimitExceeded and is retried or dead-lettered "
            "like any failure. None (the default) sets no limit. "
            "@task_handler(time_limit_s=...) overrides it per task name."
        ),
    )
    task_time_limit_grace_s: float = Field(
        default=5.0,
        gt=0,
        allow_inf_nan=False,
        description=(
            "How long a handler may outlive its time limit (blocked in a C call, or "
            "ignoring the interruption) before its consumer reports itself unhealthy "
            "and stops renewing the task's lease, so that the task is delivered again "
            "to another consumer after lease_s."
        ),
    )

    webhooks: WebhookSettings = Field(
        default_factory=WebhookSettings,
        description=(
            "Completion webhooks of this queue's tasks: the Standard Webhooks signing "
            "secret (required before a task may ask for a webhook), whether private "
            "targets are allowed, the delivery timeout and retry schedule, the progress "
            "event interval (see taskserve.webhooks.WebhookSettings)."
        ),
    )

    @field_validator(*_QUEUE_FIELDS)
    @classmethod
    def _check_queue_name(cls, value: str | None) -> str | None:
        # Ray Serve takes any string; taskserve refuses only what no engine can
        # carry. An engine with stricter rules says so (AdapterConfig.check_queue_name).
        if value is None:
            return value
        if not value.strip():
            raise ValueError("must not be empty or blank")
        if len(value) > QUEUE_NAME_MAX:
            raise ValueError(f"must be at most {QUEUE_NAME_MAX} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must not contain control characters")
        return value

    def __init__(self, /, **data: Any) -> None:
        """Validate the fields; raise :class:`ConfigError` naming every bad one."""
        try:
            super().__init__(**data)
        except ValidationError as e:
            # The message lists every problem; pydantic's own traceback adds nothing.
            raise ConfigError(
                "Invalid TaskProcessorConfig: "
                + describe_validation_error(e, known_fields=type(self).model_fields)
            ) from None

    @model_validator(mode="after")
    def _validate_adapter_config(self) -> TaskProcessorConfig:
        typed = isinstance(self.adapter_config, AdapterConfig)
        selector: str | type
        if self.adapter is not None:
            try:
                selector = canonical_selector(self.adapter)
            except AdapterNotFound as e:
                raise ValueError(f"adapter: {e}") from e
        elif typed and type(self.adapter_config).adapter_alias:
            selector = str(type(self.adapter_config).adapter_alias)
        else:
            selector = DEFAULT_ADAPTER
        try:
            model = config_model_for(selector)
        except AdapterNotFound as e:
            raise ValueError(f"adapter: {e}") from e
        name = model.adapter_alias or (selector if isinstance(selector, str) else selector.__name__)
        raw = self.adapter_config
        if isinstance(raw, model):
            checked = raw
        elif issubclass(model, OpaqueAdapterConfig):
            checked = model(value=raw)
        else:
            if isinstance(raw, AdapterConfig):
                raise ValueError(
                    f"adapter_config: a {type(raw).__name__} was given but adapter "
                    f"'{name}' expects a {model.__name__}"
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
                    f"adapter_config is invalid for adapter '{name}': "
                    + describe_validation_error(
                        e, prefix="adapter_config", known_fields=model.model_fields
                    )
                ) from None
        for field in _QUEUE_FIELDS:
            name = getattr(self, field)
            if name is not None:
                try:
                    checked.check_queue_name(name, field)
                except ValueError as e:
                    raise ValueError(f"{field}: {e}") from None
        object.__setattr__(self, "adapter", selector)
        object.__setattr__(self, "adapter_config", checked)
        return self

    @property
    def max_attempts(self) -> int:
        """Total runs allowed: the first attempt plus ``max_retries``
        (:data:`UNLIMITED_ATTEMPTS` when ``max_retries`` is None)."""
        return max_attempts_for(self.max_retries)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskProcessorConfig:
        """Validate ``data``; raise :class:`ConfigError` naming every bad field."""
        if isinstance(data, TaskProcessorConfig):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"Invalid TaskProcessorConfig: expected a mapping of fields, got "
                f"{type(data).__name__}"
            )
        return cls(**dict(data))

    @classmethod
    def load(cls, source: Any, key: str | None = None) -> TaskProcessorConfig:
        """The one way to read a configuration, used by the CLI, the worker and
        the autoscaling policy.

        ``source`` is a TaskProcessorConfig, a mapping, a YAML or JSON file path,
        or YAML or JSON text; ``key`` selects a section of it (see
        :func:`load_config_data` for the dotted-path rules), e.g.
        ``applications.0.args.task_processor_config`` in a Serve config file.
        Every problem raises :class:`ConfigError`, whose message lists every
        invalid field of a mapping (:meth:`find_problems`), ``adapter_config``'s
        included even when other fields are invalid too.
        """
        if isinstance(source, TaskProcessorConfig) and key is None:
            return source
        data = load_config_data(source, key)
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            problems = cls.find_problems(data)
            if not problems:
                raise
            raise ConfigError("Invalid TaskProcessorConfig: " + "; ".join(problems)) from e

    @classmethod
    def from_yaml(cls, source: str | Path, key: str | None = None) -> TaskProcessorConfig:
        """Load from a YAML file path or YAML text, optionally its section ``key``.

        ``key`` is a dotted path through mappings and lists: a list item is
        picked by its number from 0 or by its ``name`` field, so in a Ray Serve
        config file ``key="applications.0.args.processor"`` and
        ``key="applications.my_app.args.processor"`` both read the mapping
        under ``processor`` in the ``args`` of the application named
        ``my_app`` (the first). A mapping key holding dots is matched whole
        (the longest key that matches wins). Raises :class:`ConfigError` for an
        unreadable file, invalid YAML, a missing section (naming the keys that
        are there) and every invalid field. See :meth:`load`.
        """
        return cls.load(source, key)

    @classmethod
    def find_problems(cls, data: Any) -> list[str]:
        """Every problem of ``data`` as this config's fields, one line each
        starting with the path of the field (``adapter_config.path: ...``); an
        empty list when ``data`` is valid. Input values are never shown.

        Building the config checks ``adapter_config`` (against the selected
        adapter's model) only once every other field is valid; this also
        reports its problems, and an unknown ``adapter``, when other fields
        are invalid. Lines about ``adapter_config`` end with the adapter that
        checked them, ``(adapter 'sqlite')``.
        """
        if isinstance(data, TaskProcessorConfig):
            return []
        if not isinstance(data, Mapping):
            return [f"expected a mapping of fields, got {type(data).__name__}"]
        try:
            _structured_errors_model(cls).model_validate(dict(data))
        except ValidationError as e:
            error = e
        else:
            return []
        items = error.errors(include_input=False, include_url=False)
        lines = validation_problems(error, known_fields=cls.model_fields)
        field_lines = [line for item, line in zip(items, lines, strict=True) if item["loc"]]
        whole_lines = [line for item, line in zip(items, lines, strict=True) if not item["loc"]]
        failed_fields = {str(item["loc"][0]) for item in items if item["loc"]}
        adapter_lines = [] if "adapter" in failed_fields else _adapter_config_problems(data)
        # A whole-config problem is raised only once every field is valid, and
        # the adapter's problems come first in it: with adapter lines it is one of them.
        return field_lines + (adapter_lines or whole_lines)


@functools.cache
def _structured_errors_model(model: type[TaskProcessorConfig]) -> type[TaskProcessorConfig]:
    """``model`` with pydantic's own ``__init__``: its validation raises the
    ValidationError, item by item, that ``model.__init__`` turns into one
    ConfigError message. Its validators are ``model``'s."""
    namespace = {"__init__": BaseModel.__init__, "__module__": model.__module__}
    return cast("type[TaskProcessorConfig]", type(model.__name__, (model,), namespace))


def _adapter_config_problems(data: Mapping[str, Any]) -> list[str]:
    """The problems of ``data``'s adapter selection and of its ``adapter_config``
    mapping, one line per field; [] when they are valid or cannot be checked
    alone (a typed config, or a value that is not a mapping)."""
    raw = data.get("adapter_config")
    if isinstance(raw, AdapterConfig) or not isinstance(raw, Mapping | None):
        return []
    selected = data.get("adapter")
    try:
        selector = DEFAULT_ADAPTER if selected is None else canonical_selector(selected)
        model = config_model_for(selector)
    except AdapterNotFound as e:
        return [f"adapter: {e}"]
    if issubclass(model, OpaqueAdapterConfig):
        return []
    try:
        model.model_validate(dict(raw or {}))
    except ValidationError as e:
        name = model.adapter_alias or (selector if isinstance(selector, str) else selector.__name__)
        return [
            f"{line} (adapter '{name}')"
            for line in validation_problems(
                e, prefix="adapter_config", known_fields=model.model_fields
            )
        ]
    return []


def load_config_data(source: Any, key: str | None = None) -> Any:
    """The data :meth:`TaskProcessorConfig.load` validates, not validated yet.

    ``source`` is read when it is a file path (``str`` or :class:`~pathlib.Path`;
    JSON when its text starts with ``{``, else YAML) or YAML or JSON text, and
    used as given otherwise (a mapping). ``key`` then selects a section by a
    dotted path: each part is a mapping key, or a list item's number from 0 or
    the item whose ``name`` field equals it; a mapping key holding dots is
    matched whole, the longest match first. Raises :class:`ConfigError` for an
    unreadable file, invalid YAML or JSON, and a missing section (naming the
    keys there are).
    """
    data = _read_source(source) if isinstance(source, (str, Path)) else source
    if key is not None:
        data = _section(data, key)
    return data


def _read_source(source: str | Path) -> Any:
    if _looks_like_path(source):
        try:
            text = Path(source).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read the configuration file '{source}': {e}") from e
    else:
        text = str(source)
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError as e:
            raise ConfigError(f"Invalid JSON for TaskProcessorConfig: {e}") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"Invalid YAML for TaskProcessorConfig: {e}") from e


_LISTED_KEYS = 20
"""Most keys named by a missing-section error."""


def _section(data: Any, key: str) -> Any:
    """The value at dotted path ``key`` (see :func:`load_config_data`)."""
    parts = key.split(".")
    node, walked, at = data, "", 0
    while at < len(parts):
        step = _step(node, parts, at)
        if step is None:
            missing = f"{walked}.{parts[at]}" if walked else parts[at]
            raise ConfigError(
                f"the configuration has no section '{missing}' ({_contents(node, walked)})"
            )
        node, taken = step
        name = ".".join(parts[at : at + taken])
        walked = f"{walked}.{name}" if walked else name
        at += taken
    return node


def _step(node: Any, parts: list[str], at: int) -> tuple[Any, int] | None:
    """The child of ``node`` named by ``parts[at:]`` and how many parts its name
    took, or None."""
    if isinstance(node, Mapping):
        for end in range(len(parts), at, -1):
            name = ".".join(parts[at:end])
            if name in node:
                return node[name], end - at
            if name.isdigit() and int(name) in node:  # YAML reads `0:` as a number
                return node[int(name)], end - at
        return None
    if isinstance(node, list):
        part = parts[at]
        if part.isdigit():
            return (node[int(part)], 1) if int(part) < len(node) else None
        for item in node:
            if isinstance(item, Mapping) and item.get("name") == part:
                return item, 1
    return None


def _contents(node: Any, walked: str) -> str:
    """What ``node`` (at path ``walked``) holds, for a missing-section error."""
    where = f"'{walked}'" if walked else "the top level"
    if isinstance(node, Mapping):
        if not node:
            return f"{where} is empty"
        keys = [str(k) for k in node]
        shown = ", ".join(keys[:_LISTED_KEYS]) + (", ..." if len(keys) > _LISTED_KEYS else "")
        return f"{where} has: {shown}"
    if isinstance(node, list):
        names = [str(i["name"]) for i in node if isinstance(i, Mapping) and "name" in i]
        named = f", named {', '.join(names[:_LISTED_KEYS])}" if names else ""
        return f"{where} is a list of {len(node)} items, numbered from 0{named}"
    return f"{where} is a {type(node).__name__}, not a section"


def _looks_like_path(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    return "\n" not in source and ":" not in source.split("/")[0] and Path(source).is_file()


def describe_validation_error(
    error: ValidationError, prefix: str = "", known_fields: Iterable[str] = ()
) -> str:
    """One line per problem, each naming the field path; inputs never shown. An
    unknown key gets the closest of ``known_fields`` as a suggestion. The
    problems of :func:`validation_problems`, joined by ``"; "``."""
    return "; ".join(validation_problems(error, prefix, known_fields))


def validation_problems(
    error: ValidationError, prefix: str = "", known_fields: Iterable[str] = ()
) -> list[str]:
    """One text per item of ``error.errors()``, in order: ``"field.path: message"``
    (the path under ``prefix``), the input never shown; an unknown key gets the
    closest of ``known_fields`` as a suggestion."""
    known = list(known_fields)
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        parts = [str(part) for part in item["loc"]]
        loc = ".".join(parts)
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        msg = item["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if item["type"] == "extra_forbidden" and parts and known:
            close = difflib.get_close_matches(parts[-1], known, n=1, cutoff=0.6)
            msg = "unknown field" + (f"; did you mean '{close[0]}'?" if close else "")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return lines
