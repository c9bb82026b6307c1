"""Priorities (SPEC §11.2): ``priority`` of an enqueue, 0 to 9, higher first.

Promises checked: tasks waiting in a queue start highest priority first, a
task without a priority counting as 0, and tasks of one priority in the order
they were enqueued is not promised (engines differ); a task of a higher
priority enqueued while the only slot is busy starts before the lower ones
that were waiting before it; a bad priority is refused naming the argument,
and nothing is enqueued.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from taskserve import Capability, InvalidArgument, TaskState
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import wait_for_status


def _start_order(journal: Journal, task_ids: list[str]) -> list[str]:
    """``task_ids`` in the order their first runs started."""
    first = {task_id: journal.runs(task_id)[0].time for task_id in task_ids}
    return sorted(task_ids, key=first.__getitem__)


@requires(Capability.PRIORITIES)
class PriorityTests:
    """``priority``: a free slot takes the highest ready priority first."""

    def test_waiting_tasks_start_highest_priority_first(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config()
        producer, deadlines = make_producer(config), Deadlines(config)
        priority_of: dict[str, int] = {}
        for priority in (None, 5, 9, 0, 9, 5, None, 1):
            task = producer.enqueue_task_sync("echo", [priority], priority=priority)
            assert task.status is TaskState.PENDING
            priority_of[task.id] = priority or 0
        consumers.start(config, concurrency=1)
        for task_id in priority_of:
            wait_for_status(producer, task_id, TaskState.SUCCESS, deadlines.pickup * 4)
        order = [priority_of[t] for t in _start_order(journal, list(priority_of))]
        assert order == sorted(order, reverse=True), f"started in priority order {order}"

    def test_a_higher_priority_overtakes_tasks_waiting_for_the_busy_slot(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config()
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config, concurrency=1)
        gate = f"busy-{uuid.uuid4().hex[:8]}"
        busy = producer.enqueue_task_sync("wait_for_gate", [gate])
        wait_for_status(producer, busy.id, TaskState.STARTED, deadlines.pickup)
        low = [producer.enqueue_task_sync("echo", ["low"], priority=1) for _ in range(3)]
        urgent = producer.enqueue_task_sync("echo", ["urgent"], priority=8)
        journal.open_gate(gate)
        waiting = [*low, urgent]
        for task in waiting:
            wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.pickup * 4)
        order = _start_order(journal, [t.id for t in waiting])
        assert order[0] == urgent.id, "the priority 8 task did not start before the priority 1 ones"

    @pytest.mark.parametrize("priority", [10, -1, True, "5", 2.5])
    def test_a_bad_priority_is_refused_and_nothing_is_enqueued(
        self, make_config: ConfigFactory, make_producer: ProducerFactory, priority: Any
    ) -> None:
        config = make_config()
        producer = make_producer(config)
        with pytest.raises(InvalidArgument, match="priority"):
            producer.enqueue_task_sync("echo", ["x"], priority=priority)
        assert producer.get_metrics_sync().queue_depth == 0, "a refused enqueue left a task"
