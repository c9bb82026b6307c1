"""The PostgreSQL adapter runs the whole conformance suite.

The test class has a database of its own (dropped after it), and each test a
schema of its own in it. ``TASKSERVE_TEST_POSTGRES_DSN`` names the server
(a role that may create databases).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from taskserve_conformance import AdapterConformance, BrokerHarness
from taskserve_postgres import PostgresAdapterConfig
from taskserve_postgres.testing import PostgresHarness, temporary_database

pytest_plugins = ["taskserve_conformance.plugin"]

ADMIN_DSN = os.environ.get(
    "TASKSERVE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class TestPostgresConformance(AdapterConformance):
    adapter = "postgres"
    chaos_adapter_config = {"dsn": "{postgres_dsn}"}

    @pytest.fixture(scope="class")
    @classmethod
    def database(cls) -> Iterator[str]:
        with temporary_database(ADMIN_DSN, prefix="tsc_conformance") as dsn:
            yield dsn

    @pytest.fixture
    def adapter_config(self, database: str) -> PostgresAdapterConfig:
        return PostgresAdapterConfig(dsn=database, schema=f"tsc_{uuid.uuid4().hex[:12]}")

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return PostgresHarness()
