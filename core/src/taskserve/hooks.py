"""Lifecycle hooks (pluggy).

A plugin implements any of the ``taskserve_task_*`` functions below, marked
with :data:`hookimpl`, and is registered through the entry-point group
``taskserve.hooks``::

    [project.entry-points."taskserve.hooks"]
    my_metrics = "my_package.taskserve_hooks"

Every hook receives one :class:`TaskEvent`. Hooks run in the thread that
produced the event; an exception in a hook is logged and never fails a task.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pluggy

from taskserve.models import TaskError, TaskProgress

PROJECT_NAME = "taskserve"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marker for hook implementations: ``@hookimpl def taskserve_task_started(event): ...``."""


@dataclass(frozen=True)
class TaskEvent:
    """One step in a task's life, as passed to every hook."""

    task_id: str
    task_name: str | None
    queue_name: str
    adapter: str
    attempt: int = 0
    error: TaskError | None = None
    run_time_s: float | None = None
    queue_wait_s: float | None = None
    retry_delay_s: float | None = None
    dead_letter_queue: str | None = None
    progress: TaskProgress | None = None
    reason: str | None = None
    """Why the event happened, in words, when the error does not say it (a
    task cancelled because it expired before it ran)."""
    timestamp: float = field(default_factory=time.time)


class TaskLifecycleSpec:
    """The hook specifications. Each is called once per event."""

    @hookspec
    def taskserve_task_enqueued(self, event: TaskEvent) -> None:
        """A task was accepted by the broker."""

    @hookspec
    def taskserve_task_started(self, event: TaskEvent) -> None:
        """A consumer started an attempt; ``queue_wait_s`` is set."""

    @hookspec
    def taskserve_task_retried(self, event: TaskEvent) -> None:
        """An attempt failed and another is scheduled after ``retry_delay_s``."""

    @hookspec
    def taskserve_task_succeeded(self, event: TaskEvent) -> None:
        """The handler returned and its result is stored; ``run_time_s`` is set."""

    @hookspec
    def taskserve_task_failed(self, event: TaskEvent) -> None:
        """The task failed for good (last attempt, a non-retryable error, or
        an unknown task name, with ``attempt`` 0: nothing ran)."""

    @hookspec
    def taskserve_task_dead_lettered(self, event: TaskEvent) -> None:
        """A record was written to ``dead_letter_queue``."""

    @hookspec
    def taskserve_task_cancelled(self, event: TaskEvent) -> None:
        """The task's status became CANCELLED."""

    @hookspec
    def taskserve_task_progress(self, event: TaskEvent) -> None:
        """A running handler reported progress; ``progress`` is set. Called for
        every report the consumer accepted, in the handler's thread, before
        the store's rate limit: a hook sees reports that are never written
        (a newer one replaced them within the write interval)."""
