"""Batched handlers (SPEC §11.6; adapters declaring ``batching``).

Promises checked, with the batched handlers of
:data:`taskserve_conformance.handlers.BATCH_HANDLERS` (``batch_max_size`` 4)
in real consumer processes: tasks waiting when a consumer starts run in
calls of more than one task and never more than ``batch_max_size``, every
task exactly once, each with its own result - for sync and ``async def``
handlers; an exception instance in a slot fails that task alone, which is
retried alone while the others succeed at their first attempt; an exception
the handler raises fails every task of the call, one attempt each, until
each ends FAILURE after ``max_retries + 1`` attempts; a task cancelled while
it waits for its batch to fill leaves it at once (CANCELLED, never in a
call); one cancelled while its batch runs has its result discarded and ends
CANCELLED while the others of the call succeed; and a consumer killed with
SIGKILL in the middle of a call loses none of the call's tasks: each is
delivered again and succeeds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from taskserve import Capability, TaskProcessorAdapter, TaskResult, TaskState
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import BATCH_HANDLERS_SPEC, ConsumerPool, ConsumerProcess
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.handlers import BATCH_MAX_SIZE, BATCH_WAIT_S
from taskserve_conformance.journal import Journal, JournalEntry
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.reporting import DELIVERY_PROPERTY, DeliveryReport
from taskserve_conformance.waiting import wait_for_status, wait_until


def _calls(journal: Journal, task_ids: list[str]) -> list[tuple[int, tuple[str, ...]]]:
    """The handler calls that ran any of ``task_ids``: the process of each, and
    the ids of its tasks (the ``detail`` of the batched handlers' ``start``)."""
    wanted = set(task_ids)
    starts: list[JournalEntry] = [e for e in journal.events(event="start") if e.task_id in wanted]
    return sorted({(e.pid, tuple(e.detail)) for e in starts})


def _batches(journal: Journal, task_ids: list[str]) -> list[tuple[str, ...]]:
    """The ids of the tasks of each call that ran any of ``task_ids``."""
    return [ids for _, ids in _calls(journal, task_ids)]


def _gated_batch_started(
    producer: TaskProcessorAdapter,
    consumers: ConsumerPool,
    journal: Journal,
    deadlines: Deadlines,
) -> tuple[str, list[TaskResult], ConsumerProcess]:
    """A full batch of ``batch_wait_for_gate`` tasks running in one consumer
    started for them: the gate they wait for, the tasks, and the consumer."""
    gate = f"batch-{uuid.uuid4().hex[:8]}"
    tasks = [
        producer.enqueue_task_sync("batch_wait_for_gate", [gate, i]) for i in range(BATCH_MAX_SIZE)
    ]
    consumer = consumers.start(concurrency=BATCH_MAX_SIZE, handlers=BATCH_HANDLERS_SPEC)
    wait_until(
        lambda: all(journal.runs(t.id) for t in tasks),
        deadlines.pickup,
        "the batch of the tasks did not start",
    )
    return gate, tasks, consumer


@requires(Capability.BATCHING)
class BatchingTests:
    """§11.6: one call for several ready tasks, each keeping its own life."""

    @pytest.mark.parametrize("handler", ["batch_echo", "async_batch_echo"])
    def test_waiting_tasks_run_in_batches_each_with_its_own_result(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
        handler: str,
    ) -> None:
        count = 2 * BATCH_MAX_SIZE
        tasks = [producer.enqueue_task_sync(handler, [i], {"n": i}) for i in range(count)]
        ids = [t.id for t in tasks]
        consumers.start(concurrency=BATCH_MAX_SIZE, handlers=BATCH_HANDLERS_SPEC)
        bound = deadlines.run(BATCH_WAIT_S, count, BATCH_MAX_SIZE)
        for i, task in enumerate(tasks):
            done = wait_for_status(producer, task.id, TaskState.SUCCESS, bound)
            assert done.result == {"args": [i], "kwargs": {"n": i}}, "a task got another's result"
            assert done.attempts == 1
        assert all(journal.run_counts()[t] == 1 for t in ids), "a task ran more than once"
        batches = _batches(journal, ids)
        assert sorted(t for batch in batches for t in batch) == sorted(ids)
        assert all(len(batch) <= BATCH_MAX_SIZE for batch in batches), batches
        assert max(len(batch) for batch in batches) > 1, (
            f"tasks that were waiting ran one per call: {[len(b) for b in batches]}"
        )

    def test_an_exception_in_a_slot_fails_and_retries_that_task_alone(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        ok = [producer.enqueue_task_sync("batch_echo", [i]) for i in range(BATCH_MAX_SIZE - 1)]
        flaky = producer.enqueue_task_sync("batch_echo", ["flaky"], {"fail_attempts": 1})
        consumers.start(concurrency=BATCH_MAX_SIZE, handlers=BATCH_HANDLERS_SPEC)
        done = wait_for_status(producer, flaky.id, TaskState.SUCCESS, deadlines.retries(1))
        assert done.result == {"args": ["flaky"], "kwargs": {"fail_attempts": 1}}
        assert done.attempts == 2 and [r.attempt for r in journal.runs(flaky.id)] == [1, 2]
        assert [e.detail for e in journal.events(flaky.id, "raise")] == ["HandlerFailure"]
        for i, task in enumerate(ok):
            other = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.pickup)
            assert other.result == {"args": [i], "kwargs": {}}
            assert other.attempts == 1, "a task was retried with its batch's failing task"
            assert len(journal.runs(task.id)) == 1

    def test_a_raised_exception_fails_every_task_of_the_call_one_attempt_each(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=1)
        producer, deadlines = make_producer(config), Deadlines(config)
        count = BATCH_MAX_SIZE - 1
        ids = [producer.enqueue_task_sync("batch_always_fail", [i]).id for i in range(count)]
        consumers.start(config, concurrency=count, handlers=BATCH_HANDLERS_SPEC)
        for task_id in ids:
            failed = wait_for_status(
                producer, task_id, TaskState.FAILURE, deadlines.retries() + BATCH_WAIT_S
            )
            assert failed.attempts == config.max_attempts
            assert failed.error is not None and failed.error.type.endswith("HandlerFailure")
            runs = journal.runs(task_id)
            assert [r.attempt for r in runs] == list(range(1, config.max_attempts + 1)), (
                f"task {task_id} ran {[r.attempt for r in runs]}: one attempt per call expected"
            )
            assert all(r.detail.count(task_id) == 1 for r in runs)

    def test_a_task_cancelled_while_its_batch_fills_leaves_it(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        consumers.start(concurrency=BATCH_MAX_SIZE, handlers=BATCH_HANDLERS_SPEC)
        waiting = producer.enqueue_task_sync("batch_patient_echo", ["left"])
        wait_for_status(producer, waiting.id, TaskState.STARTED, deadlines.pickup)
        assert producer.cancel_task_sync(waiting.id).cancelled
        cancelled = wait_for_status(producer, waiting.id, TaskState.CANCELLED, deadlines.cancel)
        assert cancelled.result is None
        full = [
            producer.enqueue_task_sync("batch_patient_echo", [i]) for i in range(BATCH_MAX_SIZE)
        ]
        for i, task in enumerate(full):
            done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.pickup)
            assert done.result == {"args": [i], "kwargs": {}}
        assert journal.runs(waiting.id) == [], "the cancelled task ran in a batch"
        assert producer.get_task_status_sync(waiting.id).status is TaskState.CANCELLED

    def test_a_task_cancelled_while_its_batch_runs_ends_cancelled_alone(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        gate, tasks, _ = _gated_batch_started(producer, consumers, journal, deadlines)
        ids = [t.id for t in tasks]
        [batch] = _batches(journal, ids)
        assert sorted(batch) == sorted(ids), "the tasks did not run in one call"
        victim = tasks[1]
        for task in tasks:
            assert producer.get_task_status_sync(task.id).status is TaskState.STARTED
        assert producer.cancel_task_sync(victim.id).cancelled
        wait_until(
            lambda: journal.events(victim.id, "saw_cancel"),
            deadlines.cancel,
            "the running batch never saw its task's cancel",
        )
        journal.open_gate(gate)
        cancelled = wait_for_status(producer, victim.id, TaskState.CANCELLED, deadlines.cancel)
        assert cancelled.result is None, "the cancelled task's result was kept"
        for i, task in enumerate(tasks):
            if task is not victim:
                done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.pickup)
                assert done.result == {"args": [gate, i], "kwargs": {}}

    @requires(Capability.CRASH_REDELIVERY)
    def test_sigkill_mid_batch_redelivers_every_task_of_it(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
        record_property: Callable[[str, object], None],
    ) -> None:
        gate, tasks, victim = _gated_batch_started(producer, consumers, journal, deadlines)
        ids = [t.id for t in tasks]
        [(pid, batch)] = _calls(journal, ids)
        assert pid == victim.pid and sorted(batch) == sorted(ids)
        victim.kill()
        killed_at = time.monotonic()
        journal.open_gate(gate)  # the next run of the batch returns at once
        consumers.start(concurrency=BATCH_MAX_SIZE, handlers=BATCH_HANDLERS_SPEC)
        results = [
            wait_for_status(producer, t.id, TaskState.SUCCESS, deadlines.redelivery) for t in tasks
        ]
        recovery_s = time.monotonic() - killed_at
        for i, done in enumerate(results):
            assert done.result == {"args": [gate, i], "kwargs": {}}
            assert done.attempts >= 2, f"task {done.id} succeeded without its crashed attempt"
        starts, ends = journal.run_counts(), journal.run_counts("end")
        lost = [t for t in ids if starts[t] < 2 or ends[t] < 1]
        assert not lost, f"{len(lost)} task(s) of the killed batch did not run again"
        report = DeliveryReport.from_counts(
            ids, len(results), starts, ends, recovery_s, producer.config.lease_s
        )
        record_property(DELIVERY_PROPERTY, report.as_property())
