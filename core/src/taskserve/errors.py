"""Exceptions raised by taskserve.

Every error says what was wrong, what was expected and, where it helps, what
to do. All of them derive from :class:`TaskserveError`.
"""

from __future__ import annotations

from taskserve.redaction import redact_url


class TaskserveError(Exception):
    """Base class of every error raised by taskserve."""


class ConfigError(TaskserveError, ValueError):
    """A configuration value is invalid; the message names the field."""


class AdapterNotFound(TaskserveError, LookupError):
    """No installed adapter matches the requested alias, path or class."""


class UnsupportedCapability(TaskserveError, NotImplementedError):
    """The adapter does not declare the capability a call needs."""

    def __init__(self, adapter: str, capability: str) -> None:
        self.adapter = adapter
        self.capability = capability
        super().__init__(
            f"Adapter '{adapter}' does not support '{capability}': it does not "
            f"declare the capability '{capability}' in its `capabilities`."
        )


class TaskNotFound(TaskserveError, KeyError):
    """The task id was never enqueued, or its result has expired."""

    def __init__(self, task_id: str, detail: str = "") -> None:
        self.task_id = task_id
        message = f"No task with id '{task_id}'"
        message += f" {detail}" if detail else " (never enqueued, or its result expired)"
        super().__init__(message)

    def __str__(self) -> str:  # KeyError quotes its argument otherwise
        return str(self.args[0])


class TaskIdInUse(TaskserveError, ValueError):
    """A task was enqueued with an explicit id that another task already has."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(
            f"task id '{task_id}' is already in use on this queue; omit task_id to get a "
            "fresh one, or pass an idempotency_key to get the first task back"
        )


class RecordingFailed(TaskserveError):
    """A delivery's outcome could not be recorded in the task store, delivery
    after delivery; the task ended FAILURE with this error."""


class PayloadError(TaskserveError, ValueError):
    """Task arguments or a result cannot be serialized as JSON, or are too large."""


class InvalidArgument(TaskserveError, ValueError, TypeError):
    """An argument of a public call has the wrong type or value; the message
    names the argument and what was expected."""


class IdempotencyKeyReused(PayloadError):
    """An idempotency key was sent again with a different task: the key names
    the first task, whose payload differs (HTTP 422, as the IETF
    Idempotency-Key draft recommends)."""

    def __init__(self, key: str, task_id: str) -> None:
        self.key = key
        self.task_id = task_id
        super().__init__(
            f"idempotency key '{key}' was first used for task {task_id} with a different "
            "payload (task name, args or kwargs); use a new key for a different task"
        )


class BrokerUnavailable(TaskserveError, ConnectionError):
    """The adapter's broker or store cannot be reached (or cannot be written:
    paused, read-only, refusing the credentials, locked).

    Its message never holds a password: any URL in it is redacted.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(redact_url(str(message)))


class NonRetryableError(TaskserveError):
    """Raise from a handler to fail the task at once, without further retries."""


class TaskCancelled(TaskserveError):
    """Raised inside a handler (or by :func:`taskserve.current_task` checks) once
    the task has been cancelled."""


class TaskTimeLimitExceeded(TaskserveError):
    """The attempt ran past its time limit (``task_time_limit_s``, or the
    handler's ``time_limit_s``). Raised inside a sync handler's thread at the
    limit (an async handler is cancelled instead); either way the attempt fails
    with this error and is retried or dead-lettered like any failure."""


class ArgumentBindingError(NonRetryableError, TypeError):
    """The task's args and kwargs do not fit the handler's signature."""


class UnknownTask(TaskserveError):
    """No handler is registered for the task's name (it is unprocessable)."""


class UndecodableMessage(TaskserveError):
    """A message could not be decoded as a task (it is unprocessable)."""


class ConsumerLost(TaskserveError):
    """The task's consumer died during every allowed attempt."""


class IgnoredSettingWarning(UserWarning):
    """A setting taskserve accepts for compatibility (Ray Serve's configs
    validate unchanged) but does not apply; the message says why."""


_warned: set[str] = set()


def warn_ignored(setting: str, reason: str) -> None:
    """Warn, once per process and ``setting``, that ``setting`` is accepted but
    has no effect, and why."""
    if setting in _warned:
        return
    _warned.add(setting)
    import warnings

    warnings.warn(f"{setting} is ignored: {reason}", IgnoredSettingWarning, stacklevel=3)
