"""The scenarios of real use, run by :class:`bench.suite.Suite`.

- ``producers``: a producer enqueues while the consumer works, paced at a
  fraction of the baseline's drain rate and unlimited
  (:mod:`bench.scenarios.producers`);
- ``enqueue``: calls per second and CPU per call with one and several
  producer threads (:mod:`bench.scenarios.enqueue_cost`);
- ``roundtrips``: Redis commands per task for enqueue, consume and status
  read (:mod:`bench.scenarios.roundtrips`, on a private Redis);
- ``leftovers``: what is left once the result TTL has passed
  (:mod:`bench.scenarios.leftovers`, on a private Redis).

Every system of a group is measured in the same run, repetitions interleaved,
so that the report's ratios against the group's baseline (its first system)
compare measurements taken side by side.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from bench import redis_private
from bench.brokers import POSTGRES, SQLITE_FILE
from bench.contenders import TASKSERVE, Contender, concurrency_of, contenders
from bench.isolated import run_isolated
from bench.runner import RunPlan, run
from bench.scenarios.enqueue_cost import enqueue_cost
from bench.scenarios.leftovers import LeftoverResult
from bench.scenarios.producers import ProducerPlan, run_with_producer
from bench.scenarios.roundtrips import RoundTripResult

if TYPE_CHECKING:
    from bench.suite import Suite

PRODUCERS = "producers"
ENQUEUE = "enqueue"
ROUNDTRIPS = "roundtrips"
LEFTOVERS = "leftovers"
USAGE_SCENARIOS = (PRODUCERS, ENQUEUE, ROUNDTRIPS, LEFTOVERS)
UNLIMITED_DRAIN_WAIT = 3.0
"""After an unlimited producer, how long its backlog is waited for, in producer windows."""


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.1f} ms"


def baseline_rate(suite: Suite, contender: Contender, task: str) -> float | None:
    """The drain rate of ``contender`` on ``task``: the median of this run's
    throughput runs if there are any, else one drain of the calibration size."""
    measured = [
        r.throughput for r in suite.results.runs if r.key == contender.key and r.task == task
    ]
    if measured:
        return statistics.median(measured)
    settings = suite.settings
    tasks = settings.tasks or settings.calibration_tasks
    plan = RunPlan(task, tasks, concurrency_of(contender.engine, settings.concurrency), 0)
    result = suite.measure(
        f"{contender.key} {task} drain rate", partial(run, contender, plan, suite.workdir)
    )
    return None if result is None else result.throughput


def producers(suite: Suite, engine: str, broker: str) -> None:
    """Paced and unlimited producers on every system of the group."""
    settings = suite.settings
    members = contenders(engine, broker)
    concurrency = concurrency_of(engine, settings.concurrency)
    for task in settings.producer_tasks:
        drain = baseline_rate(suite, members[0], task)
        if drain is None:
            continue
        suite.results.baselines[f"{members[0].key} {task}"] = drain
        rates = (drain * settings.producer_load, None)
        for repetition in range(1, settings.repetitions + 1):
            for rate in rates:
                for contender in members:
                    plan = ProducerPlan(task, rate, settings.producer_s, concurrency)
                    if rate is None:  # its backlog may take long: latency over what is done
                        plan = replace(plan, drain_wait_s=UNLIMITED_DRAIN_WAIT * plan.duration_s)
                    shown = "unlimited" if rate is None else f"{rate:.0f}/s"
                    result = suite.measure(
                        f"{contender.key} {task} producer {shown} #{repetition}",
                        partial(run_with_producer, contender, plan, suite.workdir),
                    )
                    if result is None:
                        continue
                    suite.results.producers.append(result)
                    suite.checkpoint(suite.results)
                    suite.log(
                        f"{contender.key:32} {task:10} producer {shown:>9} #{repetition}  "
                        f"enqueued {result.enqueue_rate:6.0f}/s  done {result.completed_rate:6.0f}/s  "
                        f"backlog {result.backlog:5}  p50 {_ms(result.latency_p50_s)}  "
                        f"p99 {_ms(result.latency_p99_s)}"
                    )


def enqueues(suite: Suite, engine: str, broker: str) -> None:
    """Enqueue cost of every system of the group, for each thread count."""
    settings = suite.settings
    members = contenders(engine, broker)
    for repetition in range(1, settings.repetitions + 1):
        for threads in settings.enqueue_threads:
            for contender in members:
                result = suite.measure(
                    f"{contender.key} enqueue x{threads} #{repetition}",
                    partial(
                        enqueue_cost,
                        contender,
                        "noop",
                        settings.enqueue_calls,
                        threads,
                        suite.workdir,
                    ),
                )
                if result is None:
                    continue
                suite.results.enqueues.append(result)
                suite.checkpoint(suite.results)
                suite.log(
                    f"{contender.key:32} enqueue, {threads} thread(s) #{repetition}  "
                    f"{result.calls_per_s:7.0f} calls/s  "
                    f"{1e6 * result.cpu_per_call_s:6.0f} us CPU per call"
                )


def roundtrips(suite: Suite, engine: str, broker: str) -> None:
    """Redis commands per task of every Redis-backed system of the group."""
    if broker in (SQLITE_FILE, POSTGRES):
        suite.results.skipped.append(f"roundtrips: {engine}/{broker} uses no Redis")
        return
    if not redis_private.available():
        suite.results.skipped.append("roundtrips: redis-server is not installed")
        return
    settings = suite.settings
    for repetition in range(1, settings.repetitions + 1):
        for contender in contenders(engine, broker):
            kwargs = {
                "key": contender.key,
                "tasks": settings.roundtrip_tasks,
                "concurrency": concurrency_of(engine, settings.concurrency),
                "idle_s": settings.roundtrip_idle_s,
                "workdir": str(suite.workdir),
            }
            data = suite.measure(
                f"{contender.key} roundtrips #{repetition}",
                partial(
                    run_isolated,
                    "bench.scenarios.roundtrips:count_round_trips",
                    kwargs,
                    suite.workdir,
                ),
            )
            if data is None:
                continue
            result = RoundTripResult(**data)
            suite.results.roundtrips.append(result)
            suite.checkpoint(suite.results)
            suite.log(
                f"{contender.key:32} Redis round trips per task #{repetition}: "
                f"enqueue {result.enqueue:.1f}, consume {result.consume:.1f}, "
                f"status {result.status:.1f}; idle consumer {result.idle_per_s:.1f}/s"
            )


def leftovers(suite: Suite, engine: str, broker: str) -> None:
    """What taskserve's adapter of the group leaves once the result TTL has passed."""
    if not redis_private.available():
        suite.results.skipped.append("leftovers: redis-server is not installed")
        return
    settings = suite.settings
    for contender in contenders(engine, broker):
        if contender.system != TASKSERVE:
            continue
        kwargs = {
            "key": contender.key,
            "tasks": settings.leftover_tasks,
            "result_ttl_s": settings.leftover_ttl_s,
            "wait_s": settings.leftover_wait_s,
            "workdir": str(suite.workdir),
        }
        data = suite.measure(
            f"{contender.key} leftovers",
            partial(
                run_isolated,
                "bench.scenarios.leftovers:leftovers_after_ttl",
                kwargs,
                suite.workdir,
            ),
        )
        if data is None:
            continue
        result = LeftoverResult(**data)
        suite.results.leftovers.append(result)
        suite.checkpoint(suite.results)
        cleared = (
            f"cleared {result.cleared_after_s:.1f}s past the TTL"
            if result.cleared_after_s is not None
            else f"still {sum(result.left.values())} entries {result.wait_s:g}s past the TTL: "
            + ", ".join(f"{name} ({count})" for name, count in result.left.items())
        )
        suite.log(
            f"{contender.key:32} {result.tasks} tasks, TTL {result.result_ttl_s:g}s: {cleared}"
        )
