"""The conformance plugin's own behaviour: capability skips, declared known
failures, configuration errors and the shape of the test groups."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import taskserve.adapters.sqlite  # noqa: F401
import taskserve_conformance.groups
from taskserve import Capability
from taskserve_conformance.gating import REQUIRES_ATTRIBUTE, requires
from taskserve_conformance.suite import TEST_GROUPS, AdapterConformance

pytest_plugins = ["pytester"]
# The sqlite adapter is imported above, once: pytester's in-process runs forget
# the modules first imported inside a run, and a later run would meet a second
# copy of its config class next to the registry's first.

HEADER = """
import pytest
from taskserve import Capability, TaskNotFound, TaskResult, TaskState
from taskserve.adapters.sqlite import SqliteAdapter
from taskserve_conformance import AdapterConformance, SqliteHarness

pytest_plugins = ["taskserve_conformance.plugin"]


class WithoutCancelRunning(SqliteAdapter):
    alias = "limited"
    capabilities = frozenset(Capability) - {Capability.CANCEL_RUNNING}


class UnknownIdsReadPending(SqliteAdapter):
    alias = "pending-for-unknown"

    def _get_status(self, task_id):
        try:
            return super()._get_status(task_id)
        except TaskNotFound:
            return TaskResult(id=task_id, status=TaskState.PENDING)


class Wiring(AdapterConformance):
    @pytest.fixture
    def adapter_config(self, tmp_path):
        return {"path": str(tmp_path / "queue.db")}

    @pytest.fixture
    def harness(self):
        return SqliteHarness()
"""


def test_undeclared_capability_skips_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HEADER
        + """
class TestLimited(Wiring):
    adapter = WithoutCancelRunning
"""
    )
    result = pytester.runpytest("-rs", "-k", "cancel_interrupts or cancel_twice")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*adapter 'limited' does not declare capability 'cancel_running'*"]
    )


def test_known_failure_is_a_strict_xfail(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HEADER
        + """
class TestKnownGap(Wiring):
    adapter = UnknownIdsReadPending
    known_failures = {
        "test_unknown_id_raises_task_not_found": "unknown ids read PENDING",
        "test_cancel_twice_stays_cancelled": "declared, but it passes",
    }
"""
    )
    result = pytester.runpytest("-rxX", "-k", "unknown_id_raises or cancel_twice")
    result.assert_outcomes(xfailed=2, failed=1)
    result.stdout.fnmatch_lines(["*XPASS(strict)*known failure: declared, but it passes*"])
    result.stdout.fnmatch_lines(
        ["*XFAIL*test_unknown_id_raises_task_not_found*known failure: unknown ids read PENDING*"]
    )


def test_known_failure_naming_no_test_is_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HEADER
        + """
class TestTypo(Wiring):
    adapter = "sqlite"
    known_failures = {"test_no_such_test": "typo"}
"""
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*known_failures names 'test_no_such_test'*"])


def test_known_failure_of_one_parametrized_case(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HEADER
        + """
class TestOneCase(Wiring):
    adapter = "sqlite"
    known_failures = {"test_unserializable_argument_fails_at_enqueue[bytes]": "declared"}
"""
    )
    result = pytester.runpytest("-rX", "-k", "unserializable_argument_fails_at_enqueue")
    result.assert_outcomes(passed=8, failed=1)
    result.stdout.fnmatch_lines(["*XPASS(strict)*known failure: declared*"])


def test_known_failure_typo_gets_a_close_match(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HEADER
        + """
class TestTypos(Wiring):
    adapter = "sqlite"
    known_failures = {"test_unserializable_argument_fails_at_enqueue[byte]": "typo"}
"""
    )
    result = pytester.runpytest("-k", "unserializable")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        "not a collected test case. Did you mean "
        "'test_unserializable_argument_fails_at_enqueue[bytes]'?" in result.stderr.str()
    )
    pytester.makepyfile(
        HEADER
        + """
class TestTypos(Wiring):
    adapter = "sqlite"
    known_failures = {"test_unknown_id_raises_task_not_fund": "typo"}
"""
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*Did you mean 'test_unknown_id_raises_task_not_found'?*"])


def test_missing_harness_says_what_to_provide(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
from taskserve_conformance import AdapterConformance

pytest_plugins = ["taskserve_conformance.plugin"]


class TestNoHarness(AdapterConformance):
    adapter = "sqlite"
"""
    )
    result = pytester.runpytest("-k", "test_enqueued_ids_are_unique")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*need a `harness` fixture*"])


def test_requires_takes_capabilities_only() -> None:
    with pytest.raises(TypeError, match="Capability"):
        requires("cancel_running")  # type: ignore[arg-type]


def test_groups_are_mixins_with_distinct_test_names() -> None:
    seen: dict[str, str] = {}
    for group in TEST_GROUPS:
        assert not group.__name__.startswith("Test"), group
        assert issubclass(AdapterConformance, group)
        for name in vars(group):
            if name.startswith("test"):
                assert name not in seen, f"{name} is in {seen.get(name)} and {group.__name__}"
                seen[name] = group.__name__


def test_every_group_module_states_its_promise_and_section() -> None:
    modules = {
        info.name
        for info in pkgutil.iter_modules(taskserve_conformance.groups.__path__)
        if not info.name.startswith("_")
    }
    assert modules == {group.__module__.rsplit(".", 1)[1] for group in TEST_GROUPS}
    for name in modules:
        module = importlib.import_module(f"taskserve_conformance.groups.{name}")
        assert module.__doc__ and "SPEC §" in module.__doc__, name


def test_required_capabilities_are_capabilities() -> None:
    for group in TEST_GROUPS:
        for name, function in vars(group).items():
            for capability in getattr(function, REQUIRES_ATTRIBUTE, ()):
                assert isinstance(capability, Capability), (group.__name__, name)
