"""Batched handlers (SPEC §11.6): the options of ``@task_handler``, the batcher
that gathers deliveries into batches, and the runner giving each task of a
batch its own outcome - checked with in-memory recorders and threads (core
logic only; the conformance suite's batching group runs the same promises on
every adapter and broker), and once end to end on a real sqlite queue."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from taskserve import (
    BatchItem,
    BatchResultError,
    Capability,
    ConfigError,
    DeadLetter,
    DeliveryRecorder,
    Outcome,
    TaskError,
    TaskMessage,
    TaskProcessorConfig,
    TaskRunner,
    TaskState,
    UnsupportedCapability,
    current_task,
    instantiate_adapter_from_config,
)
from taskserve.adapters.sqlite.adapter import SqliteAdapter
from taskserve.batch import DEFAULT_BATCH_WAIT_TIMEOUT_S, BatchOptions, batch_options
from taskserve.engine.batching import Batcher
from taskserve.serialization import build_message
from taskserve.serve import task_handler

WAIT_S = 10.0
"""Bound of every wait for a thread or a task in these tests."""


# -- the decorator's options ----------------------------------------------------------
def test_without_options_a_handler_is_not_batched() -> None:
    @task_handler(name="plain")
    def plain(x: int) -> int:
        return x

    assert batch_options(plain) is None


def test_options_are_kept_with_the_default_wait() -> None:
    @task_handler(name="embed", batch_max_size=8)
    def embed(items: list[BatchItem]) -> list[Any]:
        return []

    @task_handler(batch_max_size=2, batch_wait_timeout_s=0)
    def waits_not(items: list[BatchItem]) -> list[Any]:
        return []

    assert batch_options(embed) == BatchOptions(8, DEFAULT_BATCH_WAIT_TIMEOUT_S)
    assert batch_options(waits_not) == BatchOptions(2, 0.0)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"batch_max_size": 0}, ConfigError, "batch_max_size must be at least 1"),
        ({"batch_max_size": -3}, ConfigError, "batch_max_size must be at least 1"),
        ({"batch_max_size": 2.0}, TypeError, "batch_max_size must be a whole number"),
        ({"batch_max_size": True}, TypeError, "batch_max_size must be a whole number"),
        ({"batch_max_size": "4"}, TypeError, "batch_max_size must be a whole number"),
        ({"batch_max_size": 4, "batch_wait_timeout_s": -0.1}, ConfigError, "at least 0"),
        ({"batch_max_size": 4, "batch_wait_timeout_s": float("inf")}, ConfigError, "finite"),
        ({"batch_max_size": 4, "batch_wait_timeout_s": float("nan")}, ConfigError, "finite"),
        ({"batch_max_size": 4, "batch_wait_timeout_s": "1"}, TypeError, "number of seconds"),
        ({"batch_wait_timeout_s": 1.0}, ConfigError, "give batch_max_size too"),
    ],
)
def test_bad_options_are_refused_naming_the_handler(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    decorate = task_handler(name="embed", **options)
    with pytest.raises(error, match=match) as raised:
        decorate(lambda items: items)
    assert "'embed'" in str(raised.value)


def test_a_batched_handler_must_take_one_list() -> None:
    @task_handler(batch_max_size=2)
    def two(a: Any, b: Any) -> list[Any]:
        return []

    with pytest.raises(ConfigError, match="batched handler 'two' must take one argument"):
        TaskRunner(_config(), "test", {"two": two})


def test_an_adapter_without_the_capability_refuses_a_batched_handler(tmp_path: Path) -> None:
    class NoBatching(SqliteAdapter):
        capabilities = frozenset(Capability) - {Capability.BATCHING}

    adapter = NoBatching(_config(adapter_config={"path": str(tmp_path / "q.db")}))
    with pytest.raises(UnsupportedCapability, match="batching"):
        adapter.register_task_handle(_echo_batch(2), "echo")
    adapter.register_task_handle(lambda x: x, "plain")  # others are fine
    adapter.shutdown()


# -- the batcher --------------------------------------------------------------------
class _Member:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cancelled = False
        self.batch: list[str] | None = None


class _Gathering:
    """A batcher of :class:`_Member`, with members joining from threads."""

    def __init__(self, max_size: int, wait_s: float) -> None:
        self.calls: list[list[str]] = []
        self.runners: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.batcher: Batcher[_Member] = Batcher(max_size, wait_s, self._run, lambda m: m.cancelled)
        self.pool = ThreadPoolExecutor(8)

    def _run(self, members: list[_Member]) -> None:
        names = [m.name for m in members]
        self.calls.append(names)
        self.runners.append(threading.current_thread().name)
        self.release.wait(WAIT_S)
        for member in members:
            member.batch = names

    def join(self, member: _Member) -> Any:
        return self.pool.submit(self.batcher.join, member)

    def close(self) -> None:
        self.release.set()
        self.pool.shutdown(wait=True)


@pytest.fixture
def gathering() -> Iterator[Callable[[int, float], _Gathering]]:
    made: list[_Gathering] = []

    def make(max_size: int, wait_s: float) -> _Gathering:
        made.append(_Gathering(max_size, wait_s))
        return made[-1]

    yield make
    for one in made:
        one.close()


def _until(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"{what} (waited {WAIT_S}s)"
        time.sleep(0.005)


def test_a_full_batch_starts_at_once_and_the_next_opens(
    gathering: Callable[[int, float], _Gathering],
) -> None:
    g = gathering(3, WAIT_S * 10)  # only a full batch can start within the test
    members = [_Member(f"m{i}") for i in range(4)]
    futures = [g.join(m) for m in members[:3]]
    assert all(f.result(WAIT_S) for f in futures)
    assert len(g.calls) == 1 and sorted(g.calls[0]) == ["m0", "m1", "m2"]
    assert all(m.batch == g.calls[0] for m in members[:3])
    late = g.join(members[3])
    g.batcher.flush()
    assert late.result(WAIT_S)
    assert g.calls[1] == ["m3"], "a batch that closed took a later member"


def test_a_batch_that_is_not_full_starts_when_the_wait_is_over(
    gathering: Callable[[int, float], _Gathering],
) -> None:
    g = gathering(10, 0.2)
    first = g.join(_Member("a"))
    _until(lambda: g.batcher._open is not None, "the first member did not open a batch")
    second = g.join(_Member("b"))
    assert first.result(WAIT_S) and second.result(WAIT_S)
    assert [sorted(c) for c in g.calls] == [["a", "b"]]


def test_the_thread_of_the_first_member_runs_the_batch(
    gathering: Callable[[int, float], _Gathering],
) -> None:
    g = gathering(2, WAIT_S * 10)
    names: dict[str, str] = {}

    def join_as(member: _Member) -> bool:
        names[member.name] = threading.current_thread().name
        return g.batcher.join(member)

    first = g.pool.submit(join_as, _Member("first"))
    _until(lambda: g.batcher._open is not None, "the first member did not open a batch")
    second = g.pool.submit(join_as, _Member("second"))
    assert first.result(WAIT_S) and second.result(WAIT_S)
    assert g.calls == [["first", "second"]]
    assert g.runners == [names["first"]]


def test_a_member_cancelled_while_its_batch_is_open_leaves_at_once(
    gathering: Callable[[int, float], _Gathering],
) -> None:
    g = gathering(3, WAIT_S * 10)
    cancelled, kept = _Member("cancelled"), _Member("kept")
    leaving = g.join(cancelled)
    staying = g.join(kept)
    _until(lambda: g.batcher._open and len(g.batcher._open.members) == 2, "members did not join")
    cancelled.cancelled = True
    g.batcher.wake()
    assert leaving.result(WAIT_S) is False, "the cancelled member did not leave its batch"
    assert not g.calls and not staying.done()
    g.batcher.flush()
    assert staying.result(WAIT_S) is True
    assert g.calls == [["kept"]]


def test_a_member_cancelled_as_the_batch_closes_is_left_out(
    gathering: Callable[[int, float], _Gathering],
) -> None:
    g = gathering(2, WAIT_S * 10)
    cancelled = _Member("cancelled")
    cancelled_first = g.join(cancelled)
    _until(lambda: g.batcher._open is not None, "the first member did not open a batch")
    cancelled.cancelled = True  # no wake: it notices only when the batch closes
    second = g.join(_Member("second"))
    assert cancelled_first.result(WAIT_S) is False
    assert second.result(WAIT_S) is True
    assert g.calls == [["second"]], "the batch ran with a cancelled task or without its member"


def test_a_batch_of_cancelled_members_only_never_runs(
    gathering: Callable[[int, float], _Gathering],
) -> None:
    g = gathering(2, 0.05)
    member = _Member("only")
    member.cancelled = True
    assert g.join(member).result(WAIT_S) is False
    assert g.calls == []


def test_flush_starts_the_waiting_batch_and_every_later_one_at_once(
    gathering: Callable[[int, float], _Gathering],
) -> None:
    g = gathering(5, WAIT_S * 10)
    waiting = g.join(_Member("waiting"))
    _until(lambda: g.batcher._open is not None, "the member did not open a batch")
    g.batcher.flush()
    assert waiting.result(WAIT_S)
    assert g.join(_Member("later")).result(WAIT_S)
    assert g.calls == [["waiting"], ["later"]]


def test_a_smaller_max_size_closes_an_open_batch(
    gathering: Callable[[int, float], _Gathering],
) -> None:
    g = gathering(8, WAIT_S * 10)
    futures = [g.join(_Member(f"m{i}")) for i in range(2)]
    _until(lambda: g.batcher._open and len(g.batcher._open.members) == 2, "members did not join")
    g.batcher.max_size = 2
    assert all(f.result(WAIT_S) for f in futures)
    assert [sorted(c) for c in g.calls] == [["m0", "m1"]]
    with pytest.raises(ValueError, match="at least 1"):
        g.batcher.max_size = 0


# -- the runner: one call, an outcome per task ----------------------------------------------
class Recorder(DeliveryRecorder):
    """Records one delivery's steps."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Any]] = []

    def mark_started(self, message: TaskMessage, attempt: int) -> bool:
        return True

    def record_success(self, message: TaskMessage, result: Any, attempt: int) -> None:
        self.steps.append(("success", result))

    def record_retry(
        self, message: TaskMessage, error: TaskError, attempt: int, delay_s: float
    ) -> None:
        self.steps.append(("retry", error))

    def record_failure(
        self, message: TaskMessage, error: TaskError, attempt: int, dead_letter: DeadLetter | None
    ) -> None:
        self.steps.append(("failure", error))

    def record_cancelled(self, message: TaskMessage, attempt: int) -> None:
        self.steps.append(("cancelled", None))

    def record_unprocessable(
        self, message: TaskMessage | None, error: TaskError, dead_letter: DeadLetter | None
    ) -> None:
        self.steps.append(("unprocessable", error))


def _config(**fields: Any) -> TaskProcessorConfig:
    base: dict[str, Any] = {
        "queue_name": "q",
        "max_retries": 1,
        "retry_backoff_s": 0.01,
        "retry_jitter": False,
        "failed_task_queue_name": "failed",
    }
    return TaskProcessorConfig(**(base | fields))


def _message(name: str, *args: Any, **kwargs: Any) -> TaskMessage:
    return build_message(
        task_name=name, args=args, kwargs=kwargs, queue_name="q", max_payload_bytes=10_000
    )


def _echo_batch(size: int, seen: list[list[str]] | None = None) -> Callable[..., Any]:
    """A batched handler returning ``args[0] * 10`` per item, or the exception
    instance an item's ``fail`` kwarg names."""

    @task_handler(batch_max_size=size, batch_wait_timeout_s=WAIT_S * 10)
    def echo(items: list[BatchItem]) -> list[Any]:
        if seen is not None:
            seen.append([item.task_id for item in items])
        return [
            ValueError(f"item {item.args[0]} fails")
            if item.kwargs.get("fail")
            else item.args[0] * 10
            for item in items
        ]

    return echo


def _process_together(
    runner: TaskRunner, messages: list[TaskMessage], attempt: int = 1
) -> list[tuple[Outcome, Recorder]]:
    """Deliver ``messages`` at once, each in a thread of its own, as a consumer does."""
    recorders = [Recorder() for _ in messages]
    with ThreadPoolExecutor(len(messages)) as pool:
        futures = [
            pool.submit(runner.process, m, attempt, r)
            for m, r in zip(messages, recorders, strict=True)
        ]
        outcomes = [f.result(WAIT_S) for f in futures]
    return list(zip(outcomes, recorders, strict=True))


@pytest.fixture
def runners() -> Iterator[Callable[..., TaskRunner]]:
    made: list[TaskRunner] = []

    def make(handlers: dict[str, Callable[..., Any]], **config: Any) -> TaskRunner:
        made.append(TaskRunner(_config(**config), "test", handlers))
        return made[-1]

    yield make
    for runner in made:
        runner.close()


def test_each_task_gets_its_own_slot_of_one_call(runners: Callable[..., TaskRunner]) -> None:
    seen: list[list[str]] = []
    runner = runners({"echo": _echo_batch(3, seen)})
    messages = [_message("echo", i) for i in range(3)]
    done = _process_together(runner, messages)
    assert len(seen) == 1 and sorted(seen[0]) == sorted(m.id for m in messages)
    for message, (outcome, recorder) in zip(messages, done, strict=True):
        assert outcome is Outcome.SUCCEEDED
        assert recorder.steps == [("success", message.args[0] * 10)]


def test_an_exception_in_a_slot_fails_that_task_alone(runners: Callable[..., TaskRunner]) -> None:
    runner = runners({"echo": _echo_batch(3)})
    messages = [_message("echo", 1), _message("echo", 2, fail=True), _message("echo", 3)]
    done = _process_together(runner, messages)
    assert [o for o, _ in done] == [Outcome.SUCCEEDED, Outcome.RETRYING, Outcome.SUCCEEDED]
    [(step, error)] = done[1][1].steps
    assert step == "retry" and error.type == "ValueError" and error.message == "item 2 fails"
    last = _process_together(runners({"echo": _echo_batch(1)}), [messages[1]], attempt=2)
    assert last[0][0] is Outcome.FAILED, "the last attempt of a failing slot was not a failure"


def test_a_raised_exception_fails_every_task_one_attempt_each(
    runners: Callable[..., TaskRunner],
) -> None:
    @task_handler(batch_max_size=2, batch_wait_timeout_s=WAIT_S * 10)
    def broken(items: list[BatchItem]) -> list[Any]:
        raise RuntimeError("the model is down")

    runner = runners({"broken": broken})
    first = _process_together(runner, [_message("broken", 1), _message("broken", 2)])
    assert [o for o, _ in first] == [Outcome.RETRYING] * 2
    assert all(r.steps[0][1].message == "the model is down" for _, r in first)
    last = _process_together(runner, [_message("broken", 1), _message("broken", 2)], attempt=2)
    assert [o for o, _ in last] == [Outcome.FAILED] * 2


@pytest.mark.parametrize("returned", [[1], [1, 2, 3], {"a": 1}, None])
def test_a_result_of_the_wrong_shape_fails_every_task_saying_so(
    runners: Callable[..., TaskRunner], returned: Any
) -> None:
    @task_handler(batch_max_size=2, batch_wait_timeout_s=WAIT_S * 10)
    def wrong(items: list[BatchItem]) -> Any:
        return returned

    runner = runners({"wrong": wrong})
    done = _process_together(runner, [_message("wrong", 1), _message("wrong", 2)])
    for outcome, recorder in done:
        assert outcome is Outcome.FAILED, "a wrong result shape was retried or succeeded"
        [(_, error)] = recorder.steps
        assert error.type.endswith("BatchResultError")
        assert "for a batch of 2 tasks" in error.message and "one result per task" in error.message
    assert issubclass(BatchResultError, Exception)


def test_an_async_batched_handler(runners: Callable[..., TaskRunner]) -> None:
    @task_handler(batch_max_size=2, batch_wait_timeout_s=WAIT_S * 10)
    async def double(items: list[BatchItem]) -> list[Any]:
        await asyncio.sleep(0)
        return [item.args[0] * 2 for item in items]

    done = _process_together(
        runners({"double": double}), [_message("double", 4), _message("double", 5)]
    )
    assert [r.steps for _, r in done] == [[("success", 8)], [("success", 10)]]


def test_items_carry_their_own_task_and_no_current_task_is_set(
    runners: Callable[..., TaskRunner],
) -> None:
    found: list[Any] = []

    @task_handler(batch_max_size=2, batch_wait_timeout_s=WAIT_S * 10)
    def inspect_items(items: list[BatchItem]) -> list[Any]:
        try:
            current_task()
        except RuntimeError:
            found.append("no current task")
        found.extend((i.task_id, i.task.attempt, i.args, i.kwargs) for i in items)
        return [None] * len(items)

    runner = runners({"inspect_items": inspect_items})
    messages = [_message("inspect_items", 1, k="v"), _message("inspect_items", 2)]
    _process_together(runner, messages, attempt=2)
    assert found[0] == "no current task"
    assert sorted(found[1:]) == sorted(
        [(messages[0].id, 2, (1,), {"k": "v"}), (messages[1].id, 2, (2,), {})]
    )


def test_a_task_cancelled_while_its_batch_runs_ends_cancelled_alone(
    runners: Callable[..., TaskRunner],
) -> None:
    running, release = threading.Event(), threading.Event()

    @task_handler(batch_max_size=2, batch_wait_timeout_s=WAIT_S * 10)
    def slow(items: list[BatchItem]) -> list[Any]:
        running.set()
        release.wait(WAIT_S)
        return [item.args[0] for item in items]

    runner = runners({"slow": slow})
    messages = [_message("slow", 1), _message("slow", 2)]
    with ThreadPoolExecutor(1) as pool:
        together = pool.submit(_process_together, runner, messages)
        assert running.wait(WAIT_S)
        assert runner.cancel_running(messages[1].id)
        assert sorted(runner.running_task_ids()) == sorted(m.id for m in messages)
        release.set()
        done = together.result(WAIT_S)
    assert [o for o, _ in done] == [Outcome.SUCCEEDED, Outcome.CANCELLED]
    assert done[1][1].steps == [("cancelled", None)], "the cancelled task's result was kept"


def test_a_task_cancelled_while_it_waits_for_its_batch_leaves_it(
    runners: Callable[..., TaskRunner],
) -> None:
    calls: list[int] = []

    @task_handler(batch_max_size=2, batch_wait_timeout_s=WAIT_S * 10)
    def never_full(items: list[BatchItem]) -> list[Any]:
        calls.append(len(items))
        return [None] * len(items)

    runner = runners({"never_full": never_full})
    message = _message("never_full", 1)
    recorder = Recorder()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(runner.process, message, 1, recorder)
        _until(lambda: runner.running_task_ids() == [message.id], "the task did not start")
        assert runner.cancel_running(message.id)
        assert waiting.result(WAIT_S) is Outcome.CANCELLED
    assert recorder.steps == [("cancelled", None)] and calls == []


def test_the_time_limit_bounds_the_batch_call(runners: Callable[..., TaskRunner]) -> None:
    @task_handler(batch_max_size=2, batch_wait_timeout_s=WAIT_S * 10, time_limit_s=0.2)
    def stuck(items: list[BatchItem]) -> list[Any]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return [None] * len(items)

    runner = runners({"stuck": stuck})
    messages = [_message("stuck", 1), _message("stuck", 2)]
    with ThreadPoolExecutor(1) as pool:
        together = pool.submit(_process_together, runner, messages)
        while not together.done():  # the lease keeper's part
            runner.check_time_limits()
            time.sleep(0.02)
        done = together.result(WAIT_S)
    for outcome, recorder in done:
        assert outcome is Outcome.RETRYING
        [(_, error)] = recorder.steps
        assert error.type.endswith("TaskTimeLimitExceeded")
        assert "exceeded its time limit of 0.2s (the call of its batch of 2 tasks)" in error.message


def test_batches_hold_at_most_the_concurrency(
    runners: Callable[..., TaskRunner], caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[list[str]] = []
    runner = runners({"echo": _echo_batch(8, seen)})
    with caplog.at_level(logging.WARNING, "taskserve.runner"):
        runner.fit_batches(2)
    assert "batch_max_size=8" in caplog.text and "at most 2 tasks" in caplog.text
    done = _process_together(runner, [_message("echo", i) for i in range(4)])
    assert all(o is Outcome.SUCCEEDED for o, _ in done)
    assert sorted(len(batch) for batch in seen) == [2, 2]


# -- end to end on sqlite -------------------------------------------------------------------
def test_waiting_tasks_run_in_batches_on_a_real_queue(tmp_path: Path) -> None:
    seen: list[list[str]] = []
    config = _config(adapter_config={"path": str(tmp_path / "q.db"), "poll_interval_s": 0.01})
    producer = instantiate_adapter_from_config(config)
    consumer = instantiate_adapter_from_config(config)
    try:
        tasks = [producer.enqueue_task_sync("echo", [i]) for i in range(6)]
        consumer.initialize(consumer_concurrency=3)
        consumer.register_task_handle(_echo_batch(3, seen), "echo")
        consumer.start_consumer()
        deadline = time.monotonic() + WAIT_S
        for i, task in enumerate(tasks):
            while (
                status := producer.get_task_status_sync(task.id)
            ).status is not TaskState.SUCCESS:
                assert time.monotonic() < deadline, f"task {i} is {status.status.value}"
                time.sleep(0.02)
            assert status.result == i * 10 and status.attempts == 1
        assert sorted(len(batch) for batch in seen) == [3, 3]
    finally:
        consumer.shutdown()
        producer.shutdown()
