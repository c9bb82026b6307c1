"""The RQ adapter runs the whole conformance suite on Redis."""

from __future__ import annotations

import os
import uuid

import pytest

from taskserve_conformance import AdapterConformance, BrokerHarness
from taskserve_rq import RQAdapterConfig
from taskserve_rq.testing import RQHarness

pytest_plugins = ["taskserve_conformance.plugin"]

REDIS_URL = os.environ.get("TASKSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class TestRQConformance(AdapterConformance):
    adapter = "rq"
    chaos_adapter_config = {"redis_url": "{redis_url}"}

    @pytest.fixture
    def adapter_config(self) -> RQAdapterConfig:
        return RQAdapterConfig(redis_url=REDIS_URL, key_prefix=f"tsc-rq-{uuid.uuid4().hex[:12]}")

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return RQHarness()
