"""Dead-letter queues (SPEC §4.7 - §4.10).

Promises checked: after its last attempt a failed task's record holds its
name, id, args and kwargs exactly as enqueued (a JSON round-trip), the error
type, message and traceback, the attempt count and timestamps; redrive
enqueues it again faithfully under a new id linked to the old one; records
can be listed (oldest first) and purged. An unknown task name, or a message
that cannot be decoded, goes to the unprocessable queue with its original
payload (raw bytes kept). When a dead-letter write fails the message is not
acknowledged: it is delivered again and lands once writes work. Dead-letter
routing belongs to one adapter: two adapters consuming in one process never
receive each other's failures.
"""

from __future__ import annotations

import time

from taskserve import Capability, DeadLetter, DeadLetterKind, TaskProcessorAdapter, TaskState
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.harness import BrokerHarness, dead_letters_broken
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import (
    hold_for,
    run_async,
    run_barrier,
    wait_for_status,
    wait_terminal,
    wait_until,
)

ARGS = [1, "two", [3.0, {"four": [None, True]}], {"nested": {"deeper": ["é", "✓"]}}]
KWARGS = {"options": {"mode": "fast", "levels": [1, 2, 3]}, "flag": False, "none": None}
UNDECODABLE = [
    b"\xff\xfe\x00 not utf-8",
    b"plain text, not JSON",
    b'{"json": "but not a task"}',
    b"[1, 2, 3]",
]


def _records(
    producer: TaskProcessorAdapter, kind: DeadLetterKind = DeadLetterKind.FAILED
) -> list[DeadLetter]:
    return producer.list_dead_letters_sync(kind, limit=1000)


def _wait_records(
    producer: TaskProcessorAdapter, count: int, timeout: float, kind: DeadLetterKind
) -> list[DeadLetter]:
    return wait_until(
        lambda: records if len(records := _records(producer, kind)) >= count else None,
        timeout,
        f"expected {count} record(s) in the {kind.value} dead-letter queue",
    )


def _holds_one_of_each(producer: TaskProcessorAdapter) -> bool:
    return len(_records(producer)) == len(_records(producer, DeadLetterKind.UNPROCESSABLE)) == 1


@requires(Capability.DEAD_LETTERS)
class DeadLetterTests:
    """§4.7-§4.10: failed and unprocessable records, redrive, purge, isolation."""

    def test_failed_record_keeps_the_task_exactly_as_enqueued(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
    ) -> None:
        config = make_config(max_retries=1)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("always_fail", ARGS, KWARGS)
        failed = wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.retries())
        [record] = _wait_records(producer, 1, deadlines.pickup, DeadLetterKind.FAILED)
        assert record.kind is DeadLetterKind.FAILED
        assert record.queue_name == config.failed_task_queue_name
        assert record.source_queue == config.queue_name
        assert (record.task_id, record.task_name) == (task.id, "always_fail")
        assert record.args == ARGS
        assert record.kwargs == KWARGS
        assert record.raw is None
        assert record.error.type.endswith("HandlerFailure")
        assert "always_fail was told to fail" in record.error.message
        assert "always_fail" in record.error.traceback
        assert "HandlerFailure" in record.error.traceback
        assert record.attempts == config.max_attempts == failed.attempts
        assert record.enqueued_at is not None
        assert task.created_at is not None
        assert abs(record.enqueued_at - task.created_at) < 1.0
        assert record.enqueued_at <= record.failed_at <= time.time() + 1.0

    def test_redrive_enqueues_the_task_again_faithfully(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=0)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config)
        task = producer.enqueue_task_sync("fail_until_gate", ["fixed", *ARGS], KWARGS)
        wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.run())
        [record] = _wait_records(producer, 1, deadlines.pickup, DeadLetterKind.FAILED)
        journal.open_gate("fixed")  # the bug is fixed; now redrive

        [again] = producer.redrive_dead_letters_sync([record.id])
        assert again.id != task.id
        assert again.retried_from == task.id
        done = wait_for_status(producer, again.id, TaskState.SUCCESS, deadlines.run())
        assert done.result == {"args": ARGS, "kwargs": KWARGS}
        assert done.retried_from == task.id
        [run] = journal.runs(again.id)
        assert (run.name, run.args, run.kwargs) == ("fail_until_gate", ["fixed", *ARGS], KWARGS)
        assert _records(producer) == []
        assert producer.get_task_status_sync(task.id).status is TaskState.FAILURE

    def test_list_and_purge_dead_letters(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
    ) -> None:
        config = make_config(max_retries=0)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config, concurrency=1)
        ids = []
        for i in range(3):  # one after the other, so the order is known
            task = producer.enqueue_task_sync("always_fail", [i])
            wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.run())
            ids.append(task.id)
        records = _wait_records(producer, 3, deadlines.pickup, DeadLetterKind.FAILED)
        assert [r.task_id for r in records] == ids
        assert [r.task_id for r in producer.list_dead_letters_sync(limit=2)] == ids[:2]
        assert run_async(producer.list_dead_letters_async(limit=3)) == records
        assert _records(producer, DeadLetterKind.UNPROCESSABLE) == []

        assert producer.purge_dead_letters_sync(ids=[records[0].id]) == 1
        assert [r.task_id for r in _records(producer)] == ids[1:]
        assert producer.purge_dead_letters_sync() == 2
        assert _records(producer) == []

    def test_unknown_task_is_unprocessable_with_its_payload(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        deadlines: Deadlines,
    ) -> None:
        consumers.start()
        task = producer.enqueue_task_sync("no_such_task", ARGS, KWARGS)
        failed = wait_terminal(producer, task.id, deadlines.run())
        assert failed.status is TaskState.FAILURE
        kind = DeadLetterKind.UNPROCESSABLE
        [record] = _wait_records(producer, 1, deadlines.pickup, kind)
        assert record.kind is kind
        assert record.queue_name == producer.config.unprocessable_task_queue_name
        assert (record.task_id, record.task_name) == (task.id, "no_such_task")
        assert (record.args, record.kwargs) == (ARGS, KWARGS)
        assert record.error.type.endswith("UnknownTask")
        assert "no_such_task" in record.error.message
        assert _records(producer) == [], "an unknown task went to the failed queue"

    def test_undecodable_message_is_unprocessable_with_raw_bytes(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        harness: BrokerHarness,
        deadlines: Deadlines,
    ) -> None:
        for body in UNDECODABLE:
            harness.publish_raw(producer.config, body)
        consumers.start()
        kind = DeadLetterKind.UNPROCESSABLE
        records = _wait_records(producer, len(UNDECODABLE), deadlines.run(), kind)
        assert sorted(r.raw or b"" for r in records) == sorted(UNDECODABLE)
        for record in records:
            assert record.kind is kind
            assert record.task_name is None and record.args is None and record.kwargs is None
            assert record.error.type.endswith("UndecodableMessage")
            assert record.source_queue == producer.config.queue_name
        run_barrier(producer, deadlines.run())  # the consumer is still healthy
        assert _records(producer) == []

    def test_failed_dead_letter_write_is_delivered_again(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        harness: BrokerHarness,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=0)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config, concurrency=1)
        with dead_letters_broken(harness, config):
            task = producer.enqueue_task_sync("always_fail", ARGS, KWARGS)
            wait_until(
                lambda: len(journal.runs(task.id)) >= 2,
                deadlines.redelivery,
                "a task whose dead letter could not be written was not delivered again",
            )
            assert _records(producer) == []
            assert producer.get_task_status_sync(task.id).status is not TaskState.FAILURE
        wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.redelivery)
        [record] = _wait_records(producer, 1, deadlines.pickup, DeadLetterKind.FAILED)
        assert (record.task_id, record.args, record.kwargs) == (task.id, ARGS, KWARGS)
        hold_for(
            lambda: len(_records(producer)) == 1,
            deadlines.lease_windows(1),
            "the dead letter was written more than once",
        )

    def test_an_outcome_never_recordable_ends_failure_after_the_bound(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        harness: BrokerHarness,
        journal: Journal,
    ) -> None:
        """A delivery whose outcome cannot be written is delivered again - but not
        for ever: after ``max_recording_failures`` in a row the task ends FAILURE
        with the recording error."""
        config = make_config(max_retries=0, max_recording_failures=2)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config, concurrency=1)
        with dead_letters_broken(harness, config):
            task = producer.enqueue_task_sync("always_fail", ARGS, KWARGS)
            failed = wait_for_status(producer, task.id, TaskState.FAILURE, 3 * deadlines.redelivery)
        assert failed.error is not None and failed.error.type.endswith("RecordingFailed")
        assert "2 deliveries in a row" in failed.error.message
        assert len(journal.runs(task.id)) == 2
        hold_for(
            lambda: len(journal.runs(task.id)) == 2,
            deadlines.lease_windows(1),
            "the task ran again after it ended FAILURE",
        )

    def test_failed_unprocessable_write_is_delivered_again(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        harness: BrokerHarness,
    ) -> None:
        config = make_config()
        producer, deadlines = make_producer(config), Deadlines(config)
        kind = DeadLetterKind.UNPROCESSABLE
        with dead_letters_broken(harness, config):
            task = producer.enqueue_task_sync("no_such_task", ARGS)
            consumers.start(config, concurrency=1)
            run_barrier(producer, deadlines.redelivery)  # the consumer tried the task first
            assert _records(producer, kind) == []
            assert producer.get_task_status_sync(task.id).status is not TaskState.FAILURE
        [record] = _wait_records(producer, 1, deadlines.redelivery, kind)
        assert (record.task_id, record.task_name, record.args) == (task.id, "no_such_task", ARGS)

    def test_two_adapters_in_one_process_keep_their_own_dead_letters(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
    ) -> None:
        first_config, second_config = make_config(max_retries=0), make_config(max_retries=0)
        first, second = make_producer(first_config), make_producer(second_config)
        deadlines = Deadlines(first_config)
        consumers.start_shared([first_config, second_config])
        failing = {
            p: p.enqueue_task_sync("always_fail", [p.config.queue_name]) for p in (first, second)
        }
        unknown = {
            p: p.enqueue_task_sync("no_such_task", [p.config.queue_name]) for p in (first, second)
        }
        for tasks in (failing, unknown):
            for adapter, task in tasks.items():
                wait_for_status(adapter, task.id, TaskState.FAILURE, deadlines.run(tasks=4))

        def settled() -> bool:
            return _holds_one_of_each(first) and _holds_one_of_each(second)

        wait_until(settled, deadlines.pickup, "each dead-letter queue should hold one record")
        hold_for(settled, deadlines.lease_windows(0.5), "a dead-letter queue got more records")
        for adapter in (first, second):
            failed = _records(adapter, DeadLetterKind.FAILED)
            bad = _records(adapter, DeadLetterKind.UNPROCESSABLE)
            assert [r.task_id for r in failed] == [failing[adapter].id]
            assert [r.task_id for r in bad] == [unknown[adapter].id]
            assert {r.source_queue for r in failed + bad} == {adapter.config.queue_name}
