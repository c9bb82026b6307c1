"""Adapter lookup: aliases, dotted paths, classes, and the errors for the rest."""

from __future__ import annotations

import pytest

from taskserve import AdapterNotFound, TaskProcessorAdapter, installed_adapters, resolve_adapter
from taskserve.adapters.sqlite import SqliteAdapter
from taskserve.selection import FIRST_PARTY_DISTRIBUTIONS, _unknown_alias


def test_alias_resolves_through_entry_point() -> None:
    assert resolve_adapter("sqlite") is SqliteAdapter
    assert "sqlite" in installed_adapters()


@pytest.mark.parametrize(
    "path", ["taskserve.adapters.sqlite:SqliteAdapter", "taskserve.adapters.sqlite.SqliteAdapter"]
)
def test_dotted_paths_resolve(path: str) -> None:
    assert resolve_adapter(path) is SqliteAdapter


def test_class_resolves_to_itself() -> None:
    assert resolve_adapter(SqliteAdapter) is SqliteAdapter


def test_unknown_alias_suggests_close_match_and_lists_installed() -> None:
    with pytest.raises(AdapterNotFound) as info:
        resolve_adapter("sqlit")
    message = str(info.value)
    assert "No adapter 'sqlit'" in message
    assert "Did you mean 'sqlite'?" in message
    assert "Installed:" in message and "sqlite" in message


def test_unknown_alias_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(AdapterNotFound) as info:
        resolve_adapter("zzzzzz")
    assert "Did you mean" not in str(info.value)


def test_missing_first_party_alias_names_distribution_to_install() -> None:
    error = _unknown_alias("celery", {})
    assert "pip install taskserve-celery" in str(error)
    assert set(FIRST_PARTY_DISTRIBUTIONS) == {"celery", "dramatiq", "postgres", "rq"}


def test_misspelled_first_party_alias_is_suggested() -> None:
    error = _unknown_alias("celry", {})
    assert "Did you mean 'celery'?" in str(error)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("no_such_module_xyz:Adapter", "cannot import 'no_such_module_xyz'"),
        ("taskserve.adapters.sqlite:Nope", "has no 'Nope'"),
        (
            "taskserve.config:TaskProcessorConfig",
            "not a subclass of taskserve.TaskProcessorAdapter",
        ),
    ],
)
def test_bad_dotted_paths_say_what_is_wrong(path: str, fragment: str) -> None:
    with pytest.raises(AdapterNotFound, match=fragment):
        resolve_adapter(path)


def test_non_adapter_class_is_refused() -> None:
    with pytest.raises(AdapterNotFound, match="not a subclass"):
        resolve_adapter(dict)


def test_capabilities_readable_without_a_broker() -> None:
    assert isinstance(SqliteAdapter.capabilities, frozenset)
    assert SqliteAdapter.supports("cancel_running")
    assert not TaskProcessorAdapter.supports("cancel_running")
