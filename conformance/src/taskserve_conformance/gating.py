"""Capability gating and declared known failures.

A test that checks an optional feature is decorated with :func:`requires`,
naming the :class:`taskserve.Capability` it needs. When the adapter class does
not declare it, the test is skipped with a reason naming the capability;
when it does, the test runs and a failure is a failure.

An adapter author declares known gaps in ``known_failures`` on their test
class (test name -> reason); those tests become strict expected failures,
so the day the gap is fixed the run says so.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from taskserve import Capability, TaskProcessorAdapter

_T = TypeVar("_T", bound=Callable[..., Any] | type)

REQUIRES_ATTRIBUTE = "__taskserve_requires__"


def requires(*capabilities: Capability) -> Callable[[_T], _T]:
    """Mark a test (or every test of a group class) as needing ``capabilities``.

    The mark is data on the test function, not a pytest marker, so test
    modules can be imported before the plugin is registered.
    """
    for capability in capabilities:
        if not isinstance(capability, Capability):
            raise TypeError(f"requires() takes taskserve.Capability members, got {capability!r}")

    def mark(target: _T) -> _T:
        functions: Iterable[Any] = (
            [v for k, v in vars(target).items() if k.startswith("test") and callable(v)]
            if isinstance(target, type)
            else [target]
        )
        for function in functions:
            present = getattr(function, REQUIRES_ATTRIBUTE, ())
            setattr(function, REQUIRES_ATTRIBUTE, (*present, *capabilities))
        return target

    return mark


def unmatched_cases(
    test_class: type, known_failures: Mapping[str, str], collected: Iterable[str]
) -> str | None:
    """The error for a parametrized entry (``test_x[case]``) that names no
    collected case of ``test_class``, with the closest case; None if all match."""
    names = set(collected)
    for name in known_failures:
        if "[" in name and name not in names:
            return (
                f"{test_class.__qualname__}.known_failures names '{name}', which is not a "
                f"collected test case.{_close_match(name, names)}"
            )
    return None


def required_capabilities(function: object) -> tuple[Capability, ...]:
    """The capabilities a test function was marked with."""
    return tuple(getattr(function, REQUIRES_ATTRIBUTE, ()))


def adapter_display_name(adapter_class: type[TaskProcessorAdapter]) -> str:
    """How skip reasons name an adapter: its alias, else its class name."""
    return adapter_class.alias or adapter_class.__name__


def missing_capability_reason(
    adapter_class: type[TaskProcessorAdapter], needed: Iterable[Capability]
) -> str | None:
    """The skip reason when ``adapter_class`` lacks one of ``needed``, else None."""
    for capability in needed:
        if not adapter_class.supports(capability):
            return (
                f"adapter '{adapter_display_name(adapter_class)}' does not declare "
                f"capability '{capability.value}'"
            )
    return None


def _close_match(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def check_known_failures(test_class: type, known_failures: Mapping[str, str]) -> None:
    """Raise ValueError for an entry naming no test of ``test_class`` or
    lacking a reason, so a typo cannot hide a failure. An entry is a test's
    name (every case of it) or one parametrized case (``test_x[case]``)."""
    tests = [
        n for n in dir(test_class) if n.startswith("test") and callable(getattr(test_class, n))
    ]
    for name, reason in known_failures.items():
        base = name.split("[", 1)[0]
        if base not in tests:
            raise ValueError(
                f"{test_class.__qualname__}.known_failures names '{name}', which is not a "
                f"test of this class.{_close_match(base, tests)}"
            )
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(
                f"{test_class.__qualname__}.known_failures['{name}'] needs a reason (a string)"
            )
