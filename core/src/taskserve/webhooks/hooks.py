"""Webhooks on the lifecycle hooks: a sender wakes when its queue's tasks move.

A running :class:`~taskserve.webhooks.sender.WebhookSender` registers a
:class:`SenderWakeHooks` plugin on the process's plugin manager
(:func:`taskserve.plugins.get_plugin_manager`, the one every
``taskserve.hooks`` plugin is on). Each lifecycle event that can carry a
webhook (started, progress, succeeded, failed, cancelled, dead-lettered) of
the sender's queue wakes it, so that the event's delivery begins at once
rather than at the sender's next poll.

The hooks say *when* to send, never *what*: a hook is called after the state
change is recorded, and a consumer killed between the two would lose an event
kept only in memory. What is sent is read from the outbox, which the store
writes in the same step as the state change (at least once, across crashes);
a sender that misses a wake finds the entry at its next poll
(``WebhookSettings.poll_interval_s``).
"""

from __future__ import annotations

from typing import Protocol

from taskserve.hooks import TaskEvent, hookimpl


class Wakeable(Protocol):
    """What the hooks wake: a sender of one queue's events."""

    queue_name: str

    def wake(self) -> None:
        """Look for due events now."""


class SenderWakeHooks:
    """The lifecycle hook plugin of one running sender (module docstring)."""

    def __init__(self, sender: Wakeable) -> None:
        self._sender = sender

    def _seen(self, event: TaskEvent) -> None:
        if event.queue_name == self._sender.queue_name:
            self._sender.wake()

    @hookimpl
    def taskserve_task_started(self, event: TaskEvent) -> None:
        """A started event may be due."""
        self._seen(event)

    @hookimpl
    def taskserve_task_progress(self, event: TaskEvent) -> None:
        """A progress event may be due (the store throttles them)."""
        self._seen(event)

    @hookimpl
    def taskserve_task_succeeded(self, event: TaskEvent) -> None:
        """A succeeded event may be due."""
        self._seen(event)

    @hookimpl
    def taskserve_task_failed(self, event: TaskEvent) -> None:
        """A failed event may be due."""
        self._seen(event)

    @hookimpl
    def taskserve_task_cancelled(self, event: TaskEvent) -> None:
        """A cancelled event may be due."""
        self._seen(event)

    @hookimpl
    def taskserve_task_dead_lettered(self, event: TaskEvent) -> None:
        """A dead-lettered event may be due."""
        self._seen(event)
