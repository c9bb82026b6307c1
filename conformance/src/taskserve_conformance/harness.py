"""Broker-level access for checks that must bypass the adapter under test.

The suite checks an adapter through its public API; a few promises can only
be checked by reaching the broker directly (putting bytes no adapter would
send on the task queue, making dead-letter writes fail). An adapter author
implements :class:`BrokerHarness` for their broker. Its methods must not use
the adapter under test: a helper that used the adapter could not catch that
adapter's bugs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import pytest

from taskserve import TaskProcessorConfig


class BrokerHarness(ABC):
    """What the suite needs from a broker, implemented without the adapter.

    ``publish_raw`` and ``cleanup`` are required. The optional features raise
    :class:`NotImplementedError` by default; a test that needs one is then
    skipped, and the skip reason names the harness feature.
    """

    @abstractmethod
    def publish_raw(self, config: TaskProcessorConfig, body: bytes) -> None:
        """Put ``body`` on ``config.queue_name`` as one message, exactly as a
        consumer of that queue would receive it (used for SPEC §4.8)."""

    @abstractmethod
    def cleanup(self, config: TaskProcessorConfig) -> None:
        """Remove every queue, key or file that tests created for ``config``
        (its task queue, both dead-letter queues and stored results).

        Called once per config when the test ends, after its consumers and
        producers are gone. Must not fail if nothing was created.
        """

    def break_dead_letters(self, config: TaskProcessorConfig) -> AbstractContextManager[None]:
        """A context manager inside which every write to ``config``'s dead-letter
        queues fails, as when the broker refuses them (SPEC §4.9). Leaving it
        makes dead-letter writes work again. Optional."""
        raise NotImplementedError

    def unreachable_adapter_config(self, config: TaskProcessorConfig) -> Mapping[str, Any]:
        """An ``adapter_config`` like ``config``'s that points at no reachable
        broker (a closed port, a path that cannot exist). Optional."""
        raise NotImplementedError


def harness_feature_missing(harness: BrokerHarness, feature: str) -> str:
    """The skip reason for a harness that does not implement ``feature``."""
    return f"harness {type(harness).__name__} does not implement '{feature}'"


def require_harness_feature(harness: BrokerHarness, feature: str) -> None:
    """Skip the test unless ``harness`` overrides the optional method ``feature``."""
    if getattr(type(harness), feature) is getattr(BrokerHarness, feature):
        pytest.skip(harness_feature_missing(harness, feature))


@contextmanager
def dead_letters_broken(harness: BrokerHarness, config: TaskProcessorConfig) -> Iterator[None]:
    """Enter ``harness.break_dead_letters(config)``; skip the test if the harness
    does not implement it."""
    require_harness_feature(harness, "break_dead_letters")
    with ExitStack() as stack:
        try:
            stack.enter_context(harness.break_dead_letters(config))
        except NotImplementedError:
            pytest.skip(harness_feature_missing(harness, "break_dead_letters"))
        yield


def unreachable_adapter_config(
    harness: BrokerHarness, config: TaskProcessorConfig
) -> Mapping[str, Any]:
    """``harness.unreachable_adapter_config(config)``, or skip the test."""
    require_harness_feature(harness, "unreachable_adapter_config")
    try:
        return harness.unreachable_adapter_config(config)
    except NotImplementedError:
        pytest.skip(harness_feature_missing(harness, "unreachable_adapter_config"))
