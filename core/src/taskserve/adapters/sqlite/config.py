"""Configuration of the sqlite adapter."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from taskserve.kit import AdapterConfig


class SqliteAdapterConfig(AdapterConfig):
    """Where the embedded adapter keeps its database, and how it polls."""

    adapter_alias: ClassVar[str | None] = "sqlite"

    path: str = Field(
        default=".taskserve/tasks.db",
        description="Database file, shared by every producer and consumer of the queue.",
    )
    poll_interval_s: float = Field(
        default=0.05, gt=0, le=5, description="Longest wait between polls of an idle queue."
    )
    busy_timeout_s: float = Field(
        default=30.0, gt=0, description="How long a write waits for another process's lock."
    )
