"""The core's embedded ``sqlite`` adapter passes the Serve group of the suite."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskserve import TaskProcessorConfig
from taskserve.adapters.sqlite import SqliteAdapterConfig
from taskserve_conformance import BrokerHarness, SqliteHarness
from taskserve_conformance.serve import ServeConformance

pytest_plugins = ["taskserve_conformance.plugin"]


class TestSqliteServe(ServeConformance):
    serve_group = "serve-ray-3"  # the Serve classes share three Ray instances (scripts/test.sh)
    adapter = "sqlite"

    @pytest.fixture
    def adapter_config(self, tmp_path: Path) -> dict[str, str]:
        return {"path": str(tmp_path / "queue.db")}

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return SqliteHarness()

    @contextlib.contextmanager
    def broker_outage(self, config: TaskProcessorConfig) -> Iterator[None]:
        """Move the database file away (consumers then cannot reach it), then back."""
        settings = config.adapter_config
        assert isinstance(settings, SqliteAdapterConfig)
        path = Path(settings.path)
        away = path.with_name(path.name + ".away")
        os.rename(path, away)
        try:
            yield
        finally:
            os.rename(away, path)
