"""Runs the selected scenarios over the selected adapters and brokers."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench.brokers import REDIS, reachable
from bench.contenders import GROUPS, RAY, TASKSERVE, Contender, concurrency_of, contenders
from bench.machine import describe
from bench.results import Results
from bench.runner import RunPlan, run, size_tasks
from bench.settings import Settings
from bench.tasks import TASK_LABELS

THROUGHPUT = "throughput"
CRASH = "crash"
SERVE = "serve"
AUTOSCALING = "autoscaling"
SCENARIOS = (THROUGHPUT, CRASH, SERVE, AUTOSCALING)

Log = Callable[[str], None]


def select_groups(patterns: Sequence[str] | None) -> list[tuple[str, str]]:
    """The (engine, broker) groups matching any pattern (``celery``, ``celery/redis``)."""
    if not patterns:
        return list(GROUPS)
    chosen = [
        (engine, broker)
        for engine, broker in GROUPS
        if any(f"{engine}/{broker}".startswith(pattern.strip("/")) for pattern in patterns)
    ]
    if not chosen:
        known = ", ".join(f"{engine}/{broker}" for engine, broker in GROUPS)
        raise ValueError(f"no adapter/broker matches {', '.join(patterns)}; known: {known}")
    return chosen


def _reachable_groups(groups: list[tuple[str, str]], results: Results) -> list[tuple[str, str]]:
    found = []
    for engine, broker in groups:
        if reachable(broker):
            found.append((engine, broker))
        else:
            results.skipped.append(f"{engine}/{broker}: {broker} is not reachable")
    return found


def _throughput(
    settings: Settings, groups: list[tuple[str, str]], results: Results, workdir: Path, log: Log
) -> None:
    for engine, broker in groups:
        members = contenders(engine, broker)
        concurrency = concurrency_of(engine, settings.concurrency)
        for task in TASK_LABELS:
            sizes: dict[Contender, int] = {}
            for contender in members:
                if settings.tasks is not None:
                    sizes[contender] = settings.tasks
                    continue
                plan = RunPlan(task, settings.calibration_tasks, concurrency, latency_samples=0)
                calibration = run(contender, plan, workdir)
                sizes[contender] = size_tasks(calibration.throughput, settings.target_s)
            for repetition in range(1, settings.repetitions + 1):
                for contender in members:  # interleaved, so drift hits every system alike
                    plan = RunPlan(task, sizes[contender], concurrency, settings.latency_samples)
                    result = run(contender, plan, workdir)
                    results.runs.append(result)
                    log(
                        f"{contender.key:32} {task:10} #{repetition}  N={result.tasks:<6} "
                        f"{result.throughput:7.0f} tasks/s over {result.drain_s:5.1f}s  "
                        f"enqueue {result.enqueue_rate:6.0f}/s"
                    )


def _crash(
    settings: Settings, groups: list[tuple[str, str]], results: Results, workdir: Path, log: Log
) -> None:
    from bench.scenarios.crash import crash_to_redelivery

    for engine, broker in groups:
        for contender in contenders(engine, broker):
            if contender.system not in (TASKSERVE, RAY):
                continue
            result = crash_to_redelivery(
                contender, settings.crash_lease_s, settings.crash_wait_s, workdir
            )
            results.crashes.append(result)
            shown = (
                f"{result.redelivery_s:.2f}s"
                if result.redelivery_s is not None
                else f"not within {result.wait_s:g}s"
            )
            log(f"{contender.key:32} crash to redelivery {shown}")


def _serve(
    settings: Settings, scenarios: Sequence[str], results: Results, workdir: Path, log: Log
) -> None:
    from bench.scenarios.autoscaling import POLICIES, run_policy
    from bench.scenarios.local_serve import local_serve
    from bench.scenarios.startup import SYSTEMS, serve_run_to_first_success

    autoscaling = AUTOSCALING in scenarios
    if autoscaling and not reachable(REDIS):
        results.skipped.append("autoscaling: Redis is not reachable")
        autoscaling = False
    with local_serve() as cold_start:
        results.serve_cold_start_s = cold_start
        log(f"Ray and Serve started in {cold_start:.1f}s")
        if SERVE in scenarios:
            systems = [s for s in SYSTEMS if reachable(s.broker)]
            for _ in range(settings.serve_repetitions):
                for contender in systems:
                    startup = serve_run_to_first_success(contender, workdir)
                    results.startups.append(startup)
                    log(
                        f"{contender.key:32} serve.run returned in {startup.serve_run_s:.2f}s, "
                        f"first SUCCESS after {startup.first_success_s:.2f}s"
                    )
        if autoscaling:
            for policy in POLICIES:
                outcome = run_policy(
                    policy, settings.autoscaling_tasks, settings.autoscaling_task_s, workdir
                )
                results.autoscaling.append(outcome)
                log(
                    f"{policy}: all done in {outcome.wall_s}s, peak {outcome.peak_replicas} "
                    f"replicas, timeline {outcome.timeline}"
                )


def run_suite(
    settings: Settings,
    groups: list[tuple[str, str]],
    scenarios: Sequence[str],
    workdir: Path,
    log: Log,
) -> Results:
    """Measure ``scenarios`` on ``groups``; the Serve scenarios run last, once
    the throughput runs are over (Ray's processes would compete with them)."""
    started = time.perf_counter()
    results = Results(
        settings=asdict(settings),
        machine=describe(),
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    groups = _reachable_groups(groups, results)
    if THROUGHPUT in scenarios:
        _throughput(settings, groups, results, workdir, log)
    if CRASH in scenarios:
        _crash(settings, groups, results, workdir, log)
    if SERVE in scenarios or AUTOSCALING in scenarios:
        if importlib.util.find_spec("ray") is None:
            results.skipped.append("serve, autoscaling: ray[serve] is not installed")
        else:
            _serve(settings, scenarios, results, workdir, log)
    results.wall_s = time.perf_counter() - started
    return results
