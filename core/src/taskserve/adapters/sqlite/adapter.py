"""The embedded ``sqlite`` adapter.

Durable (a database file), needs no server, and is safe for many producer and
consumer processes sharing the file. It implements every capability of the
contract on the kit's SQL store and polling consumer - this module is all
that is its own - and is the reference the conformance suite is first
proven on.
"""

from __future__ import annotations

from typing import ClassVar

from taskserve.adapters.sqlite.config import SqliteAdapterConfig
from taskserve.kit import (
    AdapterConfig,
    Capability,
    PollingConsumer,
    SqliteDialect,
    SqlTaskStore,
    StoreAdapter,
    TaskRunner,
)


class SqliteAdapter(StoreAdapter[SqlTaskStore]):
    """Queue and results in one sqlite database file."""

    alias: ClassVar[str] = "sqlite"
    config_model: ClassVar[type[AdapterConfig]] = SqliteAdapterConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)

    @property
    def settings(self) -> SqliteAdapterConfig:
        """The typed adapter_config."""
        assert isinstance(self.adapter_config, SqliteAdapterConfig)
        return self.adapter_config

    def _build_store(self) -> SqlTaskStore:
        dialect = SqliteDialect(self.settings.path, self.settings.busy_timeout_s)
        return SqlTaskStore(dialect, self.config.queue_name, result_ttl_s=self.config.result_ttl_s)

    def _connect(self) -> None:
        self.store.ensure_schema()

    def _make_consumer(self, runner: TaskRunner, concurrency: int) -> PollingConsumer:
        return PollingConsumer(
            store=self.store,
            config=self.config,
            runner=runner,
            concurrency=concurrency,
            name="sqlite",
            poll_interval_s=self.settings.poll_interval_s,
        )
