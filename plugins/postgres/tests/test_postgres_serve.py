"""The PostgreSQL adapter passes the Serve group of the suite, with a real outage.

The test class has a database of its own (dropped after it); the outage
makes that database refuse every connection and terminates its sessions, so
the replicas' pools and LISTEN connections really lose the database.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

from taskserve import TaskProcessorConfig
from taskserve_conformance import BrokerHarness
from taskserve_conformance.serve import ServeConformance
from taskserve_postgres import PostgresAdapterConfig
from taskserve_postgres.testing import PostgresHarness, database_outage, temporary_database

pytest_plugins = ["taskserve_conformance.plugin", "taskserve_conformance.serve"]

ADMIN_DSN = os.environ.get(
    "TASKSERVE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class TestPostgresServe(ServeConformance):
    serve_group = "serve-ray-3"  # the Serve classes share three Ray instances (scripts/test.sh)
    adapter = "postgres"

    @pytest.fixture(scope="class")
    @classmethod
    def database(cls) -> Iterator[str]:
        with temporary_database(ADMIN_DSN, prefix="tsc_serve") as dsn:
            yield dsn

    @pytest.fixture
    def adapter_config(self, database: str) -> PostgresAdapterConfig:
        return PostgresAdapterConfig(dsn=database, schema=f"tsc_{uuid.uuid4().hex[:12]}")

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return PostgresHarness()

    @contextlib.contextmanager
    def broker_outage(self, config: TaskProcessorConfig) -> Iterator[None]:
        """The test's database refuses connections and its sessions are terminated."""
        settings = config.adapter_config
        assert isinstance(settings, PostgresAdapterConfig)
        with database_outage(settings.dsn, ADMIN_DSN):
            yield
