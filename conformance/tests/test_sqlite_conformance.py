"""The core's embedded ``sqlite`` adapter runs the whole conformance suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskserve_conformance import AdapterConformance, BrokerHarness, SqliteHarness

pytest_plugins = ["taskserve_conformance.plugin"]


class TestSqliteConformance(AdapterConformance):
    adapter = "sqlite"
    chaos_adapter_config = {"path": "{workdir}/chaos.db"}

    @pytest.fixture
    def adapter_config(self, tmp_path: Path) -> dict[str, str]:
        return {"path": str(tmp_path / "queue.db")}

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return SqliteHarness()
