"""What one SQL engine must tell :class:`~taskserve.engine.sql.store.SqlTaskStore`.

The store's statements are written once, with ``?`` placeholders and
``{name}`` slots that a dialect fills: table names (with the dialect's
prefix), column types, the clock, and the row-locking clause of the claim.
A dialect also owns the connections (one per thread, a pool...) and says
which driver errors mean the database cannot be reached.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses."""

    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Sequence[Any] | None: ...

    def fetchall(self) -> Sequence[Sequence[Any]]: ...


class Executor(Protocol):
    """Runs statements inside one connection or transaction."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...


class SqlDialect(ABC):
    """The hooks of one SQL engine; class attributes fill the statement slots."""

    placeholder: str = "?"
    """The driver's parameter marker; statements are written with ``?``."""
    blob_type: str = "BLOB"
    float_type: str = "REAL"
    serial_type: str = "INTEGER PRIMARY KEY AUTOINCREMENT"
    """Column type of an auto-numbered primary key (dead-letter order)."""
    now_sql: str = "(julianday('now') - 2440587.5) * 86400.0"
    """SQL expression of the current unix time, in seconds: the store takes all
    its times (leases, due times, expiry) from the database's clock, so
    consumers on hosts whose clocks disagree still agree on leases."""
    skip_locked: str = ""
    """Appended to the claim's inner SELECT (``FOR UPDATE SKIP LOCKED``), so
    concurrent claims take different rows without waiting on each other."""
    table_prefix: str = ""
    """Prefix of every table and index name."""

    # -- naming ------------------------------------------------------------
    def table(self, name: str) -> str:
        """The qualified name of table ``name``, or of index ``name`` where an
        existing index is referred to (``DROP INDEX``)."""
        return f"{self.table_prefix}{name}"

    def index(self, name: str) -> str:
        """The name of index ``name`` where it is created (``CREATE INDEX``); the
        qualified name by default. PostgreSQL puts an index in its table's
        schema and takes no schema here."""
        return self.table(name)

    def describe(self) -> str:
        """Where the database is, for messages (passwords redacted)."""
        return type(self).__name__

    # -- connections -------------------------------------------------------
    @abstractmethod
    def connection(self) -> AbstractContextManager[Executor]:
        """A connection for single statements, each committed on its own."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Executor]:
        """A transaction that holds a write lock (or row locks) until it ends:
        committed when the block ends, rolled back if it raises."""

    def check_reachable(self) -> None:
        """Raise BrokerUnavailable if the database is known to be gone (called by
        the store's ``ping`` before its query); nothing by default."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection (the dialect reconnects on next use)."""

    # -- errors --------------------------------------------------------------
    @abstractmethod
    def is_unavailable(self, error: BaseException) -> bool:
        """Whether ``error`` means the database cannot be reached or used now
        (down, locked past the timeout, read-only); the store then raises
        BrokerUnavailable."""

    @abstractmethod
    def is_unique_violation(self, error: BaseException) -> bool:
        """Whether ``error`` is a unique-key violation."""

    # -- schema ----------------------------------------------------------------
    @abstractmethod
    def table_exists(self, db: Executor, name: str) -> bool:
        """Whether table ``name`` (unprefixed) exists."""

    def lock_schema(self, db: Executor) -> None:
        """Serialize schema changes of replicas that start at once (inside the
        schema transaction); nothing where the transaction already does."""

    def after_queueing(self, db: Executor, queue: str) -> None:
        """Called in the transaction that made a task of ``queue`` deliverable
        (PostgreSQL sends ``NOTIFY`` to wake idle consumers)."""

    def statements(self, script: str) -> Iterator[str]:
        """The statements of a DDL ``script`` (split on ``;``)."""
        for statement in script.split(";"):
            if statement.strip():
                yield statement.strip()
