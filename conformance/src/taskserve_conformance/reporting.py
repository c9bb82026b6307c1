"""Delivery reports: what crash tests measured, shown at the end of the run.

A test records a :class:`DeliveryReport` with ``record_property`` under
:data:`DELIVERY_PROPERTY`; the plugin prints every recorded report in a
section of the terminal summary (and junit XML keeps them as properties).
Duplicates are allowed by at-least-once delivery, so they are reported, not
hidden.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

DELIVERY_PROPERTY = "taskserve_delivery"
CHAOS_PROPERTY = "taskserve_chaos"
"""The property under which chaos tests record their ChaosReport."""


@dataclass(frozen=True)
class DeliveryReport:
    """Counts of one crash test, taken from the journal."""

    tasks: int
    succeeded: int
    runs: int
    redelivered: int
    duplicate_completions: int
    recovery_s: float
    lease_s: float

    @classmethod
    def from_counts(
        cls,
        task_ids: Iterable[str],
        succeeded: int,
        starts: Counter[str],
        ends: Counter[str],
        recovery_s: float,
        lease_s: float,
    ) -> DeliveryReport:
        """Build a report from per-task ``start`` and ``end`` journal counts."""
        ids = list(task_ids)
        return cls(
            tasks=len(ids),
            succeeded=succeeded,
            runs=sum(starts[t] for t in ids),
            redelivered=sum(1 for t in ids if starts[t] > 1),
            duplicate_completions=sum(ends[t] - 1 for t in ids if ends[t] > 1),
            recovery_s=round(recovery_s, 2),
            lease_s=lease_s,
        )

    def as_property(self) -> dict[str, Any]:
        """The report as a ``record_property`` value."""
        return asdict(self)

    @classmethod
    def from_property(cls, value: Mapping[str, Any]) -> DeliveryReport:
        """Read a report back from a test report's user properties."""
        return cls(**value)

    def line(self) -> str:
        """One human-readable summary line."""
        return (
            f"{self.succeeded}/{self.tasks} tasks succeeded in {self.runs} runs; "
            f"{self.redelivered} delivered again after the crash; "
            f"{self.duplicate_completions} duplicate completion(s); "
            f"recovered {self.recovery_s:.1f}s after the kill (lease {self.lease_s:g}s)"
        )
