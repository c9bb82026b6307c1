"""The Celery adapter runs the whole conformance suite on Redis, on RabbitMQ, and on
the local-testing filesystem broker with its task state in a sqlite file."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from taskserve_celery import CeleryAdapterConfig
from taskserve_celery.testing import CeleryHarness
from taskserve_conformance import AdapterConformance, BrokerHarness

pytest_plugins = ["taskserve_conformance.plugin"]

REDIS_URL = os.environ.get("TASKSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("TASKSERVE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _key_prefix() -> str:
    return f"tsc-celery-{uuid.uuid4().hex[:12]}"


class TestCeleryRedisConformance(AdapterConformance):
    adapter = "celery"
    chaos_adapter_config = {"broker_url": "{redis_url}"}

    @pytest.fixture
    def adapter_config(self) -> CeleryAdapterConfig:
        return CeleryAdapterConfig(broker_url=REDIS_URL, key_prefix=_key_prefix())

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return CeleryHarness()


class TestCeleryRabbitMQConformance(AdapterConformance):
    adapter = "celery"
    chaos_adapter_config = {"broker_url": "{amqp_url}", "backend_url": "{redis_url}"}

    @pytest.fixture
    def adapter_config(self) -> CeleryAdapterConfig:
        return CeleryAdapterConfig(
            broker_url=AMQP_URL, backend_url=REDIS_URL, key_prefix=_key_prefix()
        )

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return CeleryHarness()


class TestCeleryFilesystemConformance(AdapterConformance):
    """kombu's filesystem broker (messages are files, named in priority order) with a
    ``file://`` state store."""

    adapter = "celery"

    @pytest.fixture
    def adapter_config(self, tmp_path: Path) -> CeleryAdapterConfig:
        queue = str(tmp_path / "queue")
        return CeleryAdapterConfig(
            broker_url="filesystem://",
            backend_url=f"file://{tmp_path / 'results'}",
            broker_transport_options={
                "data_folder_in": queue,
                "data_folder_out": queue,
                "control_folder": str(tmp_path / "control"),
            },
        )

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return CeleryHarness()
