"""Reading configurations: nested sections by dotted path, and every problem
reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskserve import ConfigError, TaskProcessorConfig
from taskserve.config import load_config_data

SERVE_CONFIG = """\
proxy_location: EveryNode
applications:
  - name: ingest
    import_path: ingest:app
    args:
      processor:
        queue_name: ingest-queue
  - name: docs
    import_path: docs:app
    args:
      processor:
        queue_name: docs-queue
        max_retries: 1
      "team.v2":
        queue_name: dotted-key
      7:
        queue_name: numbered-key
"""


@pytest.fixture
def serve_file(tmp_path: Path) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(SERVE_CONFIG)
    return path


@pytest.mark.parametrize(
    ("key", "queue"),
    [
        ("applications.0.args.processor", "ingest-queue"),
        ("applications.1.args.processor", "docs-queue"),
        ("applications.docs.args.processor", "docs-queue"),
        ("applications.docs.args.team.v2", "dotted-key"),
        ("applications.1.args.7", "numbered-key"),
    ],
)
def test_from_yaml_reaches_nested_sections(serve_file: Path, key: str, queue: str) -> None:
    assert TaskProcessorConfig.from_yaml(serve_file, key=key).queue_name == queue
    assert TaskProcessorConfig.from_yaml(serve_file.read_text(), key=key).queue_name == queue


def test_the_section_is_validated_with_its_fields(serve_file: Path) -> None:
    config = TaskProcessorConfig.from_yaml(serve_file, key="applications.docs.args.processor")
    assert config.max_retries == 1 and config.adapter == "sqlite"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("services", "no section 'services' (the top level has: proxy_location, applications)"),
        (
            "applications.2",
            "no section 'applications.2' ('applications' is a list of 2 items, numbered "
            "from 0, named ingest, docs)",
        ),
        (
            "applications.web.args",
            "no section 'applications.web' ('applications' is a list of 2 items",
        ),
        (
            "applications.0.args.tasks",
            "no section 'applications.0.args.tasks' ('applications.0.args' has: processor)",
        ),
        (
            "proxy_location.x",
            "no section 'proxy_location.x' ('proxy_location' is a str, not a section)",
        ),
    ],
)
def test_a_missing_section_says_what_is_there(serve_file: Path, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        TaskProcessorConfig.from_yaml(serve_file, key=key)
    assert message in str(info.value)


def test_load_config_data_returns_the_section_unvalidated(serve_file: Path) -> None:
    assert load_config_data(serve_file, "applications.0.args") == {
        "processor": {"queue_name": "ingest-queue"}
    }
    assert load_config_data({"a": [{"b": 1}]}, "a.0.b") == 1


def test_find_problems_lists_every_field_adapter_config_included() -> None:
    problems = TaskProcessorConfig.find_problems(
        {"max_retries": -1, "adapter_config": {"pth": "x.db", "poll_interval_s": 0}}
    )
    assert sorted(problems) == sorted(
        [
            "queue_name: Field required",
            "max_retries: Input should be greater than or equal to 0",
            "adapter_config.pth: unknown field; did you mean 'path'? (adapter 'sqlite')",
            "adapter_config.poll_interval_s: Input should be greater than 0 (adapter 'sqlite')",
        ]
    )


def test_find_problems_names_an_unknown_adapter_beside_other_fields() -> None:
    problems = TaskProcessorConfig.find_problems(
        {"queue_name": "q", "adapter": "sqlit", "lease_s": 0}
    )
    assert problems[0] == "lease_s: Input should be greater than 0"
    assert problems[1].startswith("adapter: No adapter 'sqlit'. Did you mean 'sqlite'?")
    assert len(problems) == 2


def test_find_problems_of_valid_and_whole_config_problems() -> None:
    assert TaskProcessorConfig.find_problems({"queue_name": "q"}) == []
    assert TaskProcessorConfig.find_problems({"queue_name": "q", "adapter_config": 5}) == [
        "adapter_config: expected a mapping or SqliteAdapterConfig, got int"
    ]
    assert TaskProcessorConfig.find_problems(["queue_name"]) == [
        "expected a mapping of fields, got list"
    ]


def test_load_reports_adapter_config_problems_hidden_behind_other_fields() -> None:
    data = {"max_retries": -1, "adapter_config": {"pth": "x.db"}}
    with pytest.raises(ConfigError) as built:
        TaskProcessorConfig.from_dict(data)
    assert "adapter_config" not in str(built.value)  # the model checks it only once fields pass
    with pytest.raises(ConfigError) as loaded:
        TaskProcessorConfig.load(data)
    assert str(loaded.value) == (
        "Invalid TaskProcessorConfig: queue_name: Field required; max_retries: Input should be "
        "greater than or equal to 0; adapter_config.pth: unknown field; did you mean 'path'? "
        "(adapter 'sqlite')"
    )
    assert isinstance(loaded.value.__cause__, ConfigError)


def test_find_problems_never_shows_inputs() -> None:
    problems = TaskProcessorConfig.find_problems(
        {"queue_name": 5, "adapter_config": {"path": 5, "x": "redis://:hunter2@h"}}
    )
    assert problems and not any("hunter2" in p for p in problems)
