"""At-least-once delivery with live consumers (SPEC §4.1, §4.3).

Promises checked: every enqueued task is run and its outcome recorded; while
consumers are alive no task is delivered twice, even one that runs longer
than the lease (the lease is extended while it runs). That a message is
acknowledged only after its outcome is recorded (§4.1) is checked where it
shows: a consumer killed mid-task loses nothing (:mod:`.crash`), and a
dead-letter write that fails leaves the message to be delivered again
(:mod:`.dead_letters`).
"""

from __future__ import annotations

from taskserve import Capability, TaskProcessorAdapter, TaskState
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.journal import Journal
from taskserve_conformance.waiting import wait_for_status, wait_until


class AtLeastOnceTests:
    """§4.1 and §4.3: every task runs, and runs once while consumers live."""

    def test_every_task_runs_once_with_live_consumers(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        count = 30
        tasks = [producer.enqueue_task_sync("add", [i, 1000]) for i in range(count)]
        for _ in range(2):
            consumers.start(concurrency=3, wait=False)
        for consumer in consumers.started:
            consumer.wait_ready(deadlines.startup)
        timeout = deadlines.run(tasks=count, concurrency=6)
        for i, task in enumerate(tasks):
            done = wait_for_status(producer, task.id, TaskState.SUCCESS, timeout)
            assert done.result == i + 1000
            assert done.attempts == 1
        starts = journal.run_counts()
        assert {t.id: starts[t.id] for t in tasks} == {t.id: 1 for t in tasks}

    @requires(Capability.LEASE_EXTENSION)
    def test_task_longer_than_lease_is_not_delivered_twice(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        duration = 2.5 * producer.config.lease_s
        for _ in range(2):  # a second consumer would take a task whose lease ran out
            consumers.start(concurrency=1, wait=False)
        for consumer in consumers.started:
            consumer.wait_ready(deadlines.startup)
        task = producer.enqueue_task_sync("sleep", [duration])
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run(duration))
        assert done.attempts == 1
        assert len(journal.runs(task.id)) == 1
        wait_until(lambda: journal.events(task.id, "end"), deadlines.pickup, "no end recorded")
