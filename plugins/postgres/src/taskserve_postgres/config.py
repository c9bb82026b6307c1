"""Configuration of the PostgreSQL adapter."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from taskserve.kit import AdapterConfig, RedactedUrl

DSN_SCHEMES = frozenset({"postgresql", "postgres"})
"""URL schemes accepted for ``dsn`` (libpq connection URIs)."""


class PostgresAdapterConfig(AdapterConfig):
    """Which database holds the queue, where in it, and how connections are kept."""

    adapter_alias: ClassVar[str | None] = "postgres"

    dsn: RedactedUrl = Field(
        description="libpq URI of the database: 'postgresql://user:password@host:5432/db'."
    )
    schema_name: str = Field(
        default="taskserve",
        alias="schema",
        pattern=r"^[a-z_][a-z0-9_]*$",
        max_length=63,
        description="Schema of the tables (created when missing).",
    )
    table_prefix: str = Field(
        default="",
        pattern=r"^[a-z0-9_]*$",
        max_length=40,
        description="Prefix of the table, index and channel names in the schema.",
    )
    pool_min_size: int = Field(default=1, ge=1, le=1000, description="Connections kept open.")
    pool_max_size: int = Field(default=10, ge=1, le=1000, description="Most connections opened.")
    connect_timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="Longest wait for a connection, then unreachable."
    )
    poll_interval_s: float = Field(
        default=0.5, gt=0, le=60, description="Longest pause of an idle consumer between claims."
    )

    # 'schema' would shadow a BaseModel method: the field is read as ``schema_name``.
    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, value: str) -> str:
        scheme = urlsplit(value).scheme.lower()
        if scheme not in DSN_SCHEMES:
            raise ValueError(
                f"unsupported scheme '{scheme}': dsn must be a PostgreSQL connection URI "
                "('postgresql://user:password@host:5432/database')"
            )
        return value

    @field_validator("pool_max_size")
    @classmethod
    def _check_pool(cls, value: int, info: ValidationInfo) -> int:
        minimum = info.data.get("pool_min_size")
        if minimum is not None and value < minimum:
            raise ValueError(f"pool_max_size ({value}) must be at least pool_min_size ({minimum})")
        return value
