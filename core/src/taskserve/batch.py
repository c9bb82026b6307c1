"""Batched handlers: one handler call for several ready tasks of one name.

``@task_handler(name="embed", batch_max_size=8, batch_wait_timeout_s=0.05)``
turns a handler into a batched one. It takes one argument, a list of
:class:`BatchItem` - one per task, each with the task's ``args`` and
``kwargs`` as enqueued and its own :class:`~taskserve.TaskContext` - and
returns a list of results of the same length, in the same order::

    @task_handler(name="embed", batch_max_size=8, batch_wait_timeout_s=0.05)
    def embed(self, items: list[BatchItem]) -> list[Any]:
        vectors = self.model.encode([item.args[0] for item in items])
        return [v.tolist() for v in vectors]

A batch holds tasks of that name that are ready on the consumer: up to
``batch_max_size`` of them, or whatever has arrived once
``batch_wait_timeout_s`` has passed since the first one did. A consumer
never holds more tasks than its concurrency, so a batch holds at most
``min(batch_max_size, consumer concurrency)`` tasks.

Every task of a batch keeps its own life: its status (STARTED while the
batch runs), result, attempt count, lease, cancel, lifecycle hooks and task
log lines. A slot of the result holding an exception instance fails that
task alone, which then follows its retry policy; an exception the handler
raises fails every task of the batch, one attempt each. A return value that
is not a list (or tuple) of one result per task fails every task with
:class:`BatchResultError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from taskserve.context import TaskContext
from taskserve.errors import ConfigError, NonRetryableError

__all__ = [
    "BATCH_ATTRIBUTE",
    "DEFAULT_BATCH_WAIT_TIMEOUT_S",
    "BatchItem",
    "BatchOptions",
    "BatchResultError",
    "batch_options",
]

DEFAULT_BATCH_WAIT_TIMEOUT_S: Final = 0.01
"""``batch_wait_timeout_s`` of a batched handler that does not set it (Ray
Serve's ``@serve.batch`` default)."""

BATCH_ATTRIBUTE = "_taskserve_batch_options"
"""Attribute holding a batched handler's :class:`BatchOptions` (set by ``@task_handler``)."""


@dataclass(frozen=True)
class BatchItem:
    """One task of a batch, as a batched handler receives it."""

    args: tuple[Any, ...]
    """The task's positional arguments, as enqueued."""
    kwargs: dict[str, Any]
    """The task's keyword arguments, as enqueued."""
    task: TaskContext
    """The task's own context: ``id``, ``name``, ``attempt``, ``cancelled`` (set
    once the task is cancelled while its batch runs; its result is then
    discarded) and ``report_progress`` (the task's own progress)."""

    @property
    def task_id(self) -> str:
        """The task's id."""
        return self.task.id


class BatchResultError(NonRetryableError):
    """A batched handler returned something else than a list holding one result
    per task of its batch; every task of the batch fails with this error,
    without a retry (like a result that is not JSON)."""


@dataclass(frozen=True)
class BatchOptions:
    """How a batched handler's tasks are grouped into calls."""

    max_size: int
    """The most tasks in one call (at least 1)."""
    wait_timeout_s: float
    """The longest wait, from the arrival of a batch's first task, for more
    tasks to join it before the call starts (at least 0)."""

    @classmethod
    def checked(cls, handler: str, max_size: object, wait_timeout_s: object) -> BatchOptions | None:
        """The options of handler ``handler`` given as ``@task_handler``'s
        ``batch_max_size`` and ``batch_wait_timeout_s`` (None: not given);
        None when the handler is not batched. A value of the wrong type raises
        TypeError, a bad value :class:`~taskserve.ConfigError`, both naming the
        handler and the option."""
        where = f"@task_handler '{handler}'"
        if max_size is None:
            if wait_timeout_s is not None:
                raise ConfigError(
                    f"{where}: batch_wait_timeout_s applies to batched handlers only; "
                    "give batch_max_size too"
                )
            return None
        if isinstance(max_size, bool) or not isinstance(max_size, int):
            raise TypeError(
                f"{where}: batch_max_size must be a whole number (int), got {max_size!r} "
                f"(a {type(max_size).__name__})"
            )
        if max_size < 1:
            raise ConfigError(f"{where}: batch_max_size must be at least 1, got {max_size}")
        if wait_timeout_s is None:
            return cls(max_size, DEFAULT_BATCH_WAIT_TIMEOUT_S)
        if isinstance(wait_timeout_s, bool) or not isinstance(wait_timeout_s, (int, float)):
            raise TypeError(
                f"{where}: batch_wait_timeout_s must be a number of seconds, got "
                f"{wait_timeout_s!r} (a {type(wait_timeout_s).__name__})"
            )
        if not math.isfinite(wait_timeout_s) or wait_timeout_s < 0:
            raise ConfigError(
                f"{where}: batch_wait_timeout_s must be a finite number of seconds of at "
                f"least 0, got {wait_timeout_s}"
            )
        return cls(max_size, float(wait_timeout_s))


def batch_options(handler: Callable[..., Any]) -> BatchOptions | None:
    """The :class:`BatchOptions` ``@task_handler`` stored on ``handler`` (a
    function, a bound method, or a wrapper made with ``functools.wraps``);
    None for a handler that is not batched."""
    for candidate in (handler, getattr(handler, "__func__", None)):
        options = getattr(candidate, BATCH_ATTRIBUTE, None)
        if isinstance(options, BatchOptions):
            return options
    return None
