"""Listing a queue's recent tasks (SPEC §3.1, §3.3; the task list of §12.2).

``list_tasks_sync``, capability ``task_listing``.

Promises checked: the queue's tasks are listed newest first (by
``created_at``, ties by id, both descending), each as its status reads, the
async twin alike; a status filter (one state, several, a state's name) keeps
exactly the tasks in those states; ``limit`` bounds the listing and ``before``
pages through it without a task lost or listed twice; a task's status change
shows in the next listing and moves it between filters; tasks of another
queue are never listed, nor a task whose result expired; a bad ``limit``,
``status`` or ``before`` is refused naming the argument. An adapter that does
not declare the capability raises ``UnsupportedCapability`` naming it.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskserve import (
    MAX_TASK_LIST_LIMIT,
    Capability,
    InvalidArgument,
    TaskNotFound,
    TaskProcessorAdapter,
    TaskResult,
    TaskState,
    UnsupportedCapability,
)
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import adapter_display_name, requires
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import run_async, wait_for_status, wait_until

TTL_S = 2.0
"""Result TTL of the expiry test."""


def _newest_first(tasks: Iterable[TaskResult]) -> list[str]:
    """Ids in the listing's order: ``created_at``, then id, both descending."""
    ordered = sorted(tasks, key=lambda t: (t.created_at or 0.0, t.id), reverse=True)
    return [t.id for t in ordered]


def _ids(tasks: Iterable[TaskResult]) -> list[str]:
    return [t.id for t in tasks]


def _statuses(producer: TaskProcessorAdapter) -> dict[str, TaskState]:
    return {t.id: t.status for t in producer.list_tasks_sync(limit=MAX_TASK_LIST_LIMIT)}


def _expired(producer: TaskProcessorAdapter, task_id: str) -> bool:
    try:
        producer.get_task_status_sync(task_id)
    except TaskNotFound:
        return True
    return False


class TaskListingTests:
    """``list_tasks_sync``: the queue's records, newest first, filtered and paged."""

    @requires(Capability.TASK_LISTING)
    def test_tasks_are_listed_newest_first_as_their_status_reads(
        self, producer: TaskProcessorAdapter
    ) -> None:
        assert producer.list_tasks_sync() == []
        sent = [producer.enqueue_task_sync("echo", [n], {"n": n}) for n in range(5)]
        listed = producer.list_tasks_sync()
        assert sorted(_ids(listed)) == sorted(_ids(sent))
        assert _ids(listed) == _newest_first(listed)
        created = [t.created_at or 0.0 for t in sent]
        if created == sorted(set(created)):  # distinct clock readings: the last is newest
            assert _ids(listed) == _ids(reversed(sent))
        for task in listed:
            assert task == producer.get_task_status_sync(task.id)
            assert task.status is TaskState.PENDING and task.name == "echo"
        assert run_async(producer.list_tasks_async()) == listed

    @requires(Capability.TASK_LISTING)
    def test_a_status_filter_keeps_those_states_and_follows_changes(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        succeeded = producer.enqueue_task_sync("echo", ["done"])
        failed = producer.enqueue_task_sync("non_retryable")
        consumers.start(concurrency=1)
        wait_for_status(producer, succeeded.id, TaskState.SUCCESS, deadlines.run(tasks=2))
        wait_for_status(producer, failed.id, TaskState.FAILURE, deadlines.run(tasks=2))
        gate = f"listing-{uuid.uuid4().hex[:8]}"
        running = producer.enqueue_task_sync("wait_for_gate", [gate, "released"])
        wait_for_status(producer, running.id, TaskState.STARTED, deadlines.pickup)
        waiting = [producer.enqueue_task_sync("echo", [n]) for n in range(2)]
        everything = producer.list_tasks_sync()
        assert sorted(_ids(everything)) == sorted(_ids([succeeded, failed, running, *waiting])), (
            "every task of the queue is listed without a filter"
        )

        def only(status: Any) -> set[str]:
            found = producer.list_tasks_sync(status=status)
            assert _ids(found) == _newest_first(found)
            return set(_ids(found))

        assert only(TaskState.PENDING) == set(_ids(waiting))
        assert only("PENDING") == set(_ids(waiting)), "a state's name is a filter too"
        assert only(TaskState.STARTED) == {running.id}
        assert only([TaskState.SUCCESS, TaskState.FAILURE]) == {succeeded.id, failed.id}
        assert only({TaskState.RETRY, TaskState.CANCELLED}) == set()

        journal.open_gate(gate)
        for task in (running, *waiting):
            wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run(tasks=3))
        assert only(TaskState.STARTED) == set(), "a finished task is still listed as STARTED"
        assert only(TaskState.PENDING) == set()
        assert only(TaskState.SUCCESS) == {succeeded.id, running.id, *_ids(waiting)}
        finished = {t.id: t for t in producer.list_tasks_sync(status=TaskState.SUCCESS)}
        assert finished[running.id].result == "released"
        assert finished[running.id].attempts == 1

    @requires(Capability.TASK_LISTING, Capability.CANCEL_PENDING)
    def test_a_cancel_shows_in_the_next_listing(self, producer: TaskProcessorAdapter) -> None:
        kept, cancelled = (producer.enqueue_task_sync("echo", [n]) for n in range(2))
        assert _statuses(producer) == {kept.id: TaskState.PENDING, cancelled.id: TaskState.PENDING}
        producer.cancel_task_sync(cancelled.id)
        assert _statuses(producer) == {
            kept.id: TaskState.PENDING,
            cancelled.id: TaskState.CANCELLED,
        }
        assert _ids(producer.list_tasks_sync(status=TaskState.CANCELLED)) == [cancelled.id]
        assert _ids(producer.list_tasks_sync(status=TaskState.PENDING)) == [kept.id]

    @requires(Capability.TASK_LISTING)
    def test_limit_bounds_the_listing_and_before_pages_through_it(
        self, producer: TaskProcessorAdapter
    ) -> None:
        sent = [producer.enqueue_task_sync("echo", [n]) for n in range(7)]
        whole = producer.list_tasks_sync(limit=MAX_TASK_LIST_LIMIT)
        assert sorted(_ids(whole)) == sorted(_ids(sent))
        assert _ids(producer.list_tasks_sync(limit=1)) == _ids(whole[:1])
        assert _ids(producer.list_tasks_sync(limit=3)) == _ids(whole[:3])
        pages: list[list[TaskResult]] = []
        before: float | None = None
        while True:
            page = producer.list_tasks_sync(limit=3, before=before)
            if not page:
                break
            assert before is None or all((t.created_at or 0.0) < before for t in page)
            expected = [t for t in whole if before is None or (t.created_at or 0.0) < before]
            assert _ids(page) == _ids(expected[:3]), "a page is the next of the listing"
            pages.append(page)
            assert len(pages) <= len(sent), "paging with before does not end"
            before = page[-1].created_at
            assert before is not None
        paged = [t.id for page in pages for t in page]
        assert len(paged) == len(set(paged)), "a task was listed on two pages"
        if len({t.created_at for t in sent}) == len(sent):  # no two share a creation time
            assert paged == _ids(whole) and [len(p) for p in pages] == [3, 3, 1]
        newest = whole[0].created_at
        assert newest is not None
        assert whole[0].id not in _ids(producer.list_tasks_sync(before=newest))
        now = datetime.now(UTC)  # an aware datetime is a bound too
        later = producer.list_tasks_sync(before=now + timedelta(hours=1))
        assert sorted(_ids(later)) == sorted(_ids(sent))
        assert producer.list_tasks_sync(before=now - timedelta(hours=1)) == []

    @requires(Capability.TASK_LISTING)
    def test_tasks_of_another_queue_are_never_listed(
        self, make_config: ConfigFactory, make_producer: ProducerFactory
    ) -> None:
        first, second = make_producer(make_config()), make_producer(make_config())
        mine = [first.enqueue_task_sync("echo", [n]) for n in range(3)]
        theirs = [second.enqueue_task_sync("echo", [n]) for n in range(2)]
        assert sorted(_ids(first.list_tasks_sync())) == sorted(_ids(mine))
        assert sorted(_ids(second.list_tasks_sync())) == sorted(_ids(theirs))
        for task in first.list_tasks_sync(status=TaskState.PENDING):
            assert task.queue_name in (None, first.config.queue_name)

    @requires(Capability.TASK_LISTING, Capability.RESULT_TTL)
    def test_an_expired_task_is_not_listed(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
    ) -> None:
        config = make_config(result_ttl_s=TTL_S)
        producer, deadlines = make_producer(config), Deadlines(config)
        task = producer.enqueue_task_sync("echo", ["expires"])
        assert _ids(producer.list_tasks_sync()) == [task.id], "a queued task is listed"
        consumers.start(config)
        wait_until(
            functools.partial(_expired, producer, task.id),
            deadlines.run() + deadlines.expiry,
            f"task {task.id} was still readable after its result TTL of {TTL_S}s",
        )
        for _ in range(2):  # the second listing reads what the first one left
            assert task.id not in _ids(producer.list_tasks_sync(limit=MAX_TASK_LIST_LIMIT))
            assert task.id not in _ids(producer.list_tasks_sync(status=TaskState.SUCCESS))
        fresh = producer.enqueue_task_sync("echo", ["after the expiry"])
        assert fresh.id in _ids(producer.list_tasks_sync())

    @requires(Capability.TASK_LISTING)
    @pytest.mark.parametrize(
        ("arguments", "named"),
        [
            ({"limit": 0}, "limit"),
            ({"limit": -1}, "limit"),
            ({"limit": MAX_TASK_LIST_LIMIT + 1}, "limit"),
            ({"limit": True}, "limit"),
            ({"limit": 2.5}, "limit"),
            ({"limit": "10"}, "limit"),
            ({"limit": None}, "limit"),
            ({"status": "sideways"}, "status"),
            ({"status": []}, "status"),
            ({"status": 3}, "status"),
            ({"before": "yesterday"}, "before"),
            ({"before": math.nan}, "before"),
            ({"before": datetime(2026, 1, 1)}, "before"),
        ],
        ids=lambda value: repr(value) if not isinstance(value, str) else value,
    )
    def test_a_bad_argument_is_refused_naming_it(
        self, producer: TaskProcessorAdapter, arguments: dict[str, Any], named: str
    ) -> None:
        with pytest.raises(InvalidArgument, match=named):
            producer.list_tasks_sync(**arguments)

    def test_an_adapter_without_the_capability_refuses_to_list(
        self,
        adapter_class: type[TaskProcessorAdapter],
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
    ) -> None:
        stripped = type(
            f"{adapter_class.__name__}WithoutTaskListing",
            (adapter_class,),
            {"capabilities": adapter_class.capabilities - {Capability.TASK_LISTING}},
        )
        producer = make_producer(make_config(adapter=stripped))
        with pytest.raises(UnsupportedCapability) as raised:
            producer.list_tasks_sync()
        assert raised.value.capability == Capability.TASK_LISTING.value
        assert adapter_display_name(adapter_class) in str(raised.value)
