"""The sqlite dialect of the SQL task store (kept in the engine kit:
:class:`taskserve.kit.SqliteDialect`)."""

from taskserve.kit import SqliteDialect

__all__ = ["SqliteDialect"]
