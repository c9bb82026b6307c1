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
        ({"broker_url": "redis://h", "broker_options": {"frobnicate": 3}}, "not an option"),
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


@pytest.mark.parametrize(("core", "expected"), [(None, 2.0), (2.0, 2.0)])
def test_time_limit_is_the_core_time_limit(core: float | None, expected: float) -> None:
    config = TaskProcessorConfig(
        queue_name="jobs",
        adapter_config=DramatiqAdapterConfig(broker_url="redis://127.0.0.1", time_limit_s=2),
        task_time_limit_s=core,
    )
    adapter = DramatiqAdapter(config)
    assert adapter.config.task_time_limit_s == expected
    assert not any(type(m).__name__ == "TimeLimit" for m in adapter.broker.middleware)


def _limits(core: float | None, dramatiq: float | None) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name="jobs",
        adapter_config=DramatiqAdapterConfig(broker_url="redis://127.0.0.1", time_limit_s=dramatiq),
        task_time_limit_s=core,
    )


def _settings(config: TaskProcessorConfig) -> DramatiqAdapterConfig:
    assert isinstance(config.adapter_config, DramatiqAdapterConfig)
    return config.adapter_config


def test_dramatiqs_time_limit_maps_onto_the_core_limit_like_celerys() -> None:
    mapped = _limits(None, 2.0)
    assert mapped.task_time_limit_s is None  # the config as given is left as it is
    assert _settings(mapped).processor_config(mapped).task_time_limit_s == 2.0
    for same in (_limits(2.0, 2.0), _limits(3.0, None), _limits(None, None)):
        assert _settings(same).processor_config(same) is same


def test_two_different_time_limits_are_a_config_error_naming_both() -> None:
    config = _limits(5.0, 2.0)
    with pytest.raises(
        ConfigError,
        match=r"task_time_limit_s \(5.0\) and Dramatiq's time limit, "
        r"adapter_config.time_limit_s, \(2.0\) disagree; give the limit once, as "
        r"task_time_limit_s",
    ):
        _settings(config).processor_config(config)


def test_the_adapter_refuses_two_different_time_limits() -> None:
    config = _limits(0.5, 2.0)
    try:
        adapter = DramatiqAdapter(config)
    except ConfigError as e:
        assert "disagree" in str(e)
        return
    raise AssertionError(f"both limits accepted, {adapter.config.task_time_limit_s} kept")


@pytest.mark.parametrize("limit", [0, -1.0, float("inf"), float("nan"), "soon"])
def test_a_bad_time_limit_is_refused_naming_it(limit: object) -> None:
    with pytest.raises(ConfigError, match=r"adapter_config\.time_limit_s"):
        TaskProcessorConfig.from_dict(
            {
                "queue_name": "q",
                "adapter": "dramatiq",
                "adapter_config": {"broker_url": "redis://h", "time_limit_s": limit},
            }
        )


def test_dramatiqs_message_options_are_refused_at_enqueue_naming_what_to_use() -> None:
    adapter = DramatiqAdapter(_limits(None, None))
    with pytest.raises(ConfigError) as refused:
        adapter.enqueue_task_sync("x", delay=1000, max_retries=2, colour="red")
    text = str(refused.value)
    assert "delay: " in text and "delay_s" in text
    assert "max_retries: " in text and "TaskProcessorConfig" in text
    assert "colour: not an option taskserve-dramatiq takes" in text
