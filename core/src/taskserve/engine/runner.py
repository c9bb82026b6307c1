"""Running one delivered task: the flow every adapter's consumer shares.

An adapter's consumer fetches a message from its broker and hands it to
:meth:`TaskRunner.process` together with a :class:`DeliveryRecorder`, its own
object that persists each step. The runner decides what happens - unknown
name, attempt budget, cancellation, argument binding, sync or async call,
retry or dead letter - and calls the recorder; the adapter acknowledges the
message only after ``process`` returns. If a recorder method raises (a dead
letter could not be written, say), ``process`` raises too and the message must
not be acknowledged, so it is delivered again.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from taskserve.config import TaskProcessorConfig
from taskserve.context import TaskContext, reset_current_task, set_current_task
from taskserve.errors import (
    ArgumentBindingError,
    ConsumerLost,
    NonRetryableError,
    PayloadError,
    TaskCancelled,
    UndecodableMessage,
    UnknownTask,
)
from taskserve.hooks import TaskEvent
from taskserve.models import DeadLetter, DeadLetterKind, TaskError
from taskserve.plugins import emit
from taskserve.retry import retry_delay_s
from taskserve.serialization import TaskMessage, dumps_json, new_task_id

Handler = Callable[..., Any]

logger = logging.getLogger("taskserve.runner")


class Outcome(enum.StrEnum):
    """How one delivery ended."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNPROCESSABLE = "unprocessable"
    SKIPPED = "skipped"
    """The task was already cancelled or finished; the handler did not run."""


class DeliveryRecorder(ABC):
    """What an adapter persists while a delivered task runs.

    Every method must be durable when it returns; raising means the step was
    not recorded, and the adapter must then leave the message unacknowledged.
    Terminal states must never be overwritten (SPEC forward-only status).
    """

    @abstractmethod
    def mark_started(self, message: TaskMessage, attempt: int) -> bool:
        """Set STARTED with ``attempt``; return False if the task must not run
        because it is already CANCELLED, SUCCESS or FAILURE."""

    @abstractmethod
    def record_success(self, message: TaskMessage, result: Any, attempt: int) -> None:
        """Set SUCCESS with the (JSON-checked) ``result``."""

    @abstractmethod
    def record_retry(
        self, message: TaskMessage, error: TaskError, attempt: int, delay_s: float
    ) -> None:
        """Set RETRY and make the message deliverable again after ``delay_s``."""

    @abstractmethod
    def record_failure(
        self,
        message: TaskMessage,
        error: TaskError,
        attempt: int,
        dead_letter: DeadLetter | None,
    ) -> None:
        """Set FAILURE and, when ``dead_letter`` is given, store it in its queue."""

    @abstractmethod
    def record_cancelled(self, message: TaskMessage, attempt: int) -> None:
        """Set CANCELLED (a running task stopped after a cancel request)."""

    @abstractmethod
    def record_unprocessable(
        self, message: TaskMessage | None, error: TaskError, dead_letter: DeadLetter | None
    ) -> None:
        """Drop an unknown or undecodable message, keeping ``dead_letter`` if given;
        the task's status becomes FAILURE with ``error``."""


class _AsyncLoop:
    """One event loop on a daemon thread, shared by all async handlers of a runner."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="taskserve-async-handlers", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class _Running:
    """A task being run by this runner, with what it takes to cancel it."""

    def __init__(self, context: TaskContext) -> None:
        self.context = context
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None

    def cancel(self) -> None:
        """Set the cancel flag and, for an async handler, cancel its asyncio task.

        The flag is set first: a coroutine that has not taken its first step
        yet sees it and stops at once.
        """
        self.context.request_cancel()
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._cancel_task)

    def _cancel_task(self) -> None:
        if self.task is not None:
            self.task.cancel()


class TaskRunner:
    """Runs delivered tasks against the registered handlers of one adapter."""

    def __init__(
        self,
        config: TaskProcessorConfig,
        adapter_alias: str,
        handlers: Mapping[str, Handler],
    ) -> None:
        self.config = config
        self.adapter_alias = adapter_alias
        self.handlers = dict(handlers)
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._async_loop: _AsyncLoop | None = None
        self._runs: Counter[str] = Counter()

    # -- introspection used by consumers ---------------------------------
    @property
    def in_flight(self) -> int:
        """How many tasks this runner is running now."""
        return len(self._running)

    def runs_by_name(self) -> dict[str, int]:
        """How many times each task name's handler was started by this runner
        (retries included): Celery's ``total`` worker statistic."""
        with self._lock:
            return dict(self._runs)

    def running_task_ids(self) -> list[str]:
        """Ids of the tasks running now (their leases need extending)."""
        with self._lock:
            return list(self._running)

    def cancel_running(self, task_id: str) -> bool:
        """Interrupt a running task (async) or set its cancel flag (sync).

        Returns False when the task is not running here.
        """
        with self._lock:
            running = self._running.get(task_id)
        if running is None:
            return False
        running.cancel()
        return True

    def close(self) -> None:
        """Stop the event loop used by async handlers."""
        if self._async_loop is not None:
            self._async_loop.close()
            self._async_loop = None

    # -- the delivery flow -------------------------------------------------
    def process(
        self, payload: bytes | TaskMessage, attempt: int, recorder: DeliveryRecorder
    ) -> Outcome:
        """Run one delivery of a task to its end and record the outcome.

        ``attempt`` is the 1-based number of this delivery, crashed deliveries
        included. Returns the outcome once it is recorded; raises if recording
        failed (then the message must not be acknowledged).
        """
        message = self._decode(payload, recorder)
        if message is None:
            return Outcome.UNPROCESSABLE
        handler = self.handlers.get(message.name)
        if handler is None:
            # The registered names are not listed: the message reaches HTTP clients.
            error = TaskError.from_exception(
                UnknownTask(
                    f"no handler for task '{message.name[:200]}' is registered on queue "
                    f"'{self.config.queue_name}'"
                )
            )
            self._unprocessable(message, None, error, recorder)
            return Outcome.UNPROCESSABLE
        if attempt > self.config.max_attempts:
            error = TaskError.from_exception(
                ConsumerLost(
                    f"task '{message.name}' was delivered {attempt} times; its consumer "
                    f"died during the previous attempts and the budget of "
                    f"{self.config.max_attempts} attempts is spent"
                )
            )
            self._fail(message, error, attempt - 1, recorder)
            return Outcome.FAILED
        if not recorder.mark_started(message, attempt):
            return Outcome.SKIPPED
        if message.expires_at is not None and time.time() > message.expires_at:
            # Celery's ``expires``: a task delivered after it expired is not run.
            logger.info(
                "taskserve: task %s ('%s') expired before it ran; it is cancelled",
                message.id,
                message.name,
            )
            recorder.record_cancelled(message, attempt)
            emit("cancelled", self._event(message, attempt))
            return Outcome.CANCELLED
        emit(
            "started",
            self._event(message, attempt, queue_wait_s=max(time.time() - message.enqueued_at, 0.0)),
        )
        return self._run(handler, message, attempt, recorder)

    def fail(
        self, message: TaskMessage, error: TaskError, attempt: int, recorder: DeliveryRecorder
    ) -> None:
        """End ``message`` FAILURE with ``error`` without running it, with its
        failed dead letter, as after a last attempt (used for a task whose
        outcome could not be recorded, delivery after delivery)."""
        self._fail(message, error, attempt, recorder)

    def _decode(
        self, payload: bytes | TaskMessage, recorder: DeliveryRecorder
    ) -> TaskMessage | None:
        if isinstance(payload, TaskMessage):
            return payload
        try:
            return TaskMessage.from_bytes(payload)
        except PayloadError as e:
            error = TaskError.from_exception(UndecodableMessage(str(e)))
            self._unprocessable(None, payload, error, recorder)
            return None

    def _run(
        self, handler: Handler, message: TaskMessage, attempt: int, recorder: DeliveryRecorder
    ) -> Outcome:
        context = TaskContext(
            id=message.id, name=message.name, queue_name=message.queue_name, attempt=attempt
        )
        running = _Running(context)
        with self._lock:
            self._running[message.id] = running
            self._runs[message.name] += 1
        started = time.monotonic()
        try:
            try:
                inspect.signature(handler).bind(*message.args, **message.kwargs)
            except TypeError as e:
                raise ArgumentBindingError(
                    f"arguments do not fit handler '{message.name}': {e}"
                ) from e
            result = self._call(handler, message, running)
            if context.cancelled:
                raise TaskCancelled(f"task {message.id} was cancelled")
            dumps_json(result, f"the result of task '{message.name}'")
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            run_time = time.monotonic() - started
            if context.cancelled:
                recorder.record_cancelled(message, attempt)
                emit("cancelled", self._event(message, attempt, run_time_s=run_time))
                return Outcome.CANCELLED
            return self._handle_error(exc, message, attempt, run_time, recorder)
        finally:
            with self._lock:
                self._running.pop(message.id, None)
        run_time = time.monotonic() - started
        recorder.record_success(message, result, attempt)
        emit("succeeded", self._event(message, attempt, run_time_s=run_time))
        return Outcome.SUCCEEDED

    def _call(self, handler: Handler, message: TaskMessage, running: _Running) -> Any:
        if inspect.iscoroutinefunction(handler):
            return self._call_async(handler, message, running)
        token = set_current_task(running.context)
        try:
            return handler(*message.args, **message.kwargs)
        finally:
            reset_current_task(token)

    def _call_async(self, handler: Handler, message: TaskMessage, running: _Running) -> Any:
        with self._lock:
            if self._async_loop is None:
                self._async_loop = _AsyncLoop()
            loop = self._async_loop.loop

        async def run_with_context() -> Any:
            running.task = asyncio.current_task()
            if running.context.cancelled:
                raise asyncio.CancelledError
            token = set_current_task(running.context)
            try:
                return await handler(*message.args, **message.kwargs)
            finally:
                reset_current_task(token)

        running.loop = loop
        # The future ends only once the coroutine has really stopped, so a
        # cancelled handler's cleanup has run before CANCELLED is recorded.
        return asyncio.run_coroutine_threadsafe(run_with_context(), loop).result()

    def _handle_error(
        self,
        exc: BaseException,
        message: TaskMessage,
        attempt: int,
        run_time: float,
        recorder: DeliveryRecorder,
    ) -> Outcome:
        error = TaskError.from_exception(exc)
        retryable = not isinstance(exc, (NonRetryableError, PayloadError))
        if retryable and attempt < self.config.max_attempts:
            delay = retry_delay_s(self.config, attempt)
            recorder.record_retry(message, error, attempt, delay)
            emit(
                "retried",
                self._event(
                    message, attempt, error=error, run_time_s=run_time, retry_delay_s=delay
                ),
            )
            return Outcome.RETRYING
        self._fail(message, error, attempt, recorder, run_time)
        return Outcome.FAILED

    def _fail(
        self,
        message: TaskMessage,
        error: TaskError,
        attempt: int,
        recorder: DeliveryRecorder,
        run_time: float | None = None,
    ) -> None:
        dead_letter = self._dead_letter(DeadLetterKind.FAILED, message, None, error, attempt)
        recorder.record_failure(message, error, attempt, dead_letter)
        emit("failed", self._event(message, attempt, error=error, run_time_s=run_time))
        if dead_letter is not None:
            emit(
                "dead_lettered",
                self._event(
                    message, attempt, error=error, dead_letter_queue=dead_letter.queue_name
                ),
            )

    def _unprocessable(
        self,
        message: TaskMessage | None,
        raw: bytes | None,
        error: TaskError,
        recorder: DeliveryRecorder,
    ) -> None:
        dead_letter = self._dead_letter(DeadLetterKind.UNPROCESSABLE, message, raw, error, 0)
        recorder.record_unprocessable(message, error, dead_letter)
        if dead_letter is not None:
            event = TaskEvent(
                task_id=message.id if message else dead_letter.id,
                task_name=message.name if message else None,
                queue_name=self.config.queue_name,
                adapter=self.adapter_alias,
                error=error,
                dead_letter_queue=dead_letter.queue_name,
            )
            emit("dead_lettered", event)

    def _dead_letter(
        self,
        kind: DeadLetterKind,
        message: TaskMessage | None,
        raw: bytes | None,
        error: TaskError,
        attempts: int,
    ) -> DeadLetter | None:
        """The record to keep, exactly as enqueued; None if that queue is not configured."""
        queue = (
            self.config.failed_task_queue_name
            if kind is DeadLetterKind.FAILED
            else self.config.unprocessable_task_queue_name
        )
        if queue is None:
            return None
        return DeadLetter(
            id=new_task_id(),
            kind=kind,
            queue_name=queue,
            source_queue=self.config.queue_name,
            task_id=message.id if message else None,
            task_name=message.name if message else None,
            args=message.args if message else None,
            kwargs=message.kwargs if message else None,
            raw=None if message else raw,
            error=error,
            attempts=attempts,
            enqueued_at=message.enqueued_at if message else None,
        )

    def _event(self, message: TaskMessage, attempt: int, **fields: Any) -> TaskEvent:
        return TaskEvent(
            task_id=message.id,
            task_name=message.name,
            queue_name=message.queue_name or self.config.queue_name,
            adapter=self.adapter_alias,
            attempt=attempt,
            **fields,
        )
