"""Replica health: when a consumer replica must be replaced.

Serve calls a deployment's ``check_health`` periodically and replaces the
replica after it fails a few times in a row. A consumer replica is unhealthy
when its broker cannot be reached or when its consumer is no longer running
although nobody stopped it (its threads died).
"""

from __future__ import annotations

from taskserve.errors import TaskserveError
from taskserve.models import HealthReport


class ConsumerUnhealthy(TaskserveError, RuntimeError):
    """Raised by a consumer replica's ``check_health``; the message says why."""

    def __init__(self, queue_name: str, reason: str) -> None:
        self.queue_name = queue_name
        self.reason = reason
        super().__init__(f"task consumer of queue '{queue_name}' is unhealthy: {reason}")


def unhealthy_reason(report: HealthReport, expected_running: bool) -> str | None:
    """Why a consumer with this health report is unhealthy, or None if it is fine.

    ``expected_running`` is True while the consumer was started and not yet
    stopped on purpose; then a consumer that is not running is a failure even
    if the adapter no longer reports it as started.
    """
    reasons: list[str] = []
    if not report.broker_reachable:
        reasons.append(report.detail or "broker unreachable")
    if expected_running and report.consumer_running is not True:
        reasons.append("the consumer is not running (its threads died or it was stopped)")
    if not reasons and not report.healthy:
        reasons.append(report.detail or "the adapter reports itself unhealthy")
    return "; ".join(reasons) if reasons else None
