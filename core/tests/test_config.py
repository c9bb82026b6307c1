"""TaskProcessorConfig: defaults, field-naming errors, adapter configs, YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from taskserve import AdapterConfig, ConfigError, SecretUrl, TaskProcessorConfig, redact_url
from taskserve.adapters.sqlite import SqliteAdapterConfig


def test_defaults() -> None:
    config = TaskProcessorConfig(queue_name="q")
    assert config.adapter == "sqlite"
    assert isinstance(config.adapter_config, SqliteAdapterConfig)
    assert config.max_retries == 3
    assert config.max_attempts == 4
    assert config.result_ttl_s == 24 * 3600
    assert config.lease_s < 60


def test_typed_adapter_config_selects_its_adapter() -> None:
    config = TaskProcessorConfig(queue_name="q", adapter_config=SqliteAdapterConfig(path="x.db"))
    assert config.adapter == "sqlite"


def test_dict_adapter_config_is_validated_by_the_adapter_model() -> None:
    config = TaskProcessorConfig(queue_name="q", adapter="sqlite", adapter_config={"path": "a.db"})
    assert isinstance(config.adapter_config, SqliteAdapterConfig)
    assert config.adapter_config.path == "a.db"


def test_unknown_adapter_config_key_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError) as info:
        TaskProcessorConfig.from_dict({"queue_name": "q", "adapter_config": {"pth": "a.db"}})
    assert "adapter_config.pth: unknown field; did you mean 'path'?" in str(info.value)


def test_unknown_top_level_key_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="max_retry"):
        TaskProcessorConfig.from_dict({"queue_name": "q", "max_retry": 2})


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_retries", -1), ("lease_s", 0), ("result_ttl_s", -5), ("queue_name", "bad\tname")],
)
def test_bad_values_name_the_field(field: str, value: object) -> None:
    data = {"queue_name": "q", field: value}
    with pytest.raises(ConfigError) as info:
        TaskProcessorConfig.from_dict(data)
    assert str(info.value).startswith("Invalid TaskProcessorConfig: ")
    assert field in str(info.value)


def test_missing_queue_name_is_named() -> None:
    with pytest.raises(ConfigError, match="queue_name: Field required"):
        TaskProcessorConfig()  # type: ignore[call-arg]


def test_the_constructor_raises_the_same_error_as_from_dict() -> None:
    fields = {"queue_name": "q", "max_retries": -1, "lease_ss": 3}
    with pytest.raises(ConfigError) as built:
        TaskProcessorConfig(**fields)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as loaded:
        TaskProcessorConfig.from_dict(fields)
    assert str(built.value) == str(loaded.value)
    assert "lease_ss: unknown field; did you mean 'lease_s'?" in str(built.value)
    assert not isinstance(built.value, ValidationError)


def test_unknown_adapter_alias_is_reported_on_the_adapter_field() -> None:
    with pytest.raises(ConfigError) as info:
        TaskProcessorConfig.from_dict({"queue_name": "q", "adapter": "sqlit"})
    assert "adapter: No adapter 'sqlit'. Did you mean 'sqlite'?" in str(info.value)


def test_mismatched_typed_config_is_refused() -> None:
    class OtherConfig(AdapterConfig):
        pass

    with pytest.raises(ConfigError, match="a OtherConfig was given but adapter 'sqlite' expects"):
        TaskProcessorConfig.from_dict(
            {"queue_name": "q", "adapter": "sqlite", "adapter_config": OtherConfig()}
        )


def test_yaml_text_and_file(tmp_path: Path) -> None:
    text = "queue_name: docs\nmax_retries: 1\nadapter_config:\n  path: docs.db\n"
    assert TaskProcessorConfig.from_yaml(text).max_retries == 1
    file = tmp_path / "config.yaml"
    file.write_text("processor:\n  queue_name: docs\n")
    assert TaskProcessorConfig.from_yaml(file, key="processor").queue_name == "docs"


def test_yaml_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        TaskProcessorConfig.from_yaml("- a\n- b\n")
    with pytest.raises(ConfigError, match="no section 'missing'"):
        TaskProcessorConfig.from_yaml("queue_name: q\n", key="missing")


def test_one_loader_reads_every_form(tmp_path: Path) -> None:
    serve_config = tmp_path / "serve.yaml"
    serve_config.write_text(
        "applications:\n  - name: app\n    args:\n      tasks:\n        queue_name: nested\n"
    )
    (tmp_path / "config.json").write_text('{"queue_name": "from-json"}')
    assert (
        TaskProcessorConfig.load(serve_config, "applications.0.args.tasks").queue_name == "nested"
    )
    assert TaskProcessorConfig.load(str(tmp_path / "config.json")).queue_name == "from-json"
    assert TaskProcessorConfig.load('{"queue_name": "text"}').queue_name == "text"
    assert TaskProcessorConfig.load({"queue_name": "mapping"}).queue_name == "mapping"
    with pytest.raises(ConfigError, match=r"no section 'applications\.1'"):
        TaskProcessorConfig.load(serve_config, "applications.1.args")
    with pytest.raises(ConfigError, match="got NoneType"):
        TaskProcessorConfig.from_dict(None)  # type: ignore[arg-type]


def test_validating_a_config_imports_no_engine() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from taskserve import TaskProcessorConfig;"
        "TaskProcessorConfig(queue_name='q', adapter='celery', adapter_config={'broker_url':"
        " 'redis://127.0.0.1:6379/0'});"
        "print(sorted(m for m in ('celery', 'kombu', 'taskserve_celery.adapter') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_secrets_never_appear_in_repr_or_errors() -> None:
    url = SecretUrl("redis://:hunter2@broker:6379/0")
    assert "hunter2" not in repr(url)
    assert url.get_secret_value() == "redis://:hunter2@broker:6379/0"
    assert "hunter2" not in str(url) and "hunter2" not in f"{url}"
    assert redact_url("amqp://user:pw@host//") == "amqp://user:***@host//"
    assert redact_url("redis://host:6379") == "redis://host:6379"
    with pytest.raises(ConfigError) as info:
        TaskProcessorConfig.from_dict(
            {"queue_name": "q", "adapter_config": {"path": 5, "x": "redis://:hunter2@h"}}
        )
    assert "hunter2" not in str(info.value)
