"""Retry delays."""

from __future__ import annotations

import random

from taskserve.config import TaskProcessorConfig


def retry_delay_s(config: TaskProcessorConfig, failed_attempt: int) -> float:
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
