"""The Celery adapter passes the Serve group of the suite on Redis and on RabbitMQ."""

from __future__ import annotations

import os
import uuid

import pytest

from taskserve_celery import CeleryAdapterConfig
from taskserve_celery.testing import CeleryHarness
from taskserve_conformance import BrokerHarness
from taskserve_conformance.serve import ServeConformance

pytest_plugins = ["taskserve_conformance.plugin", "taskserve_conformance.serve"]

REDIS_URL = os.environ.get("TASKSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("TASKSERVE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _key_prefix() -> str:
    return f"tsc-celery-serve-{uuid.uuid4().hex[:12]}"


class TestCeleryRedisServe(ServeConformance):
    serve_group = "serve-ray-2"  # the Serve classes share three Ray instances (scripts/test.sh)
    adapter = "celery"

    @pytest.fixture
    def adapter_config(self) -> CeleryAdapterConfig:
        return CeleryAdapterConfig(broker_url=REDIS_URL, key_prefix=_key_prefix())

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return CeleryHarness()


class TestCeleryRabbitMQServe(ServeConformance):
    serve_group = "serve-ray-2"  # the Serve classes share three Ray instances (scripts/test.sh)
    adapter = "celery"

    @pytest.fixture
    def adapter_config(self) -> CeleryAdapterConfig:
        return CeleryAdapterConfig(
            broker_url=AMQP_URL, backend_url=REDIS_URL, key_prefix=_key_prefix()
        )

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return CeleryHarness()
