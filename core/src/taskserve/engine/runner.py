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
import ctypes
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
from taskserve.engine.progress import ProgressThrottle, check_progress
from taskserve.errors import (
    ArgumentBindingError,
    ConsumerLost,
    PayloadError,
    TaskCancelled,
    TaskTimeLimitExceeded,
    UndecodableMessage,
    UnknownTask,
)
from taskserve.hooks import TaskEvent
from taskserve.models import DeadLetter, DeadLetterKind, TaskError, TaskProgress
from taskserve.plugins import emit
from taskserve.policy import RetryPolicy, handler_policy
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
    ABANDONED = "abandoned"
    """The handler outlived its time limit by the grace; nothing was recorded
    and the task's lease was left to run out, so it is delivered again."""


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

    def record_progress(self, message: TaskMessage, attempt: int, progress: TaskProgress) -> bool:
        """Make ``progress`` the task's progress while this delivery runs it;
        return False when the store refused it (the task is not STARTED under
        this delivery's lease: finished, handed back or taken over; a terminal
        record never changes). Called for adapters that declare the
        ``progress`` capability, by the lease keeper and once when the handler
        returns, never in a handler's thread; an error is logged and never
        fails the task. By default: NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} keeps no progress reports")


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

    def __init__(self, context: TaskContext, time_limit_s: float | None = None) -> None:
        self.context = context
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.progress: ProgressThrottle | None = None
        self.time_limit_s = time_limit_s
        self.deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
        """Monotonic time at which the attempt is interrupted; None: no limit."""
        self.timed_out = False
        """Set once the time limit passed (the handler was interrupted)."""
        self.interrupted = False
        """Set once the interruption was sent (or was not needed)."""
        self.abandoned = False
        """Set once the handler outlived its limit by the grace."""
        self._guard = threading.Lock()
        self._thread_id: int | None = None

    def enter_thread(self) -> None:
        """The calling thread starts the sync handler: it may be interrupted
        from now on (at once if the limit already passed)."""
        with self._guard:
            if not self.timed_out:
                self._thread_id = threading.get_ident()
                return
        raise TaskTimeLimitExceeded

    def leave_thread(self) -> None:
        """The sync handler returned: no interruption reaches the thread after
        this, and one still pending is dropped."""
        with self._guard:
            thread_id, self._thread_id = self._thread_id, None
            if self.timed_out and thread_id is not None:
                _set_async_exc(thread_id, None)

    def interrupt(self) -> bool:
        """The time limit passed: cancel an async handler's asyncio task, or
        raise :class:`TaskTimeLimitExceeded` once in a sync handler's thread.

        Returns False when the thread was entering or leaving the handler just
        now: then call it again shortly.
        """
        self.timed_out = True
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._cancel_task)
            return True
        # Never wait here: a thread holding the guard is entering or leaving.
        if not self._guard.acquire(blocking=False):
            return False
        try:
            thread_id, self._thread_id = self._thread_id, None
            if thread_id is not None:
                _set_async_exc(thread_id, TaskTimeLimitExceeded)
        finally:
            self._guard.release()
        return True

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


def _set_async_exc(thread_id: int, exception: type[BaseException] | None) -> None:
    """Have ``exception`` raised in thread ``thread_id`` at its next bytecode
    (None drops one pending)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), None if exception is None else ctypes.py_object(exception)
    )


class TaskRunner:
    """Runs delivered tasks against the registered handlers of one adapter.

    With ``progress`` (the adapter declares the ``progress`` capability) the
    handlers' progress reports are written through the recorder, at most one
    per task every ``PROGRESS_WRITE_INTERVAL_S`` (:meth:`flush_progress`);
    without it they are checked and ignored, with one warning.

    Each task name is retried by the :class:`~taskserve.policy.RetryPolicy`
    of its handler: the options ``@task_handler`` stored on it over ``config``.

    Each attempt runs within the time limit of its task name (the handler's
    ``time_limit_s``, else ``config.task_time_limit_s``), checked by
    :meth:`check_time_limits`: at the limit an async handler is cancelled and
    a sync one gets :class:`~taskserve.TaskTimeLimitExceeded` in its thread,
    and the attempt fails with that error. A handler still running
    ``config.task_time_limit_grace_s`` later is abandoned: its task leaves
    :meth:`running_task_ids` (its lease is no longer renewed, so it is
    delivered again) and :attr:`healthy` turns False for good.
    """

    def __init__(
        self,
        config: TaskProcessorConfig,
        adapter_alias: str,
        handlers: Mapping[str, Handler],
        *,
        progress: bool = False,
    ) -> None:
        self.config = config
        self.adapter_alias = adapter_alias
        self.handlers = dict(handlers)
        self._default_policy = RetryPolicy.from_config(config)
        self._policies = {
            name: handler_policy(handler).resolve(config) for name, handler in self.handlers.items()
        }
        self._time_limits = {
            name: handler_policy(handler).time_limit(config)
            for name, handler in self.handlers.items()
        }
        self._overran = False
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._async_loop: _AsyncLoop | None = None
        self._runs: Counter[str] = Counter()
        self.writes_progress = progress
        """Whether progress reports are written (the ``progress`` capability)."""
        self._progress_ignored_warned = False

    # -- introspection used by consumers ---------------------------------
    def retry_policy(self, task_name: str) -> RetryPolicy:
        """The retry settings in force for tasks called ``task_name`` (the
        config's for a name without a handler)."""
        return self._policies.get(task_name, self._default_policy)

    @property
    def attempt_ceiling(self) -> int:
        """The largest attempt budget of any registered task name (the config's
        when none is registered): what a store may count up to when it begins a
        delivery before its task name is known. The budget of each name is
        checked in :meth:`process`."""
        return max(
            (policy.max_attempts for policy in self._policies.values()),
            default=self._default_policy.max_attempts,
        )

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
        """Ids of the tasks running now (their leases need extending); a task
        whose handler outlived its time limit by the grace is left out."""
        with self._lock:
            return [task_id for task_id, r in self._running.items() if not r.abandoned]

    def abandoned_task_ids(self) -> set[str]:
        """Ids of the running tasks whose handlers outlived their time limit by
        the grace period (a graceful stop does not wait for them)."""
        with self._lock:
            return {task_id for task_id, r in self._running.items() if r.abandoned}

    def time_limit(self, task_name: str) -> float | None:
        """The time limit in seconds of one attempt of ``task_name`` (the
        handler's ``time_limit_s``, else the config's); None for no limit."""
        if task_name in self._time_limits:
            return self._time_limits[task_name]
        return self.config.task_time_limit_s

    @property
    def healthy(self) -> bool:
        """False once a handler outlived its time limit by the grace period:
        its thread (or the async handlers' event loop) cannot be trusted, so
        the consumer must be replaced."""
        return not self._overran

    def check_time_limits(self) -> None:
        """Interrupt each running task whose time limit passed, and abandon
        each one still running ``task_time_limit_grace_s`` after it (the
        consumer's lease keeper calls this every tick)."""
        now = time.monotonic()
        with self._lock:
            limited = [
                r
                for r in self._running.values()
                if r.deadline is not None and now >= r.deadline and not r.abandoned
            ]
        for running in limited:
            assert running.deadline is not None
            if not running.interrupted:
                running.interrupted = running.interrupt()
                if running.interrupted:
                    logger.info(
                        "taskserve: task %s ('%s') reached its time limit of %gs; it is "
                        "interrupted",
                        running.context.id,
                        running.context.name,
                        running.time_limit_s,
                    )
            elif now >= running.deadline + self.config.task_time_limit_grace_s:
                with self._lock:
                    running.abandoned = True
                    self._overran = True
                logger.warning(
                    "taskserve: handler '%s' of task %s is still running %gs after its time "
                    "limit of %gs; its lease is no longer renewed, so the task is delivered "
                    "again to another consumer, and this consumer reports itself unhealthy",
                    running.context.name,
                    running.context.id,
                    self.config.task_time_limit_grace_s,
                    running.time_limit_s,
                )

    def flush_progress(self) -> None:
        """Write the pending progress report of each running task whose write
        interval has passed (the consumer's lease keeper calls this every tick);
        a failed write is logged, never raised."""
        with self._lock:
            throttles = [r.progress for r in self._running.values() if r.progress is not None]
        for throttle in throttles:
            throttle.flush()

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
        max_attempts = self.retry_policy(message.name).max_attempts
        if attempt > max_attempts:
            error = TaskError.from_exception(
                ConsumerLost(
                    f"task '{message.name}' was delivered {attempt} times; its consumer "
                    f"died during the previous attempts and the budget of "
                    f"{max_attempts} attempts is spent"
                )
            )
            self._fail(message, error, attempt - 1, recorder)
            return Outcome.FAILED
        if not recorder.mark_started(message, attempt):
            return Outcome.SKIPPED
        if message.expires_at is not None and time.time() > message.expires_at:
            # Celery's ``expires``: a task delivered after it expired is not run.
            # The cancelled event's log line (taskserve.tasks) gives the reason.
            recorder.record_cancelled(message, attempt)
            emit("cancelled", self._event(message, attempt, reason="expired before it ran"))
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
        progress = (
            ProgressThrottle(message.id, lambda p: recorder.record_progress(message, attempt, p))
            if self.writes_progress
            else None
        )
        context = TaskContext(
            id=message.id,
            name=message.name,
            queue_name=message.queue_name,
            attempt=attempt,
            _report=self._progress_reporter(message, attempt, progress),
        )
        running = _Running(context, self.time_limit(message.name))
        running.progress = progress
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
            self._end_progress(running)
            if context.cancelled:
                raise TaskCancelled(f"task {message.id} was cancelled")
            if running.timed_out:
                raise TaskTimeLimitExceeded
            dumps_json(result, f"the result of task '{message.name}'")
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self._end_progress(running)
            run_time = time.monotonic() - started
            if context.cancelled:
                recorder.record_cancelled(message, attempt)
                emit("cancelled", self._event(message, attempt, run_time_s=run_time))
                return Outcome.CANCELLED
            if running.abandoned:
                logger.warning(
                    "taskserve: abandoned handler '%s' of task %s ended %.1fs past its time "
                    "limit of %gs; nothing is recorded, the task is delivered again",
                    message.name,
                    message.id,
                    run_time - (running.time_limit_s or 0.0),
                    running.time_limit_s,
                )
                return Outcome.ABANDONED
            if running.timed_out:
                exc = self._time_limit_error(message, running, exc)
            return self._handle_error(exc, message, attempt, run_time, recorder)
        finally:
            with self._lock:
                self._running.pop(message.id, None)
        run_time = time.monotonic() - started
        recorder.record_success(message, result, attempt)
        emit("succeeded", self._event(message, attempt, run_time_s=run_time))
        return Outcome.SUCCEEDED

    @staticmethod
    def _time_limit_error(
        message: TaskMessage, running: _Running, exc: BaseException
    ) -> TaskTimeLimitExceeded:
        """The error an attempt interrupted at its time limit fails with."""
        error = TaskTimeLimitExceeded(
            f"task {message.id} ('{message.name}') exceeded its time limit of "
            f"{running.time_limit_s:g}s"
        )
        if not isinstance(exc, TaskTimeLimitExceeded):
            error.__cause__ = exc
        return error

    def _progress_reporter(
        self, message: TaskMessage, attempt: int, throttle: ProgressThrottle | None
    ) -> Callable[[Any, Any, Any], None]:
        """What the context's ``report_progress`` calls: check the report, keep it
        for the next write and tell the ``progress`` hooks."""

        def report(fraction: Any, text: Any, data: Any) -> None:
            progress = check_progress(fraction, text, data)
            if throttle is None:
                self._progress_ignored()
            elif throttle.report(progress):
                emit("progress", self._event(message, attempt, progress=progress))

        return report

    def _progress_ignored(self) -> None:
        with self._lock:
            if self._progress_ignored_warned:
                return
            self._progress_ignored_warned = True
        logger.warning(
            "taskserve: adapter '%s' does not declare the 'progress' capability; the progress "
            "reports of its tasks are ignored",
            self.adapter_alias,
        )

    @staticmethod
    def _end_progress(running: _Running) -> None:
        """The handler has returned: write its pending report, drop later ones."""
        if running.progress is not None:
            running.progress.close()

    def _call(self, handler: Handler, message: TaskMessage, running: _Running) -> Any:
        if inspect.iscoroutinefunction(handler):
            return self._call_async(handler, message, running)
        token = set_current_task(running.context)
        try:
            running.enter_thread()
            try:
                return handler(*message.args, **message.kwargs)
            finally:
                running.leave_thread()
        finally:
            reset_current_task(token)

    def _call_async(self, handler: Handler, message: TaskMessage, running: _Running) -> Any:
        with self._lock:
            if self._async_loop is None:
                self._async_loop = _AsyncLoop()
            loop = self._async_loop.loop

        async def run_with_context() -> Any:
            running.task = asyncio.current_task()
            if running.context.cancelled or running.timed_out:
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
        policy = self.retry_policy(message.name)
        if policy.may_retry(exc) and attempt < policy.max_attempts:
            delay = retry_delay_s(policy, attempt)
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
        if message is not None:
            # An unknown task name: the task ends FAILURE without an attempt.
            emit("failed", self._event(message, 0, error=error))
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
            priority=message.priority if message else None,
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
