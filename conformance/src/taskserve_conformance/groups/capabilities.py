"""Capability flags (SPEC §3.2).

Promises checked: the adapter class declares its optional features as
:class:`taskserve.Capability` flags readable without a broker; calling a
feature the adapter does not declare raises ``UnsupportedCapability`` naming
the adapter and the flag. The second check runs on a subclass of the adapter
that declares nothing, so it applies to every adapter, and it catches
adapters whose public methods skip the capability check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from taskserve import (
    Capability,
    DeadLetterKind,
    TaskProcessorAdapter,
    UnsupportedCapability,
)
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.gating import adapter_display_name
from taskserve_conformance.handlers import batch_echo
from taskserve_conformance.producers import ProducerFactory

GATED_CALLS: dict[str, tuple[Capability, Callable[[TaskProcessorAdapter, str], Any]]] = {
    "cancel": (Capability.CANCEL_PENDING, lambda a, t: a.cancel_task_sync(t)),
    "idempotency-key": (
        Capability.IDEMPOTENCY_KEYS,
        lambda a, t: a.enqueue_task_sync("noop", idempotency_key="k"),
    ),
    "priority": (
        Capability.PRIORITIES,
        lambda a, t: a.enqueue_task_sync("noop", priority=5),
    ),
    "metrics": (Capability.QUEUE_METRICS, lambda a, t: a.get_metrics_sync()),
    "batched-handler": (
        Capability.BATCHING,
        lambda a, t: a.register_task_handle(batch_echo, "batch_echo"),
    ),
    "list-dead-letters": (Capability.DEAD_LETTERS, lambda a, t: a.list_dead_letters_sync()),
    "redrive-dead-letters": (
        Capability.DEAD_LETTERS,
        lambda a, t: a.redrive_dead_letters_sync(kind=DeadLetterKind.UNPROCESSABLE),
    ),
    "purge-dead-letters": (Capability.DEAD_LETTERS, lambda a, t: a.purge_dead_letters_sync()),
}
"""Public calls that need a capability: name -> (capability, call(adapter, task_id))."""


class CapabilityTests:
    """§3.2: declared capabilities, and a clear error for undeclared ones."""

    def test_capabilities_are_class_data(self, adapter_class: type[TaskProcessorAdapter]) -> None:
        declared = adapter_class.capabilities
        assert isinstance(declared, frozenset)
        assert all(isinstance(c, Capability) for c in declared), declared
        for capability in Capability:
            assert adapter_class.supports(capability) is (capability in declared)
            assert adapter_class.supports(capability.value) is (capability in declared)
        assert isinstance(adapter_class.alias, str) and adapter_class.alias

    @pytest.mark.parametrize("call", GATED_CALLS, ids=GATED_CALLS.keys())
    def test_undeclared_capability_raises_unsupported_capability(
        self,
        adapter_class: type[TaskProcessorAdapter],
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        call: str,
    ) -> None:
        stripped = type(
            f"{adapter_class.__name__}WithoutCapabilities",
            (adapter_class,),
            {"capabilities": frozenset()},
        )
        producer = make_producer(make_config(adapter=stripped))
        task = producer.enqueue_task_sync("noop")
        capability, invoke = GATED_CALLS[call]
        with pytest.raises(UnsupportedCapability) as raised:
            invoke(producer, task.id)
        assert raised.value.capability == capability.value
        assert capability.value in str(raised.value)
        assert adapter_display_name(adapter_class) in str(raised.value)
