"""The normalized task state shared by every adapter."""

from __future__ import annotations

import enum


class TaskState(enum.StrEnum):
    """Where a task is in its life. The same six values for every adapter.

    ``PENDING`` queued, ``STARTED`` running, ``RETRY`` failed and waiting for its
    next attempt, then one of the terminal states ``SUCCESS``, ``FAILURE`` or
    ``CANCELLED``. A task never leaves a terminal state.
    """

    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """True for SUCCESS, FAILURE and CANCELLED."""
        return self in TERMINAL_STATES


TERMINAL_STATES: frozenset[TaskState] = frozenset(
    {TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED}
)
