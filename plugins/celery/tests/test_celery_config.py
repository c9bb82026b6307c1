"""CeleryAdapterConfig: Ray's fields, strict keys, the state store URL, secrets."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from taskserve import (
    Capability,
    ConfigError,
    IgnoredSettingWarning,
    TaskProcessorConfig,
    resolve_adapter,
)
from taskserve import errors as taskserve_errors
from taskserve.serve import TaskAdapter
from taskserve_celery import CeleryAdapter, CeleryAdapterConfig
from taskserve_celery.config import BrokerKind
from taskserve_celery.engine import (
    QUEUE_ARGUMENTS,
    broker_priority,
    build_app,
    task_queue,
    transport_options,
)

REDIS = "redis://:s3cret-pw@127.0.0.1:6379/0"
AMQP = "amqp://guest:s3cret-pw@127.0.0.1:5672//"


@pytest.fixture
def fresh_warnings() -> Iterator[None]:
    """Ignored settings warn once per process; each test here sees its own."""
    saved = set(taskserve_errors._warned)
    taskserve_errors._warned.clear()
    yield
    taskserve_errors._warned.update(saved)


def _processor(**adapter_config: Any) -> TaskProcessorConfig:
    return TaskProcessorConfig.from_dict(
        {"queue_name": "q", "adapter": "celery", "adapter_config": adapter_config}
    )


def test_has_the_fields_of_rays_celery_adapter_config() -> None:
    schema = pytest.importorskip("ray.serve.schema")
    assert set(schema.CeleryAdapterConfig.model_fields) <= set(CeleryAdapterConfig.model_fields)


def test_rays_guide_config_validates_and_selects_the_adapter() -> None:
    config = TaskProcessorConfig(
        queue_name="document_indexing_queue",
        adapter_config=CeleryAdapterConfig(
            broker_url="redis://localhost:6379/0", backend_url="redis://localhost:6379/1"
        ),
        max_retries=3,
        failed_task_queue_name="doc_failed",
    )
    assert config.adapter == "celery"
    assert resolve_adapter(config.adapter) is CeleryAdapter


def test_capabilities_are_readable_without_a_broker() -> None:
    assert CeleryAdapter.capabilities == frozenset(Capability)


def test_unknown_key_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"adapter_config\.brokr_url"):
        _processor(broker_url=REDIS, brokr_url=REDIS)


def test_backend_defaults_to_a_redis_broker() -> None:
    settings = CeleryAdapterConfig(broker_url=REDIS)
    assert settings.state_url == REDIS


def test_rabbitmq_needs_a_redis_backend() -> None:
    with pytest.raises(ConfigError, match="backend_url is required with a RabbitMQ broker"):
        _processor(broker_url=AMQP)
    settings = CeleryAdapterConfig(broker_url=AMQP, backend_url=REDIS)
    assert settings.state_url == REDIS


@pytest.mark.parametrize(
    "backend", ["rpc://", "cache+memory://", "amqp://localhost//", "db+postgresql://h/db"]
)
def test_backend_without_a_state_store_is_a_clear_error_naming_the_alternatives(
    backend: str,
) -> None:
    with pytest.raises(ConfigError) as info:
        _processor(broker_url=REDIS, backend_url=backend)
    message = str(info.value)
    assert "is not supported" in message
    assert "redis://" in message and "file:///" in message


@pytest.mark.parametrize(
    ("backend", "path"),
    [
        ("file:///var/tmp/results", "/var/tmp/results/taskserve-state.sqlite3"),
        ("db+sqlite:///var/tmp/state.db", "/var/tmp/state.db"),
    ],
)
def test_file_and_sqlite_backends_keep_state_in_a_sqlite_file(backend: str, path: str) -> None:
    settings = CeleryAdapterConfig(broker_url=REDIS, backend_url=backend)
    assert settings.state_path == path


@pytest.mark.parametrize("broker", ["sqs://", "kafka://h"])
def test_other_brokers_are_refused(broker: str) -> None:
    with pytest.raises(ConfigError, match=r"runs on Redis .*, RabbitMQ .* or, for local"):
        _processor(broker_url=broker, backend_url=REDIS)


def test_the_in_process_memory_broker_is_refused_naming_the_filesystem_one() -> None:
    with pytest.raises(ConfigError, match="use 'filesystem://'"):
        _processor(broker_url="memory://", backend_url=REDIS)


def test_the_filesystem_broker_needs_one_shared_message_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'data_folder_in' and 'data_folder_out'"):
        _processor(broker_url="filesystem://", backend_url=REDIS)
    with pytest.raises(ConfigError, match="must be the same directory"):
        _processor(
            broker_url="filesystem://",
            backend_url=REDIS,
            broker_transport_options={
                "data_folder_in": str(tmp_path / "in"),
                "data_folder_out": str(tmp_path / "out"),
            },
        )
    with pytest.raises(ConfigError, match="backend_url is required with a filesystem broker"):
        _processor(
            broker_url="filesystem://",
            broker_transport_options=dict.fromkeys(
                ("data_folder_in", "data_folder_out"), str(tmp_path)
            ),
        )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("app_custom_config", {"worker_pool": "prefork"}, "worker_pool"),
        ("app_custom_config", {"worker_concurrency": 8}, "worker_concurrency"),
        ("app_custom_config", {"task_routes": {}}, "task_routes"),
        ("broker_transport_options", {"visibility_timeout": 3600}, "lease_s"),
        ("task_custom_config", {"autoretry_for": ["Exception"]}, "max_retries"),
        ("task_custom_config", {"rate_limit": "1/s"}, "rate_limit"),
    ],
)
def test_settings_the_adapter_manages_cannot_be_overridden(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _processor(broker_url=REDIS, **{field: value})


@pytest.mark.parametrize(
    ("key", "value"), [("worker_prefetch_multiplier", 4), ("task_serializer", "pickle")]
)
def test_another_value_of_a_kept_setting_is_ignored_with_a_warning(
    key: str, value: Any, fresh_warnings: None
) -> None:
    with pytest.warns(IgnoredSettingWarning, match=key):
        config = _processor(broker_url=REDIS, app_custom_config={key: value})
    assert isinstance(config.adapter_config, CeleryAdapterConfig)
    app = build_app(config, config.adapter_config)
    assert app.conf[key] != value


def test_custom_settings_reach_the_celery_app() -> None:
    config = _processor(
        broker_url=REDIS,
        app_custom_config={"broker_pool_limit": 3},
        broker_transport_options={"socket_timeout": 7},
    )
    assert isinstance(config.adapter_config, CeleryAdapterConfig)
    app = build_app(config, config.adapter_config)
    assert app.conf.broker_pool_limit == 3
    assert app.conf.broker_transport_options["socket_timeout"] == 7
    assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1
    assert app.conf.accept_content == ["json"]


def test_redis_visibility_timeout_is_the_lease_and_unacked_keys_are_per_queue() -> None:
    config = TaskProcessorConfig(
        queue_name="q1", lease_s=7, adapter_config=CeleryAdapterConfig(broker_url=REDIS)
    )
    assert isinstance(config.adapter_config, CeleryAdapterConfig)
    options = transport_options(config, config.adapter_config)
    assert options["visibility_timeout"] == 7
    assert "q1" in options["unacked_key"] and "q1" in options["unacked_index_key"]


def test_redis_keeps_one_list_per_priority_popped_lowest_kombu_priority_first() -> None:
    config = _processor(broker_url=REDIS)
    assert isinstance(config.adapter_config, CeleryAdapterConfig)
    options = transport_options(config, config.adapter_config)
    assert options["priority_steps"] == list(range(10))
    assert options["queue_order_strategy"] == "priority"


def test_priorities_are_published_on_each_brokers_scale() -> None:
    assert [broker_priority(p, BrokerKind.AMQP) for p in range(10)] == list(range(10))
    assert [broker_priority(p, BrokerKind.REDIS) for p in range(10)] == list(range(9, -1, -1))
    assert broker_priority(5, BrokerKind.FILESYSTEM) is None


def test_every_declared_queue_has_rabbitmqs_native_priorities() -> None:
    assert QUEUE_ARGUMENTS == {"x-max-priority": 9}
    assert task_queue("q").queue_arguments == {"x-max-priority": 9}  # type: ignore[attr-defined]
    config = _processor(broker_url=AMQP, backend_url=REDIS)
    assert isinstance(config.adapter_config, CeleryAdapterConfig)
    [declared] = build_app(config, config.adapter_config).conf.task_queues
    assert declared.queue_arguments == {"x-max-priority": 9}


def test_celerys_redis_priority_options_are_accepted_and_others_ignored_with_a_warning(
    fresh_warnings: None,
) -> None:
    celerys = {"priority_steps": list(range(10)), "sep": ":", "queue_order_strategy": "priority"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _processor(broker_url=REDIS, broker_transport_options=celerys)
    with pytest.warns(IgnoredSettingWarning, match="priority_steps"):
        config = _processor(broker_url=REDIS, broker_transport_options={"priority_steps": [0, 5]})
    assert isinstance(config.adapter_config, CeleryAdapterConfig)
    assert transport_options(config, config.adapter_config)["priority_steps"] == list(range(10))


@pytest.mark.parametrize("priority", [0, 9, None])
def test_task_custom_config_priority_is_a_default_priority_from_0_to_9(
    priority: int | None,
) -> None:
    settings = CeleryAdapterConfig(broker_url=REDIS, task_custom_config={"priority": priority})
    assert settings.task_custom_config == {"priority": priority}


@pytest.mark.parametrize("priority", [10, -1, True, "5", 2.5])
def test_a_bad_task_custom_config_priority_is_refused_naming_it(priority: Any) -> None:
    with pytest.raises(ConfigError, match=r"task_custom_config\.priority .*priority must be"):
        _processor(broker_url=REDIS, task_custom_config={"priority": priority})


def test_passwords_never_show() -> None:
    settings = CeleryAdapterConfig(broker_url=AMQP, backend_url=REDIS)
    assert "s3cret-pw" not in repr(settings)
    adapter = CeleryAdapter(TaskProcessorConfig(queue_name="q", adapter_config=settings))
    assert "s3cret-pw" not in repr(adapter)
    with pytest.raises(ValidationError) as info:
        CeleryAdapterConfig(broker_url=AMQP, backend_url="rpc://user:s3cret-pw@host")
    assert "s3cret-pw" not in str(info.value)


def test_adapter_config_alone_gives_the_templates_routing_producer() -> None:
    settings = CeleryAdapterConfig(broker_url=REDIS)
    router = CeleryAdapter(settings)
    assert type(router) is CeleryAdapter and router.routing
    assert isinstance(TaskAdapter(settings), CeleryAdapter)
    bound = CeleryAdapter(settings, "pdf_processing_queue")
    assert type(bound) is CeleryAdapter and not bound.routing
    assert bound.config.queue_name == "pdf_processing_queue"
