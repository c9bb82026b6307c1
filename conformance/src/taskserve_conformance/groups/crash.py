"""Consumers killed mid-task (SPEC §4.2, §4.4).

Promises checked: a consumer process killed with SIGKILL loses nothing - its
tasks are delivered again and complete within a bound set by the lease, also
when consumers are killed again and again while holding fetched tasks - and
redeliveries after crashes count toward the attempt budget, so a task that
kills its consumer every time ends in the failed dead-letter queue after
``max_retries + 1`` deliveries instead of looping forever. Duplicate runs are
allowed by at-least-once delivery; the crash test counts them from the
journal and reports them in the run's summary.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from taskserve import Capability, DeadLetterKind, TaskProcessorAdapter, TaskState
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.reporting import DELIVERY_PROPERTY, DeliveryReport
from taskserve_conformance.waiting import wait_for_exit, wait_for_status, wait_until


@requires(Capability.CRASH_REDELIVERY)
class CrashTests:
    """§4.2 and §4.4: SIGKILL loses nothing, and crashes spend the attempt budget."""

    def test_sigkill_mid_task_loses_nothing(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
        record_property: Callable[[str, object], None],
    ) -> None:
        count, duration, concurrency = 24, 0.4, 4
        victim = consumers.start(concurrency=concurrency)
        tasks = [producer.enqueue_task_sync("sleep", [duration]) for _ in range(count)]
        ids = [t.id for t in tasks]
        wait_until(
            lambda: len(journal.run_counts()) >= concurrency,
            deadlines.pickup,
            "the consumer did not start its first tasks",
            interval=0.01,
        )
        victim.kill()
        killed_at = time.monotonic()
        ended = journal.run_counts("end")
        interrupted = [t for t in journal.run_counts() if t in ids and not ended[t]]
        assert interrupted, "the kill came after every started task had ended"

        consumers.start(concurrency=concurrency)
        bound = deadlines.redelivery + deadlines.run(duration, count, concurrency)
        results = [wait_for_status(producer, t, TaskState.SUCCESS, bound) for t in ids]
        recovery_s = time.monotonic() - killed_at

        starts, ends = journal.run_counts(), journal.run_counts("end")
        assert all(starts[t] >= 1 and ends[t] >= 1 for t in ids)
        for task_id in interrupted:
            assert starts[task_id] >= 2, f"task {task_id} was interrupted but not run again"
        assert all(r.result == duration for r in results)
        report = DeliveryReport.from_counts(
            ids, len(results), starts, ends, recovery_s, producer.config.lease_s
        )
        record_property(DELIVERY_PROPERTY, report.as_property())

    def test_repeated_kills_of_busy_consumers_lose_nothing(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
        record_property: Callable[[str, object], None],
    ) -> None:
        """Consumers killed again and again while they hold fetched tasks: every
        task still runs to SUCCESS, and none is left PENDING without a run.

        The attempt budget outlasts the kills: a task run by each killed consumer
        in turn may still succeed (the budget itself is the dead-letter test's)."""
        count, duration, concurrency, kills = 120, 0.2, 4, 3
        config = make_config(max_retries=kills)
        producer, deadlines = make_producer(config), Deadlines(config)
        pool = [consumers.start(config, concurrency=concurrency) for _ in range(2)]
        ids = [producer.enqueue_task_sync("sleep", [duration]).id for _ in range(count)]
        started_kills = time.monotonic()

        def running() -> set[str]:
            entries = journal.entries()
            ended = {e.task_id for e in entries if e.event == "end"}
            return {e.task_id for e in entries if e.event == "start"} - ended

        def state() -> str:
            ended = journal.run_counts("end")
            left = [t for t in ids if not ended[t]]
            statuses = Counter(producer.get_task_status_sync(t).status.value for t in left)
            return f"{len(left)} not ended ({dict(statuses)}), killed {killed}"

        killed = 0
        while killed < kills and len(journal.run_counts("end")) < count:
            wait_until(
                running,
                deadlines.pickup,
                "no task ran while consumers were to be killed",
                describe=state,
            )
            victim = next(c for c in pool if c.alive())
            victim.kill()
            killed += 1
            pool.remove(victim)
            pool.append(consumers.start(config, concurrency=concurrency))
        assert killed >= 1, "every task ended before a consumer could be killed"
        bound = deadlines.redelivery + deadlines.run(duration, count, concurrency)
        results = [wait_for_status(producer, t, TaskState.SUCCESS, bound) for t in ids]
        recovery_s = time.monotonic() - started_kills
        starts, ends = journal.run_counts(), journal.run_counts("end")
        never_run = [t for t in ids if not starts[t]]
        assert not never_run, f"{len(never_run)} task(s) succeeded without a journaled run"
        assert all(r.attempts >= 1 for r in results), "a task finished with 0 attempts"
        report = DeliveryReport.from_counts(
            ids, len(results), starts, ends, recovery_s, producer.config.lease_s
        )
        record_property(DELIVERY_PROPERTY, report.as_property())

    @requires(Capability.DEAD_LETTERS)
    def test_task_killing_its_consumer_every_time_is_dead_lettered(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=1)
        producer, deadlines = make_producer(config), Deadlines(config)
        task = producer.enqueue_task_sync("crash")

        def failed_with_a_consumer_restarted() -> bool:
            if producer.get_task_status_sync(task.id).status is TaskState.FAILURE:
                return True
            if not consumers.alive():  # no wait: it may die before printing its ready line
                consumers.start(config, concurrency=1, wait=False)
            return False

        wait_until(
            failed_with_a_consumer_restarted,
            deadlines.pickup + config.max_attempts * deadlines.redelivery,
            "the task killing its consumer did not end in FAILURE",
            interval=0.1,
        )
        assert len(journal.runs(task.id)) == config.max_attempts
        failed = producer.get_task_status_sync(task.id)
        assert failed.attempts == config.max_attempts
        assert failed.error is not None and failed.error.type.endswith("ConsumerLost")
        [record] = producer.list_dead_letters_sync(DeadLetterKind.FAILED)
        assert record.task_id == task.id
        assert record.task_name == "crash"
        assert record.attempts == config.max_attempts

    def test_crashed_delivery_counts_as_an_attempt(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_retries=1)  # the redelivery is the last attempt allowed
        producer, deadlines = make_producer(config), Deadlines(config)
        first = consumers.start(config, concurrency=1)
        task = producer.enqueue_task_sync("crash_once", kwargs={"result": "second time lucky"})
        wait_for_exit(first, deadlines.pickup, "the first delivery did not kill its consumer")
        consumers.start(config, concurrency=1)
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.redelivery)
        assert done.result == "second time lucky"
        assert done.attempts == 2
        assert [run.attempt for run in journal.runs(task.id)] == [1, 2]
