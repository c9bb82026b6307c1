"""The embedded ``sqlite`` adapter: durable, no server, safe across processes."""

from typing import TYPE_CHECKING

from taskserve.adapters.sqlite.config import SqliteAdapterConfig
from taskserve.lazy import lazy_attributes

if TYPE_CHECKING:
    from taskserve.adapters.sqlite.adapter import SqliteAdapter

__getattr__ = lazy_attributes(__name__, {"SqliteAdapter": "taskserve.adapters.sqlite.adapter"})

__all__ = ["SqliteAdapter", "SqliteAdapterConfig"]
