"""The Dramatiq adapter runs the whole conformance suite on Redis and on RabbitMQ."""

from __future__ import annotations

import uuid

import pytest

from taskserve_conformance import AdapterConformance, BrokerHarness
from taskserve_dramatiq import DramatiqAdapterConfig
from taskserve_dramatiq.testing import DramatiqHarness

pytest_plugins = ["taskserve_conformance.plugin"]

REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def _unique(kind: str) -> str:
    return f"tsc-dramatiq-{kind}-{uuid.uuid4().hex[:12]}"


class TestDramatiqRedisConformance(AdapterConformance):
    adapter = "dramatiq"
    chaos_adapter_config = {"broker_url": "{redis_url}"}

    @pytest.fixture
    def adapter_config(self) -> DramatiqAdapterConfig:
        return DramatiqAdapterConfig(
            broker_url=REDIS_URL,
            key_prefix=_unique("results"),
            broker_options={"namespace": _unique("broker")},
            worker_timeout_s=0.2,
        )

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return DramatiqHarness()


class TestDramatiqRabbitmqConformance(AdapterConformance):
    adapter = "dramatiq"
    chaos_adapter_config = {"broker_url": "{amqp_url}", "state_url": "{redis_url}"}

    @pytest.fixture
    def adapter_config(self) -> DramatiqAdapterConfig:
        return DramatiqAdapterConfig(
            broker_url=RABBITMQ_URL,
            state_url=REDIS_URL,
            key_prefix=_unique("results"),
            worker_timeout_s=0.2,
        )

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return DramatiqHarness()
