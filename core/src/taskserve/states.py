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

    def can_become(self, new: TaskState) -> bool:
        """Whether a record in this state may be moved to ``new``.

        Only terminal states are final: any non-terminal state may move to any
        other state (a redelivery moves STARTED back to STARTED, a retry moves
        RETRY to STARTED), but nothing replaces SUCCESS, FAILURE or CANCELLED.
        """
        return not self.is_terminal


TERMINAL_STATES: frozenset[TaskState] = frozenset(
    {TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED}
)
QUEUED_STATES: frozenset[TaskState] = frozenset({TaskState.PENDING, TaskState.RETRY})
