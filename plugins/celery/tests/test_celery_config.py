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
from taskserve_celery import settings as celery_settings
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
        ("app_custom_config", {"broker_transport": "redis"}, "broker_transport"),
        ("app_custom_config", {"broker_heartbeat": 10}, "lease_s"),
    ],
)
def test_settings_the_adapter_manages_cannot_be_overridden(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _processor(broker_url=REDIS, **{field: value})


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("worker_prefetch_multiplier", 4, "never holds more messages than it runs"),
        ("task_serializer", "pickle", "never unpickled"),
        ("worker_enable_remote_control", True, "Flower do not see"),
        ("worker_hijack_root_logger", True, "configure Python logging"),
        ("task_track_started", False, "STARTED is always recorded"),
    ],
)
def test_another_value_of_a_kept_setting_is_refused_saying_why(
    key: str, value: Any, why: str
) -> None:
    with pytest.raises(ConfigError, match=rf"{key}: taskserve-celery keeps {key}=.*{why}"):
        _processor(broker_url=REDIS, app_custom_config={key: value})


@pytest.mark.parametrize(
    "kept",
    [
        {"worker_prefetch_multiplier": 1},
        {"accept_content": ("json",), "result_accept_content": {"application/json"}},
        {"task_track_started": True, "worker_send_task_events": False, "enable_utc": True},
    ],
)
def test_a_kept_setting_at_the_adapters_value_is_accepted_silently(
    kept: dict[str, Any], fresh_warnings: None
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = _processor(broker_url=REDIS, app_custom_config=kept)
    assert isinstance(config.adapter_config, CeleryAdapterConfig)
    assert config.adapter_config.app_custom_config == kept


# -- no Celery setting is accepted and then silently dropped ----------------------------
def test_every_celery_setting_is_allowed_mapped_kept_or_refused() -> None:
    """Checked against the installed Celery's own list, so that a setting a new
    Celery version adds is classified before it can be silently dropped."""
    from celery.app.defaults import NAMESPACES, flatten

    celerys = {name for name, _ in flatten(NAMESPACES)}
    assert celerys >= celery_settings.CLASSIFIED_APP_SETTINGS  # no misspelt entry
    unclassified = sorted(
        name
        for name in celerys - celery_settings.CLASSIFIED_APP_SETTINGS
        if not any(name.startswith(p) for p, _ in celery_settings.REFUSED_APP_PREFIXES)
    )
    assert not unclassified


def test_settings_that_cannot_take_effect_are_refused_naming_each_why_and_what_instead() -> None:
    with pytest.raises(ConfigError) as info:
        _processor(
            broker_url=REDIS,
            app_custom_config={
                "task_time_limit": 1,
                "task_default_rate_limit": "1/m",
                "worker_send_task_events": True,
            },
        )
    message = str(info.value)
    assert "task_default_rate_limit: Celery's rate limits" in message
    assert "consumer_concurrency" in message
    assert (
        "worker_send_task_events: taskserve-celery keeps worker_send_task_events=False" in message
    )
    for replacement in ("Flower", "celery inspect", "taskserve show", "get_metrics_sync"):
        assert replacement in message
    assert "task_time_limit:" not in message  # that one takes effect


@pytest.mark.parametrize("key", sorted(celery_settings.REFUSED_APP_SETTINGS))
def test_each_refused_setting_is_refused_with_its_reason(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _processor(broker_url=REDIS, app_custom_config={key: "any value"})
    assert f"{key}: {celery_settings.REFUSED_APP_SETTINGS[key]}" in str(info.value)


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("result_expires", "result_ttl_s"),
        ("redis_max_connections", "backend_url"),
        ("beat_schedule", "no beat scheduler"),
        ("event_queue_ttl", "Flower"),
        ("control_queue_ttl", "celery inspect"),
        ("security_key", "TLS"),
        ("database_url", "backend_url"),
    ],
)
def test_families_of_celery_settings_are_refused_saying_why(key: str, says: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key}: .*{says}"):
        _processor(broker_url=REDIS, app_custom_config={key: 1})


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("BROKER_POOL_LIMIT", "broker_pool_limit"),
        ("CELERYD_CONCURRENCY", "worker_concurrency"),
        ("CELERY_TASK_SERIALIZER", "task_serializer"),
        ("brokr_pool_limit", "broker_pool_limit"),
    ],
)
def test_a_key_that_is_no_celery_setting_is_refused_with_the_likely_name(
    key: str, meant: str
) -> None:
    with pytest.raises(ConfigError, match=rf"{key}: unknown Celery setting .*'{meant}'"):
        _processor(broker_url=REDIS, app_custom_config={key: 3})
    with pytest.raises(ConfigError, match=r"no_such_setting: .*take effect here are broker_"):
        _processor(broker_url=REDIS, app_custom_config={"no_such_setting": 3})


ALLOWED_VALUES: dict[str, Any] = {
    "broker_channel_error_retry": True,
    "broker_connection_max_retries": 7,
    "broker_connection_retry": False,
    "broker_connection_retry_on_startup": False,
    "broker_connection_timeout": 9.0,
    "broker_failover_strategy": "shuffle",
    "broker_heartbeat_checkrate": 5.0,
    "broker_login_method": "PLAIN",
    "broker_pool_acquire_timeout": 3.0,
    "broker_pool_limit": 3,
    "broker_use_ssl": {"cert_reqs": "required"},
    "task_default_delivery_mode": 1,
    "task_publish_retry": False,
    "task_publish_retry_policy": {"max_retries": 1},
}


def test_every_allowed_setting_reaches_the_celery_app() -> None:
    assert set(ALLOWED_VALUES) == set(celery_settings.ALLOWED_APP_SETTINGS)
    config = _processor(broker_url=AMQP, backend_url=REDIS, app_custom_config=ALLOWED_VALUES)
    assert isinstance(config.adapter_config, CeleryAdapterConfig)
    app = build_app(config, config.adapter_config)
    for key, value in ALLOWED_VALUES.items():
        assert app.conf[key] == value, key


def test_a_consumer_retries_connecting_at_start_unless_told_not_to() -> None:
    config = _processor(broker_url=REDIS)
    assert isinstance(config.adapter_config, CeleryAdapterConfig)
    assert build_app(config, config.adapter_config).conf.broker_connection_retry_on_startup


# -- Celery's time limits --------------------------------------------------------------
@pytest.mark.parametrize(
    "adapter_config",
    [{"app_custom_config": {"task_time_limit": 2}}, {"task_custom_config": {"time_limit": 2}}],
)
def test_celerys_time_limit_is_the_core_time_limit(adapter_config: dict[str, Any]) -> None:
    config = _processor(broker_url=REDIS, **adapter_config)
    assert config.task_time_limit_s is None  # the config as given is left as it is
    adapter = CeleryAdapter(config)
    assert adapter.config.task_time_limit_s == 2.0
    assert isinstance(config.adapter_config, CeleryAdapterConfig)
    app = build_app(adapter.config, config.adapter_config)
    assert app.conf.task_time_limit is None  # taskserve's runner applies it, not Celery


def test_the_same_time_limit_given_twice_is_accepted_and_different_ones_refused() -> None:
    same = TaskProcessorConfig(
        queue_name="q",
        task_time_limit_s=2,
        adapter_config=CeleryAdapterConfig(
            broker_url=REDIS,
            app_custom_config={"task_time_limit": 2},
            task_custom_config={"time_limit": 2.0},
        ),
    )
    assert CeleryAdapter(same).config.task_time_limit_s == 2
    with pytest.raises(ConfigError, match="both the time limit of every task"):
        _processor(
            broker_url=REDIS,
            app_custom_config={"task_time_limit": 2},
            task_custom_config={"time_limit": 3},
        )
    other = same.model_copy(update={"task_time_limit_s": 5.0})
    with pytest.raises(ConfigError, match=r"task_time_limit_s \(5.0\) and Celery's time limit"):
        CeleryAdapter(other)


@pytest.mark.parametrize("limit", [0, -1, True, "5", float("inf")])
def test_a_bad_celery_time_limit_is_refused_naming_it(limit: Any) -> None:
    with pytest.raises(ConfigError, match=r"task_time_limit: .*seconds above 0"):
        _processor(broker_url=REDIS, app_custom_config={"task_time_limit": limit})
    with pytest.raises(ConfigError, match=r"time_limit: .*seconds above 0"):
        _processor(broker_url=REDIS, task_custom_config={"time_limit": limit})


@pytest.mark.parametrize(
    "adapter_config",
    [
        {"app_custom_config": {"task_soft_time_limit": 5}},
        {"task_custom_config": {"soft_time_limit": 5}},
    ],
)
def test_a_soft_time_limit_is_refused_naming_the_one_limit(adapter_config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"soft_time_limit: .*task_time_limit_s"):
        _processor(broker_url=REDIS, **adapter_config)


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
    assert [broker_priority(p, BrokerKind.FILESYSTEM) for p in range(10)] == list(range(10))


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
