"""DramatiqAdapterConfig: URLs, the results store default, broker options, selection."""

from __future__ import annotations

import pytest

from taskserve import Capability, ConfigError, TaskProcessorConfig
from taskserve_dramatiq import DramatiqAdapter, DramatiqAdapterConfig


def test_redis_broker_is_the_default_state_store() -> None:
    config = DramatiqAdapterConfig(broker_url="redis://127.0.0.1:6379/3")
    assert config.state_url == "redis://127.0.0.1:6379/3"
    assert config.kind == "redis"
    assert config.time_limit_s is None


def test_rabbitmq_needs_a_state_url() -> None:
    with pytest.raises(ValueError, match="state_url is required"):
        DramatiqAdapterConfig(broker_url="amqp://guest:guest@127.0.0.1:5672/%2F")
    config = DramatiqAdapterConfig(
        broker_url="amqp://guest:guest@127.0.0.1:5672/%2F", state_url="redis://127.0.0.1"
    )
    assert config.kind == "rabbitmq"


def test_former_field_names_still_work_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning) as warned:
        config = DramatiqAdapterConfig.model_validate(
            {"broker_url": "amqp://h", "results_url": "redis://h", "results_prefix": "p"}
        )
    assert (config.state_url, config.key_prefix) == ("redis://h", "p")
    assert sorted(str(w.message) for w in warned) == [
        "DramatiqAdapterConfig: 'results_prefix' is deprecated, use 'key_prefix'",
        "DramatiqAdapterConfig: 'results_url' is deprecated, use 'state_url'",
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"broker_url": "kafka://host"}, "not a Dramatiq broker URL"),
        (
            {"broker_url": "amqp://h", "state_url": "amqp://h"},
            "state_url '.*' must be a Redis URL",
        ),
        ({"broker_url": "redis://h", "unknown": 1}, "unknown"),
        ({"broker_url": "redis://h", "broker_options": {"prefetch": 3}}, "not an option"),
        ({"broker_url": "redis://h", "broker_options": {"url": "x"}}, "cannot be set"),
        ({"broker_url": "redis://h", "broker_options": {"namespace": 3}}, "must be of type str"),
        (
            {
                "broker_url": "amqp://h",
                "state_url": "redis://h",
                "broker_options": {"max_priority": 5},
            },
            "would merge task priorities",
        ),
        (
            {
                "broker_url": "amqp://h",
                "state_url": "redis://h",
                "broker_options": {"max_priority": 256},
            },
            "from 9 to 255",
        ),
        ({"broker_url": "amqp://h", "state_url": "redis://h", "time_limit_s": 0}, "greater"),
        (
            {"broker_url": "amqp://h", "state_url": "redis://h", "results_url": "redis://h"},
            "former name of 'state_url'",
        ),
    ],
)
def test_invalid_settings_are_rejected(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DramatiqAdapterConfig.model_validate(fields)


def test_passwords_stay_out_of_reprs_and_errors() -> None:
    config = DramatiqAdapterConfig(
        broker_url="amqp://user:s3cret@host:5672/%2F", state_url="redis://:s3cret@host/0"
    )
    assert "s3cret" not in repr(config)
    with pytest.raises(ValueError) as error:
        DramatiqAdapterConfig(broker_url="kafka://user:s3cret@host")
    assert "s3cret" not in str(error.value)


def test_typed_config_selects_the_adapter() -> None:
    config = TaskProcessorConfig(
        queue_name="q", adapter_config=DramatiqAdapterConfig(broker_url="redis://127.0.0.1")
    )
    assert config.adapter == "dramatiq"
    with pytest.raises(ConfigError, match=r"adapter_config\.broker_options"):
        TaskProcessorConfig.from_dict(
            {
                "queue_name": "q",
                "adapter": "dramatiq",
                "adapter_config": {"broker_url": "redis://h", "broker_options": {"x": 1}},
            }
        )


def test_every_capability_is_declared() -> None:
    assert DramatiqAdapter.capabilities == frozenset(Capability)


def test_dramatiq_reserved_queue_suffixes_are_refused() -> None:
    config = TaskProcessorConfig(
        queue_name="jobs.DQ", adapter_config=DramatiqAdapterConfig(broker_url="redis://h")
    )
    with pytest.raises(ConfigError, match="reserves"):
        DramatiqAdapter(config)


@pytest.mark.parametrize(("core", "expected"), [(None, 2.0), (0.5, 0.5)])
def test_time_limit_is_the_core_time_limit(core: float | None, expected: float) -> None:
    config = TaskProcessorConfig(
        queue_name="jobs",
        adapter_config=DramatiqAdapterConfig(broker_url="redis://127.0.0.1", time_limit_s=2),
        task_time_limit_s=core,
    )
    adapter = DramatiqAdapter(config)
    assert adapter.config.task_time_limit_s == expected
    assert not any(type(m).__name__ == "TimeLimit" for m in adapter.broker.middleware)
