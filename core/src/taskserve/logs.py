"""Task logs through the standard :mod:`logging` module.

* Lifecycle lines. :class:`TaskLogHooks`, a lifecycle hook plugin that the
  plugin manager registers before any other, writes one record per event to
  the logger ``taskserve.tasks`` (:data:`TASK_LOGGER_NAME`): enqueued (by the
  producer), started, succeeded and cancelled at INFO, retried and
  dead-lettered at WARNING, failed at ERROR with the error's traceback. Every
  adapter's consumer produces these events in the core's runner, so every
  adapter gets the lines. Each record reads as a sentence
  (``task 1a2c... index_document queue=docs attempt=1 succeeded in 0.52 s``)
  and carries the event's fields as attributes (:data:`LIFECYCLE_FIELDS`; None
  where they do not apply), for any formatter to use. Nothing is built for a
  level the logger does not emit. The logger has a :class:`logging.NullHandler`:
  in a process that configured no logging the lines are dropped instead of
  being printed by logging's last-resort handler.
* Handler lines. :class:`TaskContextFilter`, installed on a handler, gives
  every record passing through it the ``task_id``, ``task_name``, ``queue``
  and ``attempt`` of the task that the emitting thread or coroutine runs (None
  outside a task): a handler's ``logging.getLogger(__name__).info(...)`` says
  which task it is about, in sync handlers (the consumer's worker threads) and
  async ones (the runner's event loop; ``asyncio.to_thread`` keeps it too). A
  thread a handler starts itself carries it when started through
  ``contextvars.copy_context().run``.
* Formats. :class:`TaskTextFormatter` (the text lines, with
  ``[task ID NAME attempt=N]`` before the message of a handler line) and
  :class:`JsonFormatter` (one JSON object per line, with the extra fields).
  :func:`configure_logging` puts the three together on the root logger; it is
  what ``taskserve worker --log-level LEVEL --log-format text|json`` runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from taskserve.context import current_task_or_none
from taskserve.hooks import TaskEvent, hookimpl
from taskserve.redaction import redact_url

__all__ = [
    "DEFAULT_LOG_FORMAT",
    "DEFAULT_LOG_LEVEL",
    "EVENT_LEVELS",
    "LIFECYCLE_FIELDS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "TASK_FIELDS",
    "TASK_LOGGER_NAME",
    "TASK_LOG_PLUGIN_NAME",
    "TEXT_FORMAT",
    "JsonFormatter",
    "TaskContextFilter",
    "TaskLogHooks",
    "TaskTextFormatter",
    "add_logging_arguments",
    "configure_logging",
    "log_task_event",
]

TASK_LOGGER_NAME = "taskserve.tasks"
"""The logger of the lifecycle lines."""

TASK_LOG_PLUGIN_NAME = "taskserve.task_logs"
"""The name :class:`TaskLogHooks` is registered under with the plugin manager."""

TASK_FIELDS = ("task_id", "task_name", "queue", "attempt")
"""The record attributes naming a task: set on lifecycle records, and by
:class:`TaskContextFilter` on every record emitted while a handler runs."""

LIFECYCLE_FIELDS = (
    *TASK_FIELDS,
    "task_event",
    "adapter",
    "duration_s",
    "queue_wait_s",
    "retry_delay_s",
    "error_type",
    "error_message",
    "dead_letter_queue",
    "reason",
)
"""The attributes of every lifecycle record. ``task_event`` is the event
(``enqueued``, ``started``, ``retried``, ``succeeded``, ``failed``,
``dead_lettered``, ``cancelled``), ``duration_s`` the attempt's run time (on
the events that end one), ``attempt`` 0 where no attempt is concerned (an
enqueue, a cancel by a producer)."""

EVENT_LEVELS: dict[str, int] = {
    "enqueued": logging.INFO,
    "started": logging.INFO,
    "retried": logging.WARNING,
    "succeeded": logging.INFO,
    "failed": logging.ERROR,
    "dead_lettered": logging.WARNING,
    "cancelled": logging.INFO,
}
"""The level of each event's line."""

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_LOG_LEVEL = "WARNING"
DEFAULT_LOG_FORMAT = "text"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The layout of a text line."""

MAX_ERROR_TEXT = 500
"""Longest error message shown in a line's text (its field keeps it whole)."""

_HANDLER_NAME = "taskserve.logs"

task_logger = logging.getLogger(TASK_LOGGER_NAME)
if not any(isinstance(h, logging.NullHandler) for h in task_logger.handlers):
    task_logger.addHandler(logging.NullHandler())


# -- lifecycle lines ---------------------------------------------------------------------
def _one_line(text: str) -> str:
    """``text`` on one line, cut at :data:`MAX_ERROR_TEXT` characters."""
    flat = text.replace("\r", "\\r").replace("\n", "\\n")
    return flat if len(flat) <= MAX_ERROR_TEXT else flat[: MAX_ERROR_TEXT - 3] + "..."


def _describe(kind: str, event: TaskEvent, error_message: str | None) -> tuple[str, list[Any]]:
    """The line's %-template and its arguments."""
    text = "task %s"
    args: list[Any] = [event.task_id]
    if event.task_name is not None:
        text += " %s"
        args.append(event.task_name)
    text += " queue=%s"
    args.append(event.queue_name)
    if event.attempt:
        text += " attempt=%d"
        args.append(event.attempt)
    error = event.error
    if kind == "started":
        text += " started"
        if event.queue_wait_s is not None:
            text += " after %.2f s in the queue"
            args.append(event.queue_wait_s)
    elif kind in ("succeeded", "failed", "retried"):
        text += " raised" if kind == "retried" else f" {kind}"
        if kind == "retried" and error is not None:
            text += " %s: %s"
            args += [error.type, _one_line(error_message or "")]
        if event.run_time_s is not None:
            text += " in %.2f s" if kind == "succeeded" else " after %.2f s"
            args.append(event.run_time_s)
        if kind == "failed" and error is not None:
            text += ": %s: %s"
            args += [error.type, _one_line(error_message or "")]
        if kind == "retried" and event.retry_delay_s is not None:
            text += "; retry in %.2f s"
            args.append(event.retry_delay_s)
    elif kind == "dead_lettered":
        text += " dead-lettered to %s"
        args.append(event.dead_letter_queue)
        if error is not None:
            text += ": %s: %s"
            args += [error.type, _one_line(error_message or "")]
    elif kind == "cancelled":
        text += " cancelled"
        if not event.attempt:
            text += " before it started"  # a producer's cancel of a waiting task
        if event.run_time_s is not None:
            text += " after %.2f s"
            args.append(event.run_time_s)
        if event.reason:
            text += ": %s"
            args.append(event.reason)
    else:
        text += f" {kind}"
    return text, args


def log_task_event(kind: str, event: TaskEvent) -> None:
    """Write the lifecycle line of event ``kind`` (a hook's name without
    ``taskserve_task_``) to ``taskserve.tasks``, at the event's level from
    :data:`EVENT_LEVELS`; returns at once, building nothing, when that level
    is not enabled. Error messages and tracebacks are shown with the
    passwords of URLs hidden. Never raises for an event of a known kind."""
    level = EVENT_LEVELS.get(kind, logging.INFO)
    if not task_logger.isEnabledFor(level):
        return
    error = event.error
    message = redact_url(error.message) if error is not None else None
    text, args = _describe(kind, event, message)
    extra = {
        "task_id": event.task_id,
        "task_name": event.task_name,
        "queue": event.queue_name,
        "attempt": event.attempt,
        "task_event": kind,
        "adapter": event.adapter,
        "duration_s": event.run_time_s,
        "queue_wait_s": event.queue_wait_s,
        "retry_delay_s": event.retry_delay_s,
        "error_type": error.type if error is not None else None,
        "error_message": message,
        "dead_letter_queue": event.dead_letter_queue,
        "reason": event.reason,
    }
    record = task_logger.makeRecord(
        task_logger.name,
        level,
        __file__,
        0,
        text,
        tuple(args),
        None,
        func=f"taskserve_task_{kind}",
        extra=extra,
    )
    traceback = error.traceback.strip("\n") if error is not None else ""
    if kind == "failed" and "\n" in traceback:  # one line: only the error, already shown
        # Formatters append exc_text as they do a traceback of exc_info.
        record.exc_text = redact_url(traceback)
    task_logger.handle(record)


class TaskLogHooks:
    """The lifecycle hooks that write the lines of :func:`log_task_event`;
    registered by default (as :data:`TASK_LOG_PLUGIN_NAME`)."""

    @hookimpl
    def taskserve_task_enqueued(self, event: TaskEvent) -> None:
        """Log an accepted enqueue (INFO)."""
        log_task_event("enqueued", event)

    @hookimpl
    def taskserve_task_started(self, event: TaskEvent) -> None:
        """Log a started attempt with its wait in the queue (INFO)."""
        log_task_event("started", event)

    @hookimpl
    def taskserve_task_retried(self, event: TaskEvent) -> None:
        """Log a failed attempt that is retried, with its error and delay (WARNING)."""
        log_task_event("retried", event)

    @hookimpl
    def taskserve_task_succeeded(self, event: TaskEvent) -> None:
        """Log a success with its run time (INFO)."""
        log_task_event("succeeded", event)

    @hookimpl
    def taskserve_task_failed(self, event: TaskEvent) -> None:
        """Log a task failed for good, with its error and traceback (ERROR)."""
        log_task_event("failed", event)

    @hookimpl
    def taskserve_task_dead_lettered(self, event: TaskEvent) -> None:
        """Log a dead-letter record and its queue (WARNING)."""
        log_task_event("dead_lettered", event)

    @hookimpl
    def taskserve_task_cancelled(self, event: TaskEvent) -> None:
        """Log a task that became CANCELLED (INFO)."""
        log_task_event("cancelled", event)


# -- handler lines ---------------------------------------------------------------------------
class TaskContextFilter(logging.Filter):
    """Gives each record ``task_id``, ``task_name``, ``queue`` and ``attempt``:
    those of the task the emitting thread or coroutine runs, None outside a
    task. A record that already names a task (a lifecycle record, or one
    logged with ``extra={"task_id": ...}``) keeps its own. Drops nothing.

    Install it on a handler (a filter of a logger sees only that logger's own
    records, not those of its children)::

        handler = logging.StreamHandler()
        handler.addFilter(TaskContextFilter())
        logging.getLogger().addHandler(handler)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the task fields; always True."""
        fields = record.__dict__
        if fields.get("task_id") is None:
            context = current_task_or_none()
            if context is not None:
                fields["task_id"] = context.id
                fields["task_name"] = context.name
                fields["queue"] = context.queue_name
                fields["attempt"] = context.attempt
                return True
        for name in TASK_FIELDS:
            fields.setdefault(name, None)
        return True


# -- formats ---------------------------------------------------------------------------------
class TaskTextFormatter(logging.Formatter):
    """Text lines (:data:`TEXT_FORMAT` unless ``fmt`` is given); a record that
    names a task and is not a lifecycle line (which names it already) shows
    ``[task ID NAME attempt=N]`` before its message."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt or TEXT_FORMAT, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The line, with the task's tag before the message."""
        task_id = getattr(record, "task_id", None)
        if task_id is None or getattr(record, "task_event", None) is not None:
            return super().formatMessage(record)
        tag = f"[task {task_id}"
        name = getattr(record, "task_name", None)
        if name:
            tag += f" {name}"
        attempt = getattr(record, "attempt", None)
        if attempt:
            tag += f" attempt={attempt}"
        message = record.message
        record.message = f"{tag}] {message}"
        try:
            return super().formatMessage(record)
        finally:
            record.message = message


_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def _json_default(value: Any) -> str:
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (ISO 8601, UTC),
    ``level``, ``logger``, ``message``, then every extra attribute of the
    record whose value is not None (the task and lifecycle fields, anything
    passed with ``extra=``; a value JSON cannot hold is written as its
    ``str()``), ``traceback`` when the record carries one and ``stack`` for
    ``stack_info``. An extra attribute never replaces one of these keys."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if value is None or key in _RECORD_ATTRIBUTES or key.startswith("_"):
                continue
            document.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["traceback"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=_json_default)


def configure_logging(
    level: int | str = DEFAULT_LOG_LEVEL,
    fmt: str = DEFAULT_LOG_FORMAT,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Write every record of ``level`` and above to ``stream`` (standard error
    by default) in format ``fmt`` (``text`` or ``json``), with
    :class:`TaskContextFilter` installed: the root logger gets the handler and
    the level. A handler installed by an earlier call is replaced; other
    handlers are kept. Returns the handler.

    Raises ValueError for an unknown level or format.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format '{fmt}'; use one of {', '.join(LOG_FORMATS)}")
    if isinstance(level, str):
        level = level.upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"unknown log level '{level}'; use one of {', '.join(LOG_LEVELS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(TaskContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TaskTextFormatter())
    root = logging.getLogger()
    for previous in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(previous)
        previous.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-level`` and ``--log-format`` (what :func:`configure_logging`
    takes) to a worker's command line."""
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=DEFAULT_LOG_LEVEL,
        help=(
            f"log records of this level and above to standard error (default "
            f"{DEFAULT_LOG_LEVEL}; INFO shows a line per task event)"
        ),
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=DEFAULT_LOG_FORMAT,
        help="text lines, or one JSON object per line (default text)",
    )
