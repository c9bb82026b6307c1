"""The Dramatiq adapter passes the Serve group of the suite on Redis and on RabbitMQ.

The brokers are shared with other test runs, so the broker outage is the
suite's simulated one (inside the replica) rather than a stopped server.
"""

from __future__ import annotations

import uuid

import pytest

from taskserve_conformance import BrokerHarness
from taskserve_conformance.serve import ServeConformance
from taskserve_dramatiq import DramatiqAdapterConfig
from taskserve_dramatiq.testing import DramatiqHarness

pytest_plugins = ["taskserve_conformance.plugin", "taskserve_conformance.serve"]

REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def _unique(kind: str) -> str:
    return f"tsc-dramatiq-{kind}-{uuid.uuid4().hex[:12]}"


class TestDramatiqRedisServe(ServeConformance):
    serve_group = "serve-ray-2"  # the Serve classes share three Ray instances (scripts/test.sh)
    adapter = "dramatiq"

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


class TestDramatiqRabbitmqServe(ServeConformance):
    serve_group = "serve-ray-3"  # the Serve classes share three Ray instances (scripts/test.sh)
    adapter = "dramatiq"

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
