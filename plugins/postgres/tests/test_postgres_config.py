"""PostgresAdapterConfig: the DSN, the schema and pool settings, selection, secrets."""

from __future__ import annotations

import pytest

from taskserve import Capability, ConfigError, TaskProcessorConfig, resolve_adapter
from taskserve_postgres import PostgresAdapter, PostgresAdapterConfig
from taskserve_postgres.engine import PostgresDialect

DSN = "postgresql://app:s3cret@db.example:5432/jobs"


def test_defaults() -> None:
    config = PostgresAdapterConfig(dsn=DSN)
    assert (config.schema_name, config.table_prefix) == ("taskserve", "")
    assert (config.pool_min_size, config.pool_max_size) == (1, 10)
    assert config.poll_interval_s == 0.5


def test_schema_is_read_and_written_under_its_own_name() -> None:
    config = PostgresAdapterConfig.model_validate({"dsn": DSN, "schema": "jobs"})
    assert config.schema_name == "jobs"
    assert config.model_dump()["schema"] == "jobs"
    assert PostgresAdapterConfig.model_validate(config.model_dump()) == config


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "dsn"),
        ({"dsn": "mysql://h/db"}, "unsupported scheme 'mysql'"),
        ({"dsn": DSN, "schema": "Jobs-1"}, "schema"),
        ({"dsn": DSN, "schema": "1jobs"}, "schema"),
        ({"dsn": DSN, "table_prefix": "a b"}, "table_prefix"),
        ({"dsn": DSN, "pool_min_size": 0}, "pool_min_size"),
        ({"dsn": DSN, "pool_min_size": 4, "pool_max_size": 2}, "pool_max_size"),
        ({"dsn": DSN, "connect_timeout_s": 0}, "connect_timeout_s"),
        ({"dsn": DSN, "poll_interval_s": 0}, "poll_interval_s"),
        ({"dsn": DSN, "unknown": 1}, "unknown"),
    ],
)
def test_invalid_settings_name_their_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PostgresAdapterConfig.model_validate(fields)


def test_passwords_stay_out_of_reprs_and_errors() -> None:
    config = PostgresAdapterConfig(dsn=DSN)
    assert "s3cret" not in repr(config)
    assert "s3cret" not in PostgresDialect(config).describe()
    with pytest.raises(ValueError) as error:
        PostgresAdapterConfig(dsn="mysql://app:s3cret@h/db")
    assert "s3cret" not in str(error.value)


def test_unreachable_database_detail_hides_the_password() -> None:
    config = TaskProcessorConfig(
        queue_name="q",
        adapter_config=PostgresAdapterConfig(
            dsn="postgresql://app:s3cret@127.0.0.1:1/jobs", connect_timeout_s=0.5
        ),
    )
    report = PostgresAdapter(config).health_check_sync()
    assert not report.healthy and "unreachable" in report.detail
    assert "s3cret" not in report.detail


def test_typed_config_and_alias_select_the_adapter() -> None:
    config = TaskProcessorConfig(queue_name="q", adapter_config=PostgresAdapterConfig(dsn=DSN))
    assert config.adapter == "postgres"
    assert resolve_adapter("postgres") is PostgresAdapter
    with pytest.raises(ConfigError, match=r"adapter_config\.pool_max_size"):
        TaskProcessorConfig.from_dict(
            {
                "queue_name": "q",
                "adapter": "postgres",
                "adapter_config": {"dsn": DSN, "pool_max_size": 0},
            }
        )


def test_every_capability_is_declared() -> None:
    assert PostgresAdapter.capabilities == frozenset(Capability)


def test_channels_are_short_and_differ_per_schema_prefix_and_queue() -> None:
    names = {
        PostgresDialect(PostgresAdapterConfig(dsn=DSN, schema=schema, table_prefix=prefix)).channel(
            queue
        )
        for schema in ("a", "b")
        for prefix in ("", "p_")
        for queue in ("q", "r" * 200)
    }
    assert len(names) == 8
    assert all(len(name) <= 63 for name in names)
