"""Timeouts derived from a task processor configuration.

Every wait in the suite is bounded by one of these, computed from the
configuration's lease, backoff and TTL with generous margins, so that slower
brokers and loaded CI machines pass where a correct adapter is merely slow.
``TASKSERVE_CONFORMANCE_TIMEOUT_FACTOR`` (default 1) scales them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from taskserve import TaskProcessorConfig
from taskserve.retry import retry_delay_s

TIMEOUT_FACTOR_ENV = "TASKSERVE_CONFORMANCE_TIMEOUT_FACTOR"

_MARGIN_S = 10.0
"""Slack added to every bound: process start-up, polling, a busy machine."""


def timeout_factor() -> float:
    """The multiplier read from :data:`TIMEOUT_FACTOR_ENV`."""
    raw = os.environ.get(TIMEOUT_FACTOR_ENV, "1")
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_FACTOR_ENV} must be a number, got {raw!r}") from None
    if factor <= 0:
        raise ValueError(f"{TIMEOUT_FACTOR_ENV} must be positive, got {raw!r}")
    return factor


@dataclass(frozen=True)
class Deadlines:
    """Upper bounds, in seconds, for what a correct adapter does under ``config``."""

    config: TaskProcessorConfig
    factor: float = field(default_factory=timeout_factor)

    def _scaled(self, seconds: float) -> float:
        return seconds * self.factor

    @property
    def startup(self) -> float:
        """A consumer process prints its ready line."""
        return self._scaled(30.0)

    @property
    def pickup(self) -> float:
        """An idle consumer starts a queued task."""
        return self._scaled(_MARGIN_S + self.config.lease_s)

    def run(self, seconds: float = 0.0, tasks: int = 1, concurrency: int = 1) -> float:
        """``tasks`` tasks of ``seconds`` each finish on ``concurrency`` slots."""
        batches = -(-tasks // concurrency)
        return self.pickup + self._scaled(2 * seconds * batches + 0.2 * tasks)

    @property
    def redelivery(self) -> float:
        """A task whose consumer died is delivered again and started (§4.2)."""
        return self._scaled(_MARGIN_S + 3 * self.config.lease_s)

    def retries(self, failed_attempts: int | None = None) -> float:
        """Every attempt of a task failing ``failed_attempts`` times has run."""
        n = self.config.max_attempts - 1 if failed_attempts is None else failed_attempts
        backoff = sum(
            retry_delay_s(self.config.model_copy(update={"retry_jitter": False}), i)
            for i in range(1, n + 1)
        )
        return self.pickup + self._scaled(backoff + 2.0 * (n + 1))

    @property
    def cancel(self) -> float:
        """A cancel request reaches a running task and its status settles."""
        return self._scaled(_MARGIN_S + self.config.lease_s)

    @property
    def expiry(self) -> float:
        """A finished task's result is gone after the result TTL (§5.4)."""
        return self._scaled(_MARGIN_S + 2 * self.config.result_ttl_s)

    def stop(self, graceful_timeout_s: float) -> float:
        """A consumer exits after SIGTERM, its graceful timeout included."""
        return self._scaled(_MARGIN_S + graceful_timeout_s)

    def lease_windows(self, count: float) -> float:
        """``count`` leases: how long to watch for something that must not happen."""
        return count * self.config.lease_s
