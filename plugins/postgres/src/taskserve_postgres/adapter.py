"""The ``postgres`` adapter: queue, results and dead letters in PostgreSQL.

Every capability of the contract on the kit's SQL store and polling
consumer; what is PostgreSQL's own - the dialect (types, clock, ``SKIP
LOCKED`` claims, schema lock, ``NOTIFY``), the connection pool and the
``LISTEN`` wake-up of idle consumers - is in :mod:`taskserve_postgres.engine`.
"""

from __future__ import annotations

from typing import ClassVar

from taskserve.kit import (
    AdapterConfig,
    Capability,
    PollingConsumer,
    SqlTaskStore,
    StoreAdapter,
    TaskRunner,
)
from taskserve_postgres.config import PostgresAdapterConfig
from taskserve_postgres.engine import Listener, PostgresDialect


class PostgresAdapter(StoreAdapter[SqlTaskStore]):
    """Queue and results in tables of one PostgreSQL schema."""

    alias: ClassVar[str] = "postgres"
    config_model: ClassVar[type[AdapterConfig]] = PostgresAdapterConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)

    @property
    def settings(self) -> PostgresAdapterConfig:
        """The typed adapter_config."""
        assert isinstance(self.adapter_config, PostgresAdapterConfig)
        return self.adapter_config

    def _build_store(self) -> SqlTaskStore:
        dialect = PostgresDialect(self.settings)
        return SqlTaskStore(dialect, self.config.queue_name, result_ttl_s=self.config.result_ttl_s)

    def _connect(self) -> None:
        self.store.ensure_schema()

    def _make_consumer(self, runner: TaskRunner, concurrency: int) -> PollingConsumer:
        assert isinstance(self.store.dialect, PostgresDialect)
        listener = Listener(self.store.dialect, self.config.queue_name)
        return PollingConsumer(
            store=self.store,
            config=self.config,
            runner=runner,
            concurrency=concurrency,
            name="postgres",
            poll_interval_s=self.settings.poll_interval_s,
            wait_for_work=listener.wait,
            stop_waiting=listener.close,
        )
