"""Retry policies of single task handlers.

``@task_handler(name="transcribe", max_retries=5, retry_backoff_s=2.0,
non_retryable=(ValueError, KeyError))`` stores a :class:`HandlerPolicy` on
the handler. The consumer's runner resolves it against its
:class:`~taskserve.TaskProcessorConfig` into the :class:`RetryPolicy` in force
for that task name: every option the handler leaves :data:`NOT_GIVEN` is the
config's. ``max_retries=None`` retries without limit, as in the config.

``@task_handler(time_limit_s=...)`` likewise overrides the config's
``task_time_limit_s`` for one task name (:meth:`HandlerPolicy.time_limit`);
``time_limit_s=None`` runs that handler without a limit.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from taskserve.config import TaskProcessorConfig, max_attempts_for
from taskserve.errors import ConfigError, NonRetryableError, PayloadError

__all__ = [
    "NOT_GIVEN",
    "POLICY_ATTRIBUTE",
    "HandlerPolicy",
    "NotGiven",
    "RetryPolicy",
    "handler_policy",
]


class _NotGivenType(enum.Enum):
    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = _NotGivenType.NOT_GIVEN
"""An option a handler does not set: the TaskProcessorConfig's value applies."""

NotGiven = Literal[_NotGivenType.NOT_GIVEN]
"""The type of :data:`NOT_GIVEN`."""

POLICY_ATTRIBUTE = "_taskserve_handler_policy"
"""Attribute holding a handler's :class:`HandlerPolicy` (set by ``@task_handler``)."""


@dataclass(frozen=True)
class RetryPolicy:
    """The retry settings in force for one task name.

    Built by :meth:`HandlerPolicy.resolve`; a task name without options of
    its own has its config's settings and no extra non-retryable types.
    """

    max_retries: int | None
    """Retries after the first attempt; None retries without limit."""
    retry_backoff_s: float
    """Delay before the first retry, doubled each retry."""
    retry_backoff_max_s: float
    """Cap of every retry delay."""
    retry_jitter: bool
    """Whether each delay is drawn between half and all of it."""
    non_retryable: tuple[type[BaseException], ...] = ()
    """Exception types (subclasses included) that fail the task at once."""

    @classmethod
    def from_config(cls, config: TaskProcessorConfig) -> RetryPolicy:
        """The settings of ``config`` alone (a handler without options)."""
        return HandlerPolicy().resolve(config)

    @property
    def max_attempts(self) -> int:
        """Total runs allowed, crashed deliveries included: the first attempt
        plus ``max_retries`` (:data:`~taskserve.config.UNLIMITED_ATTEMPTS` when
        ``max_retries`` is None)."""
        return max_attempts_for(self.max_retries)

    def may_retry(self, error: BaseException) -> bool:
        """Whether a failure with ``error`` may be retried, the attempt budget
        aside: False for :class:`~taskserve.NonRetryableError`,
        :class:`~taskserve.PayloadError` and instances of ``non_retryable``."""
        return not isinstance(error, (NonRetryableError, PayloadError, *self.non_retryable))


@dataclass(frozen=True)
class HandlerPolicy:
    """The retry options one handler sets over its TaskProcessorConfig.

    Each option left :data:`NOT_GIVEN` falls back to the config. The values
    are checked when the policy is made (that is, when ``@task_handler`` is
    applied): a bad one raises :class:`~taskserve.errors.ConfigError` naming it.
    """

    max_retries: int | NotGiven | None = NOT_GIVEN
    """Retries after the first attempt, at least 0; None retries without limit."""
    retry_backoff_s: float | NotGiven = NOT_GIVEN
    """Delay in seconds before the first retry (at least 0), doubled each retry."""
    retry_backoff_max_s: float | NotGiven = NOT_GIVEN
    """Cap of every retry delay in seconds (at least 0, and at least
    ``retry_backoff_s`` when both are given). Not given: the config's cap, or
    this policy's ``retry_backoff_s`` when that is larger, so that the first
    retry waits the backoff the handler asked for."""
    non_retryable: tuple[type[BaseException], ...] = ()
    """Exception types whose instances (subclasses included) fail the task at
    once, as :class:`~taskserve.NonRetryableError` does. One class or any
    iterable of classes is accepted and kept as a tuple."""
    time_limit_s: float | NotGiven | None = NOT_GIVEN
    """Longest run of one attempt in seconds (positive and finite); None runs
    the handler without a limit whatever the config says."""

    def __post_init__(self) -> None:
        _check_max_retries(self.max_retries)
        object.__setattr__(self, "time_limit_s", _time_limit(self.time_limit_s))
        backoff = _seconds("retry_backoff_s", self.retry_backoff_s)
        backoff_max = _seconds("retry_backoff_max_s", self.retry_backoff_max_s)
        if backoff is not NOT_GIVEN and backoff_max is not NOT_GIVEN and backoff_max < backoff:
            raise ConfigError(
                f"retry_backoff_max_s must be at least retry_backoff_s ({backoff!r}), "
                f"got {backoff_max!r}"
            )
        object.__setattr__(self, "retry_backoff_s", backoff)
        object.__setattr__(self, "retry_backoff_max_s", backoff_max)
        object.__setattr__(self, "non_retryable", _exception_types(self.non_retryable))

    def resolve(self, config: TaskProcessorConfig) -> RetryPolicy:
        """The settings in force for the handler under ``config``: each option
        given here, else the config's (``retry_jitter`` is always the config's;
        a cap not given is raised to a larger ``retry_backoff_s`` given here)."""
        if self.retry_backoff_s is NOT_GIVEN:
            backoff, backoff_max = config.retry_backoff_s, config.retry_backoff_max_s
        else:
            backoff = self.retry_backoff_s
            backoff_max = max(config.retry_backoff_max_s, backoff)
        if self.retry_backoff_max_s is not NOT_GIVEN:
            backoff_max = self.retry_backoff_max_s
        return RetryPolicy(
            max_retries=config.max_retries if self.max_retries is NOT_GIVEN else self.max_retries,
            retry_backoff_s=backoff,
            retry_backoff_max_s=backoff_max,
            retry_jitter=config.retry_jitter,
            non_retryable=self.non_retryable,
        )

    def time_limit(self, config: TaskProcessorConfig) -> float | None:
        """The time limit in force for the handler under ``config``: its own
        ``time_limit_s`` if given, else the config's ``task_time_limit_s``;
        None for no limit."""
        if self.time_limit_s is NOT_GIVEN:
            return config.task_time_limit_s
        return self.time_limit_s


def handler_policy(handler: Callable[..., Any]) -> HandlerPolicy:
    """The :class:`HandlerPolicy` that ``@task_handler`` stored on ``handler``
    (a function, or a bound method through its ``__func__``); a policy with
    no options when there is none."""
    for candidate in (handler, getattr(handler, "__func__", None)):
        policy = getattr(candidate, POLICY_ATTRIBUTE, None)
        if isinstance(policy, HandlerPolicy):
            return policy
    return HandlerPolicy()


def _check_max_retries(value: object) -> None:
    if value is NOT_GIVEN or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"max_retries must be a whole number of at least 0, or None to retry without "
            f"limit; got {value!r} (a {type(value).__name__})"
        )
    if value < 0:
        raise ConfigError(
            f"max_retries must be at least 0 (None retries without limit), got {value}"
        )


def _seconds(name: str, value: object) -> float | NotGiven:
    if value is NOT_GIVEN:
        return NOT_GIVEN
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"{name} must be a number of seconds, got {value!r} (a {type(value).__name__})"
        )
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number of seconds of at least 0, got {value}")
    return float(value)


def _time_limit(value: object) -> float | NotGiven | None:
    if value is NOT_GIVEN or value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"time_limit_s must be a number of seconds, or None for no limit; got {value!r} "
            f"(a {type(value).__name__})"
        )
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"time_limit_s must be a finite number of seconds above 0 (None for no limit), "
            f"got {value}"
        )
    return float(value)


def _exception_types(value: object) -> tuple[type[BaseException], ...]:
    items = (value,) if isinstance(value, type) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise ConfigError(
            f"non_retryable must be an exception class or a tuple of them, got {value!r}"
        )
    types = tuple(items)
    for item in types:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigError(f"non_retryable must hold exception classes only, got {item!r}")
    return types
