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
import functools
import inspect
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from taskserve.batch import BatchItem, BatchResultError, batch_options
from taskserve.config import TaskProcessorConfig
from taskserve.context import TaskContext, reset_current_task, set_current_task
from taskserve.engine.batching import Batcher
from taskserve.engine.progress import ProgressThrottle, check_progress
from taskserve.errors import (
    ArgumentBindingError,
    ConfigError,
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


class _Call:
    """One handler call in progress - one task's, or one batch's - with what it
    takes to interrupt it at its time limit or stop it once it is cancelled."""

    def __init__(self, contexts: list[TaskContext], time_limit_s: float | None) -> None:
        self.contexts = contexts
        """The tasks the call runs for (one, or the tasks of a batch)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.time_limit_s = time_limit_s
        self.deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
        """Monotonic time at which the call is interrupted; None: no limit."""
        self.timed_out = False
        """Set once the time limit passed (the handler was interrupted)."""
        self.interrupted = False
        """Set once the interruption was sent (or was not needed)."""
        self.abandoned = False
        """Set once the handler outlived its limit by the grace."""
        self._guard = threading.Lock()
        self._thread_id: int | None = None

    @property
    def name(self) -> str:
        """The task name of the call."""
        return self.contexts[0].name

    @property
    def label(self) -> str:
        """What the call runs, for log lines: ``task <id>``, or ``the batch of
        <n> tasks <id>, ...``."""
        if len(self.contexts) == 1:
            return f"task {self.contexts[0].id}"
        ids = ", ".join(c.id for c in self.contexts)
        return f"the batch of {len(self.contexts)} tasks {ids}"

    @property
    def cancelled(self) -> bool:
        """Whether every task of the call was cancelled: only then is an async
        call cancelled (the other tasks of a batch still want their results)."""
        return all(c.cancelled for c in self.contexts)

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

    def stop_if_cancelled(self) -> None:
        """Cancel an async handler's asyncio task once every task of the call
        was cancelled (a sync handler polls its tasks' flags instead)."""
        if self.loop is not None and self.cancelled:
            self.loop.call_soon_threadsafe(self._cancel_task)

    def _cancel_task(self) -> None:
        if self.task is not None:
            self.task.cancel()


class _Running:
    """A task being run by this runner, with what it takes to cancel it."""

    def __init__(self, context: TaskContext, call: _Call | None) -> None:
        self.context = context
        self.call = call
        """The handler call running the task; None while a task of a batched
        name waits for its batch to start."""
        self.progress: ProgressThrottle | None = None

    @property
    def timed_out(self) -> bool:
        """Whether the task's call passed its time limit."""
        return self.call is not None and self.call.timed_out

    @property
    def abandoned(self) -> bool:
        """Whether the task's call outlived its time limit by the grace."""
        return self.call is not None and self.call.abandoned

    def cancel(self) -> None:
        """Set the cancel flag and, for an async handler whose every task is now
        cancelled, cancel its asyncio task.

        The flag is set first: a coroutine that has not taken its first step
        yet sees it and stops at once.
        """
        self.context.request_cancel()
        if self.call is not None:
            self.call.stop_if_cancelled()


class _BatchMember:
    """One task of a batch: its run, its item, and its slot of the result."""

    __slots__ = ("error", "item", "result", "running")

    def __init__(self, running: _Running, item: BatchItem) -> None:
        self.running = running
        self.item = item
        self.result: Any = None
        self.error: BaseException | None = BatchResultError(
            f"the batch of task {item.task_id} ended without a result for it"
        )

    def take(self, result: Any) -> None:
        """This task's slot of the call's result: an exception instance fails it."""
        if isinstance(result, BaseException):
            self.error = result
        else:
            self.result, self.error = result, None

    def fail(self, error: BaseException) -> None:
        """The whole call failed with ``error``."""
        self.error = error

    @staticmethod
    def cancelled(member: _BatchMember) -> bool:
        """Whether ``member``'s task was cancelled."""
        return member.running.context.cancelled


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

    A handler with batch options (``@task_handler(batch_max_size=...)``, see
    :mod:`taskserve.batch`) runs the tasks of its name in batches: each
    delivery's thread takes the task through :meth:`process` as any other -
    its own start, outcome, retry or dead letter, hooks and log lines - but
    the handler call itself is shared with the other tasks of its batch
    (:class:`~taskserve.engine.batching.Batcher`). The batch's call runs under
    the handler's time limit, counted from the call's start; at the limit
    every task of the batch fails with ``TaskTimeLimitExceeded``. A batch
    holds at most the consumer's concurrency (:meth:`fit_batches`).
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
        self._batchers: dict[str, Batcher[_BatchMember]] = {}
        for name, handler in self.handlers.items():
            options = batch_options(handler)
            if options is not None:
                _check_batched_signature(name, handler)
                self._batchers[name] = Batcher(
                    options.max_size,
                    options.wait_timeout_s,
                    functools.partial(self._run_batch, handler, name),
                    _BatchMember.cancelled,
                )
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
        """Interrupt each running call (of one task, or of a batch) whose time
        limit passed, and abandon each one still running
        ``task_time_limit_grace_s`` after it (the consumer's lease keeper calls
        this every tick)."""
        now = time.monotonic()
        with self._lock:
            calls = {id(r.call): r.call for r in self._running.values() if r.call is not None}
        limited = [
            c
            for c in calls.values()
            if c.deadline is not None and now >= c.deadline and not c.abandoned
        ]
        for call in limited:
            assert call.deadline is not None
            if not call.interrupted:
                call.interrupted = call.interrupt()
                if call.interrupted:
                    logger.info(
                        "taskserve: %s ('%s') reached its time limit of %gs; it is interrupted",
                        call.label,
                        call.name,
                        call.time_limit_s,
                    )
            elif now >= call.deadline + self.config.task_time_limit_grace_s:
                with self._lock:
                    call.abandoned = True
                    self._overran = True
                logger.warning(
                    "taskserve: handler '%s' of %s is still running %gs after its time "
                    "limit of %gs; its lease is no longer renewed, so the task is delivered "
                    "again to another consumer, and this consumer reports itself unhealthy",
                    call.name,
                    call.label,
                    self.config.task_time_limit_grace_s,
                    call.time_limit_s,
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
        batcher = self._batchers.get(running.context.name)
        if batcher is not None:
            batcher.wake()  # a task waiting for its batch to start leaves it
        return True

    def fit_batches(self, concurrency: int) -> None:
        """Hold every batch to at most ``concurrency`` tasks: a consumer never
        holds more deliveries than that, so a batch waiting for more would wait
        in vain. Logs a warning for each handler whose ``batch_max_size`` is
        larger (the consumer calls this once, when it starts)."""
        for name, batcher in self._batchers.items():
            options = batch_options(self.handlers[name])
            assert options is not None
            if options.max_size > concurrency:
                logger.warning(
                    "taskserve: handler '%s' has batch_max_size=%d, but the consumer of queue "
                    "'%s' holds at most %d tasks at once (consumer_concurrency, by default "
                    "Serve's max_ongoing_requests); its batches hold at most %d tasks",
                    name,
                    options.max_size,
                    self.config.queue_name,
                    concurrency,
                    concurrency,
                )
            batcher.max_size = max(min(options.max_size, concurrency), 1)

    def flush_batches(self) -> None:
        """Start every batch that waits for more tasks now, and every later one
        at once (the consumer stops fetching: no more tasks will join)."""
        for batcher in self._batchers.values():
            batcher.flush()

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
        batched = message.name in self._batchers
        running = _Running(
            context, None if batched else _Call([context], self.time_limit(message.name))
        )
        running.progress = progress
        with self._lock:
            self._running[message.id] = running
            self._runs[message.name] += 1
        started = time.monotonic()
        try:
            result, error = self._attempt(handler, message, running)
            self._end_progress(running)
            if error is None:
                error = self._result_error(message, running, result)
            if error is not None:
                run_time = time.monotonic() - started
                return self._attempt_failed(error, message, attempt, run_time, running, recorder)
        finally:
            with self._lock:
                self._running.pop(message.id, None)
        run_time = time.monotonic() - started
        recorder.record_success(message, result, attempt)
        emit("succeeded", self._event(message, attempt, run_time_s=run_time))
        return Outcome.SUCCEEDED

    def _attempt(
        self, handler: Handler, message: TaskMessage, running: _Running
    ) -> tuple[Any, BaseException | None]:
        """Run the handler for ``message``: (its result, None), or (None, the
        error it raised). A task of a batched name waits for its batch and
        takes its slot of the batch's call."""
        batcher = self._batchers.get(message.name)
        if batcher is not None:
            item = BatchItem(
                args=tuple(message.args), kwargs=dict(message.kwargs), task=running.context
            )
            member = _BatchMember(running, item)
            if not batcher.join(member):
                return None, TaskCancelled(
                    f"task {message.id} was cancelled before its batch started"
                )
            return member.result, member.error
        assert running.call is not None
        try:
            try:
                inspect.signature(handler).bind(*message.args, **message.kwargs)
            except TypeError as e:
                raise ArgumentBindingError(
                    f"arguments do not fit handler '{message.name}': {e}"
                ) from e
            call = running.call
            return self._invoke(handler, message.args, message.kwargs, call, running.context), None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            return None, exc

    def _run_batch(self, handler: Handler, name: str, members: list[_BatchMember]) -> None:
        """Run one batch of ``name`` (in the thread of its first task): one call
        of ``handler`` with the items of ``members``, then each member's slot of
        the result, or the call's error for all of them."""
        call = _Call([m.running.context for m in members], self.time_limit(name))
        with self._lock:
            for member in members:
                member.running.call = call
        try:
            result = self._invoke(handler, [[m.item for m in members]], {}, call, None)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            for member in members:
                member.fail(exc)
            return
        if not isinstance(result, (list, tuple)) or len(result) != len(members):
            shown = (
                f"{len(result)} results"
                if isinstance(result, (list, tuple))
                else f"a {type(result).__name__}"
            )
            error = BatchResultError(
                f"batched handler '{name}' returned {shown} for a batch of {len(members)} "
                "tasks; it must return a list with one result per task, in the order of "
                "its items"
            )
            for member in members:
                member.fail(error)
            return
        for member, slot in zip(members, result, strict=True):
            member.take(slot)

    @staticmethod
    def _result_error(message: TaskMessage, running: _Running, result: Any) -> BaseException | None:
        """Why the attempt that returned ``result`` did not succeed (cancelled,
        past its time limit, a result that is not JSON); None if it did."""
        if running.context.cancelled:
            return TaskCancelled(f"task {message.id} was cancelled")
        if running.timed_out:
            return TaskTimeLimitExceeded()
        try:
            dumps_json(result, f"the result of task '{message.name}'")
        except Exception as e:
            return e
        return None

    def _attempt_failed(
        self,
        exc: BaseException,
        message: TaskMessage,
        attempt: int,
        run_time: float,
        running: _Running,
        recorder: DeliveryRecorder,
    ) -> Outcome:
        """Record an attempt that ended with ``exc``: cancelled, abandoned, or
        failed (retried or dead-lettered)."""
        if running.context.cancelled:
            recorder.record_cancelled(message, attempt)
            emit("cancelled", self._event(message, attempt, run_time_s=run_time))
            return Outcome.CANCELLED
        if running.abandoned:
            assert running.call is not None
            logger.warning(
                "taskserve: abandoned handler '%s' of task %s ended %.1fs past its time "
                "limit of %gs; nothing is recorded, the task is delivered again",
                message.name,
                message.id,
                run_time - (running.call.time_limit_s or 0.0),
                running.call.time_limit_s,
            )
            return Outcome.ABANDONED
        if running.timed_out:
            exc = self._time_limit_error(message, running, exc)
        return self._handle_error(exc, message, attempt, run_time, recorder)

    @staticmethod
    def _time_limit_error(
        message: TaskMessage, running: _Running, exc: BaseException
    ) -> TaskTimeLimitExceeded:
        """The error an attempt interrupted at its time limit fails with."""
        call = running.call
        assert call is not None
        batch = (
            f" (the call of its batch of {len(call.contexts)} tasks)"
            if len(call.contexts) > 1
            else ""
        )
        error = TaskTimeLimitExceeded(
            f"task {message.id} ('{message.name}') exceeded its time limit of "
            f"{call.time_limit_s:g}s{batch}"
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

    def _invoke(
        self,
        handler: Handler,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        call: _Call,
        context: TaskContext | None,
    ) -> Any:
        """Call ``handler(*args, **kwargs)`` as ``call``, with ``context`` as the
        current task (None for a batch: each item carries its own)."""
        if inspect.iscoroutinefunction(handler):
            return self._invoke_async(handler, args, kwargs, call, context)
        token = set_current_task(context)
        try:
            call.enter_thread()
            try:
                return handler(*args, **kwargs)
            finally:
                call.leave_thread()
        finally:
            reset_current_task(token)

    def _invoke_async(
        self,
        handler: Handler,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        call: _Call,
        context: TaskContext | None,
    ) -> Any:
        with self._lock:
            if self._async_loop is None:
                self._async_loop = _AsyncLoop()
            loop = self._async_loop.loop

        async def run_with_context() -> Any:
            call.task = asyncio.current_task()
            if call.cancelled or call.timed_out:
                raise asyncio.CancelledError
            token = set_current_task(context)
            try:
                return await handler(*args, **kwargs)
            finally:
                reset_current_task(token)

        call.loop = loop
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


def _check_batched_signature(name: str, handler: Handler) -> None:
    """A batched handler must take one argument, the list of its batch's items."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # no signature to check (a builtin): the call will tell
    try:
        signature.bind([])
    except TypeError as e:
        raise ConfigError(
            f"batched handler '{name}' must take one argument, the list of its tasks' "
            f"BatchItems (def {name}(self, items)); its signature {signature} does not: {e}"
        ) from e
