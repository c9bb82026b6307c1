"""The scenarios of real use, run by :class:`bench.suite.Suite`.

- ``producers``: a producer enqueues while the consumer works, paced at a
  fraction of the baseline's drain rate and unlimited
  (:mod:`bench.scenarios.producers`);
- ``enqueue``: calls per second and CPU per call with one and several
  producer threads (:mod:`bench.scenarios.enqueue_cost`);
- ``roundtrips``: Redis commands per task for enqueue, consume and status
  read (:mod:`bench.scenarios.roundtrips`, on a private Redis);
- ``leftovers``: what is left once the result TTL has passed
  (:mod:`bench.scenarios.leftovers`, on a private Redis);
- ``backlog``: enqueue, status read, queue length and bytes per task as the
  backlog grows (:mod:`bench.scenarios.backlog`, on a private Redis where the
  store is a Redis);
- ``consumers``: 1, 2 and 4 consumer processes draining one backlog
  (:mod:`bench.scenarios.consumers`), and taskserve-celery replicas on one
  and on two local Ray nodes (:mod:`bench.scenarios.two_node_ray`).

Every system of a group is measured in the same run, repetitions interleaved,
so that the report's ratios against the group's baseline (its first system)
compare measurements taken side by side.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from bench import redis_private
from bench.brokers import POSTGRES, REDIS, SQLITE_FILE
from bench.contenders import TASKSERVE, Contender, concurrency_of, contenders
from bench.isolated import TIMEOUT_S, run_isolated
from bench.runner import RunPlan, run
from bench.scenarios.backlog import BacklogResult, measure_backlog
from bench.scenarios.consumers import drain_with_consumers
from bench.scenarios.enqueue_cost import enqueue_cost
from bench.scenarios.leftovers import LeftoverResult
from bench.scenarios.producers import ProducerPlan, run_with_producer
from bench.scenarios.roundtrips import RoundTripResult
from bench.scenarios.two_node_ray import drain_on_nodes
from bench.tasks import TASK_LABELS

if TYPE_CHECKING:
    from bench.settings import Settings
    from bench.suite import Suite

PRODUCERS = "producers"
ENQUEUE = "enqueue"
ROUNDTRIPS = "roundtrips"
LEFTOVERS = "leftovers"
BACKLOG = "backlog"
CONSUMERS = "consumers"
USAGE_SCENARIOS = (PRODUCERS, ENQUEUE, ROUNDTRIPS, LEFTOVERS, BACKLOG, CONSUMERS)
UNLIMITED_DRAIN_WAIT = 3.0
"""After an unlimited producer, how long its backlog is waited for, in producer windows."""


TWO_NODE_GROUP = ("celery", REDIS)
"""The group whose adapter the two-node variant deploys."""
BACKLOG_FILL_RATE_FLOOR = 50.0
"""Slowest fill (tasks/s) a backlog measurement's time limit allows for."""


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.1f} ms"


def side_by_side(engine: str, broker: str) -> list[Contender]:
    """The group's baseline (its raw engine; for sqlite taskserve itself) and
    taskserve's adapter."""
    members = contenders(engine, broker)
    return list(dict.fromkeys([members[0], *(c for c in members if c.system == TASKSERVE)]))


def backlog_sizes(settings: Settings, engine: str, broker: str) -> list[int]:
    """The backlog sizes measured on a group: every size on the groups of
    ``backlog_largest_groups``, up to ``backlog_others_max`` on the others."""
    limit = settings.backlog_others_max
    if limit is None or f"{engine}/{broker}" in settings.backlog_largest_groups:
        return list(settings.backlog_sizes)
    return [size for size in settings.backlog_sizes if size <= limit]


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


def backlogs(suite: Suite, engine: str, broker: str) -> None:
    """Costs at each backlog size of the group's raw engine and taskserve adapter."""
    uses_redis = broker not in (SQLITE_FILE, POSTGRES)
    if uses_redis and not redis_private.available():
        suite.results.skipped.append(f"backlog: {engine}/{broker}: redis-server is not installed")
        return
    settings = suite.settings
    for size in backlog_sizes(settings, engine, broker):
        for contender in side_by_side(engine, broker):
            kwargs: dict[str, Any] = {
                "key": contender.key,
                "broker": broker,
                "size": size,
                "fill_threads": settings.backlog_fill_threads,
                "enqueue_calls": settings.backlog_enqueue_calls,
                "status_reads": settings.backlog_status_reads,
                "metrics_reads": settings.backlog_metrics_reads,
                "workdir": str(suite.workdir),
            }
            if uses_redis:
                limit = TIMEOUT_S + size / BACKLOG_FILL_RATE_FLOOR
                target = "bench.scenarios.backlog:measure_backlog"
                data = suite.measure(
                    f"{contender.key} backlog {size}",
                    partial(run_isolated, target, kwargs, suite.workdir, limit),
                )
                result = None if data is None else BacklogResult(**data)
            else:
                result = suite.measure(
                    f"{contender.key} backlog {size}", partial(measure_backlog, **kwargs)
                )
            if result is None:
                continue
            suite.results.backlogs.append(result)
            suite.checkpoint(suite.results)
            shown = "-" if result.bytes_per_task is None else f"{result.bytes_per_task:,.0f} B"
            suite.log(
                f"{contender.key:32} backlog {size:>9,}  fill {result.fill_rate:6.0f}/s  "
                f"enqueue {result.enqueue_rate:6.0f}/s  status p50 {_ms(result.status_p50_s)} "
                f"p99 {_ms(result.status_p99_s)}  length p50 {_ms(result.metrics_p50_s)} "
                f"p99 {_ms(result.metrics_p99_s)}  {shown} per task ({result.store})"
            )


def consumer_processes(suite: Suite, engine: str, broker: str) -> None:
    """The group's raw engine and taskserve adapter drained by 1, 2, 4 consumer processes."""
    settings = suite.settings
    concurrency = concurrency_of(engine, settings.concurrency)
    for repetition in range(1, settings.repetitions + 1):
        for processes in settings.consumer_processes:
            for contender in side_by_side(engine, broker):
                found = suite.measure(
                    f"{contender.key} {processes} consumers #{repetition}",
                    partial(
                        drain_with_consumers,
                        contender.key,
                        tuple(TASK_LABELS),
                        settings.consumer_tasks,
                        processes,
                        concurrency,
                        settings.backlog_fill_threads,
                        suite.workdir,
                    ),
                )
                for result in found or []:
                    suite.results.consumers.append(result)
                    cpu = " ".join(f"{100 * s / result.cpu_window_s:3.0f}%" for s in result.cpu_s)
                    suite.log(
                        f"{contender.key:32} {result.task:10} {processes} consumer(s) "
                        f"#{repetition}  {result.throughput:7.0f} tasks/s over "
                        f"{result.drain_s:5.2f}s  CPU per process {cpu}"
                    )
                suite.checkpoint(suite.results)


def two_node_consumers(suite: Suite) -> None:
    """taskserve-celery (Redis) replicas on one and on two local Ray nodes."""
    settings = suite.settings
    if not settings.two_node_tasks:
        return
    found = suite.measure(
        "consumers on two Ray nodes",
        partial(
            drain_on_nodes,
            settings.two_node_tasks,
            settings.concurrency,
            settings.backlog_fill_threads,
            suite.workdir,
        ),
    )
    for result in found or []:
        suite.results.two_node.append(result)
        suite.log(
            f"taskserve-celery on {result.nodes} Ray node(s), replicas per node "
            f"{result.replicas_per_node}: {result.throughput:7.0f} tasks/s over "
            f"{result.drain_s:5.2f}s"
        )
    suite.checkpoint(suite.results)
