"""Graceful stop and prefetch (SPEC §4.5).

Promises checked: on SIGTERM a consumer stops fetching, lets its running
tasks finish, hands back at once every task it fetched but did not start (so
another consumer runs them while it drains), and exits; a task still running
when the graceful timeout ends is not lost. A consumer never holds more
tasks than its concurrency: with every slot busy, queued tasks stay free for
other consumers.
"""

from __future__ import annotations

import time

import pytest

from taskserve import Capability, TaskProcessorAdapter, TaskState
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import wait_for_exit, wait_for_status, wait_until

LONG_LEASE_S = 10.0
"""Lease of the tests that check a task is not held: a held task would come back
only after it, while a handed-back or queued one starts at once."""


def _occupy(
    producer: TaskProcessorAdapter,
    journal: Journal,
    deadlines: Deadlines,
    gate: str,
    slots: int,
    handler: str = "wait_for_gate",
) -> list[str]:
    """Enqueue ``slots`` tasks of ``handler`` blocked on ``gate``; wait until all run."""
    ids = [producer.enqueue_task_sync(handler, [gate]).id for _ in range(slots)]
    wait_until(
        lambda: all(journal.runs(t) for t in ids),
        deadlines.pickup,
        f"the consumer did not start {slots} blocking tasks",
    )
    return ids


@requires(Capability.GRACEFUL_STOP)
class GracefulStopTests:
    """§4.5: SIGTERM drains, hands back, loses nothing; prefetch <= concurrency."""

    def test_busy_consumer_leaves_queued_tasks_to_others(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        busy = consumers.start(concurrency=2)
        blocked = _occupy(producer, journal, deadlines, "busy", slots=2)
        queued = [producer.enqueue_task_sync("echo", [i]).id for i in range(4)]
        idle = consumers.start(concurrency=2)
        for task_id in queued:
            wait_for_status(producer, task_id, TaskState.SUCCESS, deadlines.run(tasks=4))
        assert {e.pid for t in queued for e in journal.runs(t)} == {idle.pid}, (
            "the busy consumer ran tasks queued while all its slots were taken: "
            "it fetched more tasks than its concurrency"
        )
        journal.open_gate("busy")
        for task_id in blocked:
            wait_for_status(producer, task_id, TaskState.SUCCESS, deadlines.run())
        assert {e.pid for t in blocked for e in journal.runs(t)} == {busy.pid}

    def test_tasks_beyond_a_busy_consumer_stay_claimable_and_counted(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        """With every slot of one consumer busy, further tasks are neither held by
        it nor hidden: queue depth reads them as queued, and a second consumer
        starts them at once, well within one (long) lease."""
        config = make_config(lease_s=LONG_LEASE_S)
        producer, deadlines = make_producer(config), Deadlines(config)
        consumers.start(config, concurrency=2)
        blocked = _occupy(producer, journal, deadlines, "held", slots=2)
        queued = [producer.enqueue_task_sync("echo", [i]).id for i in range(3)]
        if producer.supports(Capability.QUEUE_METRICS):
            wait_until(
                lambda: producer.get_metrics_sync().queue_depth == 3,
                deadlines.pickup,
                "queue depth does not read the tasks beyond the busy consumer as queued",
                describe=lambda: f"metrics: {producer.get_metrics_sync()}",
            )
        idle = consumers.start(config, concurrency=2)
        started = time.monotonic()
        for task_id in queued:
            wait_for_status(producer, task_id, TaskState.SUCCESS, deadlines.run(tasks=3))
        took = time.monotonic() - started
        assert {e.pid for t in queued for e in journal.runs(t)} == {idle.pid}
        assert took < producer.config.lease_s, (
            f"a free consumer took {took:.1f}s to run tasks the busy one was not running "
            f"(lease {producer.config.lease_s:g}s): they were held, not queued"
        )
        journal.open_gate("held")
        for task_id in blocked:
            wait_for_status(producer, task_id, TaskState.SUCCESS, deadlines.run())

    def test_sigterm_drains_running_tasks_and_hands_back_the_rest(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(lease_s=LONG_LEASE_S)
        producer, deadlines = make_producer(config), Deadlines(config)
        draining = consumers.start(config, concurrency=2)
        running = _occupy(producer, journal, deadlines, "drain", slots=2)
        queued = [producer.enqueue_task_sync("echo", [i]).id for i in range(4)]
        draining.terminate()
        successor = consumers.start(config, concurrency=2)
        handed_back = time.monotonic()
        for task_id in queued:
            wait_for_status(producer, task_id, TaskState.SUCCESS, deadlines.run(tasks=4))
        took = time.monotonic() - handed_back
        assert took < producer.config.lease_s, (
            f"the successor took {took:.1f}s to run the tasks the stopping consumer "
            f"held (lease {producer.config.lease_s:g}s): they were not handed back at once"
        )
        assert draining.alive(), "the consumer exited before its running tasks finished"
        journal.open_gate("drain")
        exit_code = wait_for_exit(draining, deadlines.stop(0), "the drained consumer did not exit")
        assert exit_code == 0
        for task_id in running:
            done = wait_for_status(producer, task_id, TaskState.SUCCESS, deadlines.pickup)
            assert done.attempts == 1
        starts = journal.run_counts()
        assert all(starts[t] == 1 for t in running + queued), "a task ran twice"
        assert {e.pid for t in queued for e in journal.runs(t)} == {successor.pid}

    @pytest.mark.parametrize("handler", ["wait_for_gate", "async_wait_for_gate"])
    def test_task_outliving_the_graceful_timeout_is_not_lost(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
        handler: str,
    ) -> None:
        """Handed back at once: another consumer runs it well within one lease."""
        config = make_config(lease_s=LONG_LEASE_S)
        producer, deadlines = make_producer(config), Deadlines(config)
        graceful_timeout_s = 0.5
        stopping = consumers.start(config, concurrency=1, graceful_timeout_s=graceful_timeout_s)
        [task_id] = _occupy(producer, journal, deadlines, "outlive", slots=1, handler=handler)
        stopping.terminate()
        wait_for_exit(
            stopping,
            deadlines.stop(graceful_timeout_s),
            f"the consumer did not exit after SIGTERM and its {graceful_timeout_s}s graceful timeout",
        )
        assert producer.get_task_status_sync(task_id).status in (
            TaskState.PENDING,
            TaskState.STARTED,
            TaskState.RETRY,
        )
        journal.open_gate("outlive")
        consumers.start(config, concurrency=1)
        handed_back = time.monotonic()
        wait_for_status(producer, task_id, TaskState.SUCCESS, deadlines.redelivery)
        took = time.monotonic() - handed_back
        assert len(journal.runs(task_id)) == 2
        assert took < config.lease_s, (
            f"the task came back after {took:.1f}s (lease {config.lease_s:g}s): it was not "
            "handed back when its consumer's graceful timeout ended"
        )
