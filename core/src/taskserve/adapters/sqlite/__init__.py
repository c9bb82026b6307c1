"""The embedded ``sqlite`` adapter: durable, no server, safe across processes."""

from taskserve.adapters.sqlite.adapter import SqliteAdapter
from taskserve.adapters.sqlite.config import SqliteAdapterConfig

__all__ = ["SqliteAdapter", "SqliteAdapterConfig"]
