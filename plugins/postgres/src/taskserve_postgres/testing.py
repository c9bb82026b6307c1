"""The conformance suite's broker harness for the PostgreSQL adapter, and
database helpers for tests.

The harness works on the tables with plain psycopg, never through the
adapter: raw messages are inserted as task rows, dead-letter writes are made
to fail by a temporary trigger, and cleanup deletes the rows a test wrote
(and the schema once it holds nothing else). :func:`temporary_database`
gives a test class a database of its own; :func:`database_outage` makes a
database refuse every connection for a while, which is a real outage for the
adapter's pool and ``LISTEN`` connections. Needs ``taskserve-conformance``
(``pip install 'taskserve-postgres[test]'``) and a role allowed to create
databases and terminate backends (tests run as ``postgres``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg import sql

from taskserve.kit import SqlTaskStore, TaskProcessorConfig
from taskserve_conformance.harness import BrokerHarness
from taskserve_postgres.config import PostgresAdapterConfig
from taskserve_postgres.engine import PostgresDialect

UNREACHABLE_DSN = "postgresql://postgres@127.0.0.1:1/postgres"
"""A DSN whose port nothing listens on."""


def _settings(config: TaskProcessorConfig) -> PostgresAdapterConfig:
    settings = config.adapter_config
    if not isinstance(settings, PostgresAdapterConfig):
        raise TypeError(f"PostgresHarness needs a postgres config, got {type(settings).__name__}")
    return settings


def _connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=10)


def with_database(dsn: str, database: str) -> str:
    """``dsn`` with its database name replaced by ``database``."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


@contextlib.contextmanager
def temporary_database(admin_dsn: str, prefix: str = "tsc") -> Iterator[str]:
    """Create a database on ``admin_dsn``'s server, yield its DSN, then drop it
    (with every session still connected to it)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _connect(admin_dsn) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(admin_dsn, name)
    finally:
        with _connect(admin_dsn) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def terminate_backends(admin_dsn: str, database: str) -> int:
    """Terminate every session connected to ``database``; how many there were."""
    with _connect(admin_dsn) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


@contextlib.contextmanager
def database_outage(dsn: str, admin_dsn: str) -> Iterator[None]:
    """Inside the block, ``dsn``'s database accepts no connection (superusers
    included) and its sessions are terminated; afterwards it is open again."""
    database = urlsplit(dsn).path.lstrip("/")
    name = sql.Identifier(database)
    with _connect(admin_dsn) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(name))
    try:
        terminate_backends(admin_dsn, database)
        yield
    finally:
        with _connect(admin_dsn) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(name))


class PostgresHarness(BrokerHarness):
    """Table-level access to the PostgreSQL adapter's schema."""

    def _tables(self, config: TaskProcessorConfig) -> PostgresDialect:
        """The config's dialect, with its tables created if they are missing."""
        dialect = PostgresDialect(_settings(config))
        store = SqlTaskStore(dialect, config.queue_name, result_ttl_s=60.0)
        try:
            store.ensure_schema()
        finally:
            store.close()
        return dialect

    def publish_raw(self, config: TaskProcessorConfig, body: bytes) -> None:
        """Insert ``body`` as a queued row of ``config.queue_name`` and wake its consumers."""
        dialect = self._tables(config)
        with _connect(dialect.dsn) as conn, conn.transaction():
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (id, queue, payload, status, created_at, updated_at,"
                    " visible_at) VALUES (%s, %s, %s, 'PENDING', {now}, {now}, {now})"
                ).format(sql.SQL(dialect.table("tasks")), now=sql.SQL(dialect.now_sql)),
                (f"raw-{uuid.uuid4()}", config.queue_name, body),
            )
            conn.execute("SELECT pg_notify(%s, '')", (dialect.channel(config.queue_name),))

    @contextlib.contextmanager
    def break_dead_letters(self, config: TaskProcessorConfig) -> Iterator[None]:
        """Abort every insert into this config's dead-letter queues."""
        dialect = self._tables(config)
        queues = [config.failed_task_queue_name, config.unprocessable_task_queue_name]
        name = f"tsc_broken_dead_letters_{uuid.uuid4().hex}"
        function = sql.Identifier(dialect.schema, name)
        trigger, table = sql.Identifier(name), sql.SQL(dialect.table("dead_letters"))
        with _connect(dialect.dsn) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                    " RAISE EXCEPTION 'dead-letter writes are broken by the harness'; END $$"
                ).format(function)
            )
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER {} BEFORE INSERT ON {} FOR EACH ROW"
                    " WHEN (NEW.queue IN ({})) EXECUTE FUNCTION {}()"
                ).format(trigger, table, sql.SQL(", ").join(map(sql.Literal, queues)), function)
            )
            try:
                yield
            finally:
                conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, table))
                conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(function))

    def unreachable_adapter_config(self, config: TaskProcessorConfig) -> Mapping[str, Any]:
        """The same settings pointing at a closed port, with a short timeout."""
        settings = _settings(config)
        return {**settings.model_dump(), "dsn": UNREACHABLE_DSN, "connect_timeout_s": 1.0}

    def cleanup(self, config: TaskProcessorConfig) -> None:
        """Delete the rows of ``config``'s queues; once the tables hold no other
        rows, drop them, and the schema if nothing else is left in it."""
        dialect = PostgresDialect(_settings(config))
        queues = [
            config.queue_name,
            config.failed_task_queue_name,
            config.unprocessable_task_queue_name,
        ]
        tables = [sql.SQL(dialect.table(t)) for t in ("tasks", "dead_letters", "schema_version")]
        tasks, dead_letters, _ = tables
        with _connect(dialect.dsn) as conn:
            if not all(dialect.table_exists(conn, t) for t in ("tasks", "dead_letters")):
                return
            conn.execute(sql.SQL("DELETE FROM {} WHERE queue = %s").format(tasks), (queues[0],))
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE queue = ANY(%s)").format(dead_letters),
                ([q for q in queues if q],),
            )
            left = conn.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {}) OR EXISTS (SELECT 1 FROM {})").format(
                    tasks, dead_letters
                )
            ).fetchone()
            if left is None or left[0]:
                return
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(tables)))
            with contextlib.suppress(psycopg.errors.DependentObjectsStillExist):
                conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(dialect.schema)))
