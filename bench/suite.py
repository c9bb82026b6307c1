"""Runs the selected scenarios over the selected adapters and brokers.

A failing measurement is logged and listed in the results as skipped; the
others go on. The results are handed to ``checkpoint`` after every
measurement, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import importlib.util
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from bench.brokers import REDIS, reachable
from bench.contenders import GROUPS, RAY, TASKSERVE, Contender, concurrency_of, contenders
from bench.machine import describe
from bench.results import Results
from bench.runner import RunPlan, run, size_tasks
from bench.scenarios.batching import BATCHING, batching
from bench.settings import Settings
from bench.tasks import TASK_LABELS
from bench.usage_suite import (
    CONSUMERS,
    TWO_NODE_GROUP,
    USAGE_SCENARIOS,
    backlogs,
    consumer_processes,
    enqueues,
    leftovers,
    producers,
    roundtrips,
    two_node_consumers,
)

THROUGHPUT = "throughput"
CRASH = "crash"
SERVE = "serve"
AUTOSCALING = "autoscaling"
DELAY = "delay"
SCENARIOS = (THROUGHPUT, CRASH, DELAY, *USAGE_SCENARIOS, BATCHING, SERVE, AUTOSCALING)
_USAGE_RUNS = dict(
    zip(
        USAGE_SCENARIOS,
        (producers, enqueues, roundtrips, leftovers, backlogs, consumer_processes),
        strict=True,
    )
)

Log = Callable[[str], None]
_T = TypeVar("_T")


DELAY_INTERVAL_S = 0.02
"""Time between two enqueues of the delayed-task scenario."""
DELAYS_S = (0.5, 2.5)
"""Range of the delays drawn in the delayed-task scenario."""


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.0f} ms"


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


class Suite:
    """One benchmark run: the settings, where its files go, and what it measured."""

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        log: Log,
        checkpoint: Callable[[Results], None] = lambda _: None,
    ) -> None:
        self.settings = settings
        self.workdir = workdir
        self.log = log
        self.checkpoint = checkpoint
        self.results = Results(
            settings=asdict(settings),
            machine=describe(),
            started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )

    def measure(self, what: str, measure: Callable[[], _T]) -> _T | None:
        """``measure()``, or None (logged, listed as skipped) if it raised."""
        try:
            return measure()
        except Exception as e:
            self.log(f"{what} failed:\n{traceback.format_exc()}")
            self.results.skipped.append(f"{what}: {type(e).__name__}: {e}")
            return None

    def run(self, groups: list[tuple[str, str]], scenarios: Sequence[str]) -> Results:
        """Measure ``scenarios`` on ``groups``; the Serve scenarios run last, once
        the throughput runs are over (Ray's processes would compete with them)."""
        started = time.perf_counter()
        reachable_groups = []
        for engine, broker in groups:
            if reachable(broker):
                reachable_groups.append((engine, broker))
            else:
                self.results.skipped.append(f"{engine}/{broker}: {broker} is not reachable")
        if THROUGHPUT in scenarios:
            for engine, broker in reachable_groups:
                self._throughput(engine, broker)
        if CRASH in scenarios:
            for engine, broker in reachable_groups:
                self._crash(engine, broker)
        if DELAY in scenarios:
            for engine, broker in reachable_groups:
                self._delay(engine, broker)
        for name, measure_group in _USAGE_RUNS.items():
            if name in scenarios:
                for engine, broker in reachable_groups:
                    measure_group(self, engine, broker)
        if BATCHING in scenarios:
            for engine, broker in reachable_groups:
                batching(self, engine, broker)
        if CONSUMERS in scenarios and TWO_NODE_GROUP in reachable_groups:
            if importlib.util.find_spec("ray") is None:
                self.results.skipped.append("consumers on two Ray nodes: ray is not installed")
            else:
                two_node_consumers(self)
        if SERVE in scenarios or AUTOSCALING in scenarios:
            if importlib.util.find_spec("ray") is None:
                self.results.skipped.append("serve, autoscaling: ray[serve] is not installed")
            else:
                self._serve(scenarios)
        self.results.wall_s = time.perf_counter() - started
        self.checkpoint(self.results)
        return self.results

    def _throughput(self, engine: str, broker: str) -> None:
        settings = self.settings
        members = contenders(engine, broker)
        concurrency = concurrency_of(engine, settings.concurrency)
        for task in TASK_LABELS:
            sizes: dict[Contender, int] = {}
            for contender in members:
                if settings.tasks is not None:
                    sizes[contender] = settings.tasks
                    continue
                plan = RunPlan(task, settings.calibration_tasks, concurrency, latency_samples=0)
                calibration = self.measure(
                    f"{contender.key} {task} calibration",
                    partial(run, contender, plan, self.workdir),
                )
                if calibration is not None:
                    sizes[contender] = size_tasks(calibration.throughput, settings.target_s)
            for repetition in range(1, settings.repetitions + 1):
                for contender in members:  # interleaved, so drift hits every system alike
                    if contender not in sizes:
                        continue
                    plan = RunPlan(task, sizes[contender], concurrency, settings.latency_samples)
                    result = self.measure(
                        f"{contender.key} {task} #{repetition}",
                        partial(run, contender, plan, self.workdir),
                    )
                    if result is None:
                        continue
                    self.results.runs.append(result)
                    self.checkpoint(self.results)
                    self.log(
                        f"{contender.key:32} {task:10} #{repetition}  N={result.tasks:<6} "
                        f"{result.throughput:7.0f} tasks/s over {result.drain_s:5.1f}s  "
                        f"enqueue {result.enqueue_rate:6.0f}/s  "
                        f"p50 {1000 * (result.latency_p50_s or 0):.1f} ms"
                    )

    def _crash(self, engine: str, broker: str) -> None:
        from bench.scenarios.crash import crash_to_redelivery

        settings = self.settings
        for contender in contenders(engine, broker):
            if contender.system not in (TASKSERVE, RAY):
                continue
            result = self.measure(
                f"{contender.key} crash",
                partial(
                    crash_to_redelivery,
                    contender,
                    settings.crash_lease_s,
                    settings.crash_wait_s,
                    self.workdir,
                ),
            )
            if result is None:
                continue
            self.results.crashes.append(result)
            self.checkpoint(self.results)
            shown = (
                f"{result.redelivery_s:.2f}s"
                if result.redelivery_s is not None
                else f"not within {result.wait_s:g}s"
            )
            self.log(f"{contender.key:32} crash to redelivery {shown}")

    def _delay(self, engine: str, broker: str) -> None:
        from bench.scenarios.delayed import delayed_lateness

        for contender in contenders(engine, broker):
            if contender.system != TASKSERVE:
                continue
            result = self.measure(
                f"{contender.key} delay",
                partial(
                    delayed_lateness,
                    contender,
                    self.settings.delayed_tasks,
                    DELAY_INTERVAL_S,
                    DELAYS_S,
                    self.workdir,
                ),
            )
            if result is None:
                continue
            self.results.delays.append(result)
            self.checkpoint(self.results)
            self.log(
                f"{contender.key:32} delayed tasks: {result.started}/{result.tasks} started, "
                f"{result.early} early, lateness p50 {_ms(result.lateness_p50_s)} "
                f"p99 {_ms(result.lateness_p99_s)} max {_ms(result.lateness_max_s)}"
            )

    def _serve(self, scenarios: Sequence[str]) -> None:
        from bench.scenarios.local_serve import local_serve

        with local_serve() as cold_start:
            self.results.serve_cold_start_s = cold_start
            self.log(f"Ray and Serve started in {cold_start:.1f}s")
            if SERVE in scenarios:
                self._startups()
            if AUTOSCALING in scenarios:
                if reachable(REDIS):
                    self._autoscaling()
                else:
                    self.results.skipped.append("autoscaling: Redis is not reachable")

    def _startups(self) -> None:
        from bench.scenarios.startup import SYSTEMS, serve_run_to_first_success

        systems = [s for s in SYSTEMS if reachable(s.broker)]
        for _ in range(self.settings.serve_repetitions):
            for contender in systems:
                startup = self.measure(
                    f"{contender.key} serve.run",
                    partial(serve_run_to_first_success, contender, self.workdir),
                )
                if startup is None:
                    continue
                self.results.startups.append(startup)
                self.checkpoint(self.results)
                self.log(
                    f"{contender.key:32} serve.run returned in {startup.serve_run_s:.2f}s, "
                    f"first SUCCESS after {startup.first_success_s:.2f}s"
                )

    def _autoscaling(self) -> None:
        from bench.scenarios.autoscaling import POLICIES, run_policy

        settings = self.settings
        for policy in POLICIES:
            outcome = self.measure(
                f"autoscaling, {policy}",
                partial(
                    run_policy,
                    policy,
                    settings.autoscaling_tasks,
                    settings.autoscaling_task_s,
                    self.workdir,
                ),
            )
            if outcome is None:
                continue
            self.results.autoscaling.append(outcome)
            self.checkpoint(self.results)
            wall = f"{outcome.wall_s:.1f}s" if outcome.wall_s is not None else "did not finish"
            self.log(
                f"{policy}: all done after {wall}, peak {outcome.peak_replicas} replicas, "
                f"(RUNNING, STOPPING) over time {outcome.timeline}"
            )
