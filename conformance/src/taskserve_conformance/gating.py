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


def check_known_failures(test_class: type, known_failures: Mapping[str, str]) -> None:
    """Raise ValueError for an entry naming no test of ``test_class`` or
    lacking a reason, so a typo cannot hide a failure."""
    for name, reason in known_failures.items():
        if not (name.startswith("test") and callable(getattr(test_class, name, None))):
            raise ValueError(
                f"{test_class.__qualname__}.known_failures names '{name}', which is not a "
                "test of this class; use the test method's name, without parameters"
            )
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(
                f"{test_class.__qualname__}.known_failures['{name}'] needs a reason (a string)"
            )
