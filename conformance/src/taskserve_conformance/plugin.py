"""The pytest plugin of the conformance suite.

Enable it with ``pytest_plugins = ["taskserve_conformance.plugin"]`` in a test
module or the root ``conftest.py``. It provides the fixtures the test groups
use (each can be overridden by the adapter author), applies capability skips
and declared known failures at collection, shows consumer output when a test
fails, and summarizes delivery reports at the end of the run.

Fixtures an adapter author provides on their test class:

``adapter_config``
    The adapter's settings (a mapping or its typed config). Default ``{}``.
``harness``
    A :class:`~taskserve_conformance.harness.BrokerHarness` for the broker.
``config_overrides``
    Timings for a slower broker, e.g. ``{"lease_s": 5}``. Default ``{}``.

Fixtures the suite (and other test groups built on it) use:

``adapter_class``
    The adapter class named by the test class's ``adapter`` attribute.
``make_config`` / ``config``
    A factory of configs with unique queue names / the test's default config.
``make_producer`` / ``producer``
    Producer-side adapters (``instantiate_adapter_from_config``), shut down
    at the end of the test.
``journal``
    The :class:`~taskserve_conformance.journal.Journal` consumers write to.
``consumers``
    A :class:`~taskserve_conformance.consumers.ConsumerPool` that starts real
    consumer processes and reaps them at the end of the test.
``deadlines``
    :class:`~taskserve_conformance.deadlines.Deadlines` of the test's config.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from taskserve import (
    AdapterConfig,
    AdapterNotFound,
    TaskProcessorAdapter,
    TaskProcessorConfig,
    resolve_adapter,
)
from taskserve_conformance.chaos.run import ChaosReport
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import (
    check_known_failures,
    missing_capability_reason,
    required_capabilities,
    unmatched_cases,
)
from taskserve_conformance.harness import BrokerHarness
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.reporting import CHAOS_PROPERTY, DELIVERY_PROPERTY, DeliveryReport

DEFAULT_TEST_TIMEOUT_S = 600.0
"""Per-test timeout applied to suite tests when none is configured."""


_CONSUMERS_KEY = pytest.StashKey[ConsumerPool]()


# -- collection ---------------------------------------------------------------
def _timeout_configured(config: pytest.Config) -> bool:
    try:
        ini = config.getini("timeout")
    except ValueError:  # pytest-timeout not loaded
        return True
    return bool(config.getoption("timeout", None) or ini or os.environ.get("PYTEST_TIMEOUT"))


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker the Serve group uses to keep its tests together under
    pytest-xdist (harmless without it)."""
    config.addinivalue_line(
        "markers", "xdist_group(name): tests run in the same pytest-xdist worker"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests whose capability is not declared; mark declared known failures
    as strict xfails; give suite tests a timeout if none is configured; let
    ``-k`` select a test group by its class name."""
    adapters: dict[type, type[TaskProcessorAdapter]] = {}
    collected: dict[type, list[str]] = {}
    add_timeout = not _timeout_configured(config)
    for item in items:
        test_class = getattr(item, "cls", None)
        if test_class is None or getattr(test_class, "adapter", None) is None:
            continue
        known_failures: Mapping[str, str] = getattr(test_class, "known_failures", {}) or {}
        if test_class not in adapters:
            try:
                adapters[test_class] = resolve_adapter(test_class.adapter)
                check_known_failures(test_class, known_failures)
            except (AdapterNotFound, ValueError) as e:
                raise pytest.UsageError(f"{test_class.__qualname__}: {e}") from None
        needed = required_capabilities(getattr(item, "function", None))
        if needed:
            reason = missing_capability_reason(adapters[test_class], needed)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))
        collected.setdefault(test_class, []).append(item.name)
        name = getattr(item, "originalname", item.name)
        group = next((k for k in test_class.__mro__ if name in vars(k)), None)
        if group is not None:  # `pytest -k CancelTests` selects one group
            item.extra_keyword_matches.add(group.__name__)
        reason = known_failures.get(item.name, known_failures.get(name))
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=f"known failure: {reason}", strict=True))
        if add_timeout and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT_S))
    for test_class, names in collected.items():
        problem = unmatched_cases(
            test_class, getattr(test_class, "known_failures", {}) or {}, names
        )
        if problem is not None:
            raise pytest.UsageError(problem)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the consumers' output to the report of a failed test."""
    report = yield
    pool = item.stash.get(_CONSUMERS_KEY, None)
    if report.failed and pool is not None and pool.started:
        report.sections.append(("taskserve consumer processes", pool.output_tails()))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the delivery reports of crash tests and the counts of chaos runs."""
    sections: dict[str, list[str]] = {DELIVERY_PROPERTY: [], CHAOS_PROPERTY: []}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for key, value in getattr(report, "user_properties", ()):
                if key == DELIVERY_PROPERTY:
                    line = DeliveryReport.from_property(value).line()
                elif key == CHAOS_PROPERTY:
                    line = ChaosReport(**value).line()
                else:
                    continue
                sections[key].append(f"{report.nodeid}: {line}")
    titles = {
        DELIVERY_PROPERTY: "taskserve conformance: delivery after crashes",
        CHAOS_PROPERTY: "taskserve conformance: chaos runs",
    }
    for key, lines in sections.items():
        if lines:
            terminalreporter.write_sep("-", titles[key])
            for line in sorted(lines):
                terminalreporter.write_line(line)


# -- fixtures an adapter author overrides --------------------------------------
@pytest.fixture(scope="session")
def serve_instance() -> Iterator[str]:
    """One local Ray and Serve shared by every Serve test of the run; its HTTP URL."""
    from taskserve_conformance.serve import start_serve_session

    yield from start_serve_session()


@pytest.fixture
def adapter_config() -> Mapping[str, Any] | AdapterConfig:
    """The adapter's settings. Override it (most adapters need a broker URL)."""
    return {}


@pytest.fixture
def config_overrides() -> Mapping[str, Any]:
    """TaskProcessorConfig fields to change for every test (e.g. a longer lease)."""
    return {}


@pytest.fixture
def harness() -> BrokerHarness:
    """The broker harness. Override it with one for your broker."""
    pytest.fail(
        "conformance tests need a `harness` fixture returning a "
        "taskserve_conformance.BrokerHarness for your broker",
        pytrace=False,
    )


# -- fixtures the suite provides ---------------------------------------------
@pytest.fixture
def adapter_class(request: pytest.FixtureRequest) -> type[TaskProcessorAdapter]:
    """The adapter class under test, from the test class's ``adapter`` attribute."""
    selector = getattr(request.cls, "adapter", None)
    if selector is None:
        pytest.fail(
            'conformance tests need the adapter under test: set `adapter = "alias"` '
            "(or a dotted path, or the class) on the test class",
            pytrace=False,
        )
    return resolve_adapter(selector)


@pytest.fixture
def make_config(
    request: pytest.FixtureRequest,
    adapter_class: type[TaskProcessorAdapter],
    adapter_config: Mapping[str, Any] | AdapterConfig,
    config_overrides: Mapping[str, Any],
    harness: BrokerHarness,
) -> Iterator[ConfigFactory]:
    """Factory of configs with unique queues; the harness cleans each up at the end."""
    selector = getattr(request.cls, "adapter", None) or adapter_class
    factory = ConfigFactory(
        selector, adapter_config, config_overrides, name_hint=request.node.originalname
    )
    yield factory
    for created in factory.created:
        harness.cleanup(created)


@pytest.fixture
def config(make_config: ConfigFactory) -> TaskProcessorConfig:
    """The test's default config."""
    return make_config()


@pytest.fixture
def make_producer() -> Iterator[ProducerFactory]:
    """Factory of producer-side adapters, shut down at the end of the test."""
    factory = ProducerFactory()
    yield factory
    factory.shutdown_all()


@pytest.fixture
def producer(make_producer: ProducerFactory, config: TaskProcessorConfig) -> TaskProcessorAdapter:
    """A producer-side adapter on the test's default config."""
    return make_producer(config)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    """The journal the test's consumer processes write to."""
    return Journal(tmp_path / "journal")


@pytest.fixture
def deadlines(config: TaskProcessorConfig) -> Deadlines:
    """Timeouts derived from the test's default config."""
    return Deadlines(config)


@pytest.fixture
def consumers(
    request: pytest.FixtureRequest,
    journal: Journal,
    config: TaskProcessorConfig,
    deadlines: Deadlines,
    tmp_path: Path,
) -> Iterator[ConsumerPool]:
    """Starts consumer processes; every one still running is killed at the end."""
    pool = ConsumerPool(journal, config, tmp_path / "consumers", deadlines.startup)
    request.node.stash[_CONSUMERS_KEY] = pool
    yield pool
    pool.reap()
