"""No Dramatiq option is accepted and then silently dropped: each one the
adapter config can name takes effect, maps onto the contract, or is refused
with a ConfigError naming it, why, and what to use instead. The lists are
checked against the installed Dramatiq, redis-py and pika."""

from __future__ import annotations

import inspect
import subprocess
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from taskserve import ConfigError, IgnoredSettingWarning, TaskProcessorConfig
from taskserve import errors as taskserve_errors
from taskserve_dramatiq import DramatiqAdapterConfig
from taskserve_dramatiq import settings as dramatiq_settings
from taskserve_dramatiq.engine import TaskRabbitmqBroker, TaskRedisBroker, build_broker

REDIS = "redis://127.0.0.1:6379/0"
AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"


def _processor(**adapter_config: Any) -> TaskProcessorConfig:
    return TaskProcessorConfig.from_dict(
        {"queue_name": "q", "adapter": "dramatiq", "adapter_config": adapter_config}
    )


def _on(kind: str, **adapter_config: Any) -> TaskProcessorConfig:
    urls = {"broker_url": REDIS} if kind == "redis" else {"broker_url": AMQP, "state_url": REDIS}
    return _processor(**{**urls, **adapter_config})


def _settings(config: TaskProcessorConfig) -> DramatiqAdapterConfig:
    assert isinstance(config.adapter_config, DramatiqAdapterConfig)
    return config.adapter_config


def _refusal(kind: str, **adapter_config: Any) -> str:
    with pytest.raises(ConfigError) as info:
        _on(kind, **adapter_config)
    return str(info.value)


@pytest.fixture
def fresh_warnings() -> Iterator[None]:
    """Ignored settings warn once per process; each test here sees its own."""
    saved = set(taskserve_errors._warned)
    taskserve_errors._warned.clear()
    yield
    taskserve_errors._warned.update(saved)


# -- Dramatiq's own option names -------------------------------------------------------
@pytest.mark.parametrize("key", sorted(dramatiq_settings.DRAMATIQ_OPTIONS))
def test_each_dramatiq_option_is_refused_with_its_reason_in_the_config(key: str) -> None:
    message = _refusal("redis", **{key: 1})
    assert f"{key}: {dramatiq_settings.DRAMATIQ_OPTIONS[key]}" in message
    assert "not taken by taskserve-dramatiq" in message


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
@pytest.mark.parametrize("key", sorted(dramatiq_settings.DRAMATIQ_OPTIONS))
def test_each_dramatiq_option_is_refused_with_its_reason_in_broker_options(
    kind: str, key: str
) -> None:
    connection = (
        dramatiq_settings.REDIS_CONNECTION_PARAMETERS
        if kind == "redis"
        else dramatiq_settings.PIKA_CONNECTION_PARAMETERS
    )
    assert key not in connection  # else refused as a connection parameter
    message = _refusal(kind, broker_options={key: 1})
    assert (
        f"adapter_config.broker_options: these options cannot take effect on Dramatiq's {kind} "
        "broker: " in message
    )
    assert f"{key}: not a broker option: {dramatiq_settings.DRAMATIQ_OPTIONS[key]}" in message


@pytest.mark.parametrize(
    ("key", "instead"),
    [
        ("max_retries", "TaskProcessorConfig.max_retries"),
        ("min_backoff", "TaskProcessorConfig.retry_backoff_s"),
        ("max_backoff", "retry_backoff_max_s"),
        ("retry_when", "NonRetryableError"),
        ("throws", "non_retryable"),
        ("on_retry_exhausted", "failed_task_queue_name"),
        ("time_limit", "in milliseconds: set time_limit_s"),
        ("max_age", "cancel_task_sync"),
        ("notify_shutdown", "stop_consumer"),
        ("on_success", "taskserve_task_succeeded"),
        ("on_failure", "taskserve_task_failed"),
        ("pipe_target", "enqueue the next task"),
        ("store_results", "get_task_status_sync"),
        ("result_ttl", "TaskProcessorConfig.result_ttl_s"),
        ("priority", "enqueue_task_sync(..., priority=p)"),
        ("broker_priority", "enqueue_task_sync(..., priority=p)"),
        ("delay", "delay_s=seconds) or eta="),
        ("queue_name", "TaskProcessorConfig.queue_name"),
        ("actor_name", "@task_handler(name=...)"),
        ("worker_threads", "TaskProcessorConfig.consumer_concurrency"),
        ("processes", "max_ongoing_requests"),
        ("worker_timeout", "set worker_timeout_s"),
        ("queue_prefetch", "never holds more tasks than it runs"),
        ("delay_queue_prefetch", "set delay_prefetch"),
        ("worker_shutdown_timeout", "graceful_shutdown_timeout_s"),
        ("log_file", "configure Python logging"),
    ],
)
def test_a_refused_dramatiq_option_names_what_takes_its_place(key: str, instead: str) -> None:
    message = _refusal("redis", **{key: 1})
    assert f"{key}: " in message
    assert instead in message.split(f"{key}: ", 1)[1]


def test_every_refused_option_of_one_config_is_named_at_once() -> None:
    message = _refusal(
        "rabbitmq", max_retries=5, time_limit=60000, result_ttl=1000, worker_threads=8
    )
    for key in ("max_retries", "time_limit", "result_ttl", "worker_threads"):
        assert f"{key}: " in message
    for instead in ("max_retries", "time_limit_s", "result_ttl_s", "consumer_concurrency"):
        assert instead in message


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("namespace", "give it in broker_options"),
        ("dead_message_ttl", "give it in broker_options"),
        ("confirm_delivery", "give it in broker_options"),
        ("max_priority", "give it in broker_options"),
        ("url", "set broker_url"),
        ("middleware", "none of Dramatiq's"),
        ("heartbeat_timeout", "TaskProcessorConfig.lease_s"),
        ("maintenance_chance", "TaskProcessorConfig.lease_s"),
    ],
)
def test_broker_arguments_given_as_fields_are_refused_saying_where_they_go(
    key: str, says: str
) -> None:
    assert says in _refusal("redis", **{key: 1}).split(f"{key}: ", 1)[1]


def test_an_unknown_field_is_still_refused_with_the_likely_name() -> None:
    message = _refusal("redis", worker_timeout_ms=100)
    assert "adapter_config.worker_timeout_ms: unknown field; did you mean 'worker_timeout_s'?" in (
        message
    )


# -- broker options ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
@pytest.mark.parametrize("key", sorted(dramatiq_settings.DERIVED_BROKER_OPTIONS))
def test_broker_arguments_the_adapter_sets_are_refused_saying_why(kind: str, key: str) -> None:
    message = _refusal(kind, broker_options={key: "x"})
    assert f"{key}: cannot be set: {dramatiq_settings.DERIVED_BROKER_OPTIONS[key]}" in message


@pytest.mark.parametrize(
    ("kind", "key", "says"),
    [
        ("redis", "max_priority", "a Redis queue always has the ten priority levels"),
        ("redis", "confirm_delivery", "Redis answers every write"),
        ("rabbitmq", "namespace", "RabbitMQ queues are named after"),
        ("rabbitmq", "dead_message_ttl", "dramatiq_dead_message_ttl"),
    ],
)
def test_an_option_of_the_other_broker_is_refused_saying_why(
    kind: str, key: str, says: str
) -> None:
    value = 12 if key != "confirm_delivery" else True
    message = _refusal(kind, broker_options={key: value})
    assert f"{key}: an option of Dramatiq's " in message and says in message


@pytest.mark.parametrize(
    "key", ["socket_timeout", "password", "ssl_ca_certs", "health_check_interval", "retry"]
)
def test_redis_connection_parameters_are_refused_pointing_to_the_url(key: str) -> None:
    message = _refusal("redis", broker_options={key: 5})
    assert f"{key}: a redis-py connection parameter" in message
    assert "redis://host:6379/0?socket_timeout=5" in message


@pytest.mark.parametrize(
    "key", ["heartbeat", "connection_attempts", "credentials", "host", "ssl_options"]
)
def test_pika_connection_parameters_are_refused_pointing_to_the_url(key: str) -> None:
    message = _refusal("rabbitmq", broker_options={key: 5})
    assert f"{key}: a pika connection parameter" in message
    assert "?connection_attempts=3" in message


def test_an_unknown_broker_option_is_refused_with_the_likely_name() -> None:
    message = _refusal("redis", broker_options={"namspace": "x"})
    assert "namspace: not an option of Dramatiq's redis broker; did you mean 'namespace'?" in (
        message
    )
    assert "the options that take effect are dead_message_ttl, namespace" in message
    message = _refusal("rabbitmq", broker_options={"zzz": 1})
    assert "zzz: not an option of Dramatiq's rabbitmq broker; the options that take effect" in (
        message
    )


@pytest.mark.parametrize(
    ("kind", "options", "says"),
    [
        ("redis", {"dead_message_ttl": 0}, "at least 1 (milliseconds)"),
        ("redis", {"dead_message_ttl": True}, "must be of type int, got bool"),
        ("redis", {"dead_message_ttl": 1.5}, "must be of type int, got float"),
        ("rabbitmq", {"confirm_delivery": 1}, "must be of type bool, got int"),
        ("rabbitmq", {"max_priority": True}, "must be of type int, got bool"),
    ],
)
def test_an_option_that_takes_effect_is_checked(
    kind: str, options: dict[str, Any], says: str
) -> None:
    assert says in _refusal(kind, broker_options=options)


def test_every_bad_broker_option_is_named_at_once() -> None:
    message = _refusal(
        "redis", broker_options={"socket_timeout": 1, "heartbeat_timeout": 1, "max_retries": 1}
    )
    for key in ("socket_timeout", "heartbeat_timeout", "max_retries"):
        assert f"{key}: " in message


# -- what takes effect, on the broker the adapter builds ----------------------------------
def test_redis_options_and_url_parameters_reach_dramatiqs_broker() -> None:
    config = _on(
        "redis",
        broker_url=f"{REDIS}?socket_timeout=7&health_check_interval=3",
        broker_options={"namespace": "ns-x", "dead_message_ttl": 60000},
    )
    broker = build_broker(_settings(config), config)
    assert isinstance(broker, TaskRedisBroker)
    assert (broker.namespace, broker.dead_message_ttl) == ("ns-x", 60000)
    connection = broker.client.connection_pool.connection_kwargs
    assert (connection["socket_timeout"], connection["health_check_interval"]) == (7.0, 3)
    assert connection["socket_connect_timeout"] == 5  # the adapter's default


def test_rabbitmq_options_and_url_parameters_reach_dramatiqs_broker() -> None:
    config = TaskProcessorConfig(
        queue_name="q",
        lease_s=12,
        adapter_config=DramatiqAdapterConfig(
            broker_url=f"{AMQP}?connection_attempts=4&retry_delay=2",
            state_url=REDIS,
            broker_options={"confirm_delivery": False, "max_priority": 20},
        ),
    )
    broker = build_broker(_settings(config), config)
    assert isinstance(broker, TaskRabbitmqBroker)
    assert (broker.confirm_delivery, broker.max_priority) == (False, 20)
    consuming: Any = broker.parameters
    publishing: Any = broker.producer_parameters
    for parameters in (consuming, publishing):
        assert (parameters.connection_attempts, parameters.retry_delay) == (4, 2)
    assert consuming.heartbeat == 12  # one lease, as the URL sets none
    with_heartbeat = _on("rabbitmq", broker_url=f"{AMQP}?heartbeat=30")
    other = build_broker(_settings(with_heartbeat), with_heartbeat)
    assert isinstance(other, TaskRabbitmqBroker)
    consuming = other.parameters
    assert consuming.heartbeat == 30


# -- checked against the installed libraries -------------------------------------------
def _parameters(function: Any) -> set[str]:
    return {
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if name != "self"
        and parameter.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }


def test_every_argument_of_dramatiqs_brokers_takes_effect_or_is_refused() -> None:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.brokers.redis import RedisBroker

    derived = set(dramatiq_settings.DERIVED_BROKER_OPTIONS)
    for kind, broker in (("redis", RedisBroker), ("rabbitmq", RabbitmqBroker)):
        arguments = _parameters(broker.__init__)
        assert arguments <= set(dramatiq_settings.BROKER_OPTIONS[kind]) | derived, kind
        other = {k for k in dramatiq_settings.BROKER_OPTIONS if k != kind}.pop()
        assert set(dramatiq_settings.OTHER_BROKER_OPTIONS[kind]) == set(
            dramatiq_settings.BROKER_OPTIONS[other]
        )


def test_every_connection_parameter_dramatiq_passes_on_is_classified() -> None:
    """What Dramatiq's brokers pass to redis.Redis and pika.ConnectionParameters
    (their ``**kwargs``), so that a parameter a new version adds is classified."""
    import pika
    import redis

    assert _parameters(redis.Redis.__init__) <= dramatiq_settings.REDIS_CONNECTION_PARAMETERS
    assert (
        _parameters(pika.ConnectionParameters.__init__)
        <= dramatiq_settings.PIKA_CONNECTION_PARAMETERS
    )


def test_every_middleware_actor_and_worker_option_of_dramatiq_is_refused() -> None:
    """Actor options and constructor arguments of Dramatiq's middleware, the
    actor decorator's and the worker's arguments, the message options users
    set and the command line's options."""
    from dramatiq import Worker, actor
    from dramatiq.cli import make_argument_parser
    from dramatiq.middleware import (
        AgeLimit,
        Callbacks,
        GroupCallbacks,
        Pipelines,
        Retries,
        ShutdownNotifications,
        TimeLimit,
    )
    from dramatiq.rate_limits.backends import StubBackend
    from dramatiq.results import Results
    from dramatiq.results.backends import StubBackend as StubResults

    refused = set(dramatiq_settings.DRAMATIQ_OPTIONS)
    middleware = [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(),
        Results(backend=StubResults()),  # type: ignore[no-untyped-call]
        GroupCallbacks(StubBackend()),  # type: ignore[no-untyped-call]
    ]
    for instance in middleware:
        assert instance.actor_options <= refused, type(instance).__name__
        assert _parameters(type(instance).__init__) <= refused, type(instance).__name__
    assert _parameters(actor) - {"fn"} <= refused
    assert _parameters(Worker.__init__) <= refused
    # "eta" and "delay" are what send_with_options takes; Dramatiq's other
    # message options are its own bookkeeping (redis_message_id, traceback, ...)
    assert {"delay", "eta", "broker_priority", "retries"} <= refused
    parser = make_argument_parser()  # type: ignore[no-untyped-call]
    command_line = {a.dest for a in parser._actions} - {"help", "version"}
    assert command_line <= refused


def test_validating_a_config_imports_neither_dramatiq_nor_its_clients() -> None:
    code = (
        "import sys; import taskserve_dramatiq.config, taskserve_dramatiq.settings; "
        "from taskserve import TaskProcessorConfig; "
        "TaskProcessorConfig.from_dict({'queue_name': 'q', 'adapter': 'dramatiq', "
        "'adapter_config': {'broker_url': 'redis://h', 'broker_options': {'namespace': 'n'}}}); "
        "print(sorted(m for m in ('dramatiq', 'pika') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- Dramatiq's environment variables ----------------------------------------------------
@pytest.mark.parametrize("name", sorted(dramatiq_settings.IGNORED_ENVIRONMENT))
def test_an_environment_variable_without_effect_is_warned_about(
    name: str, monkeypatch: pytest.MonkeyPatch, fresh_warnings: None
) -> None:
    monkeypatch.setenv(name, "4")
    with pytest.warns(IgnoredSettingWarning, match=rf"the environment variable {name} is ignored"):
        DramatiqAdapterConfig(broker_url=REDIS)


def test_the_delay_prefetch_variable_is_ignored_only_beside_delay_prefetch(
    monkeypatch: pytest.MonkeyPatch, fresh_warnings: None
) -> None:
    monkeypatch.setenv("dramatiq_delay_queue_prefetch", "50")
    monkeypatch.setenv("dramatiq_restart_delay", "100")  # takes effect: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DramatiqAdapterConfig(broker_url=REDIS)
    with pytest.warns(IgnoredSettingWarning, match="delay_prefetch is set") as warned:
        DramatiqAdapterConfig(broker_url=REDIS, delay_prefetch=10)
    assert len(warned) == 1
