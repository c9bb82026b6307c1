"""Retry delays."""

from __future__ import annotations

import random
from typing import Protocol


class BackoffSettings(Protocol):
    """What the delay formula reads: a :class:`~taskserve.TaskProcessorConfig`,
    or the :class:`~taskserve.policy.RetryPolicy` in force for one task name."""

    @property
    def retry_backoff_s(self) -> float: ...

    @property
    def retry_backoff_max_s(self) -> float: ...

    @property
    def retry_jitter(self) -> bool: ...


def retry_delay_s(config: BackoffSettings, failed_attempt: int) -> float:
    """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed.

    Exponential: ``retry_backoff_s * 2 ** (failed_attempt - 1)``, capped at
    ``retry_backoff_max_s``; with ``retry_jitter`` a uniform draw between half
    and all of it, so that retries of many tasks spread out.
    """
    exponent = max(failed_attempt - 1, 0)
    delay = min(config.retry_backoff_s * (2.0 ** min(exponent, 60)), config.retry_backoff_max_s)
    if config.retry_jitter:
        delay = random.uniform(delay / 2, delay)
    return delay
