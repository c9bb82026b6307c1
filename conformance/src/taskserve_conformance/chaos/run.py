"""One chaos run: producers, killed and replaced consumers, a broker restart, a count.

The run starts ``consumers`` consumer processes, enqueues ``tasks`` tasks from
``producers`` threads while they work (each task with an idempotency key, so
a producer that retries an enqueue the broker refused mid-restart never
creates a second task), SIGKILLs a random consumer every ``kill_every_s``
seconds and starts a replacement, restarts the broker once (``restart``)
when half the tasks are enqueued, stops killing once most tasks are done,
then waits until every task is finished or nothing moved for ``stall_s``.
The report counts every task from the journal and the store.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taskserve import (
    BrokerUnavailable,
    Capability,
    TaskNotFound,
    TaskProcessorAdapter,
    TaskProcessorConfig,
    TaskState,
    instantiate_adapter_from_config,
)
from taskserve.kit import LedgerStore
from taskserve_conformance.chaos.handlers import expected_result
from taskserve_conformance.consumers import ConsumerPool, ConsumerProcess, ConsumerStartError
from taskserve_conformance.journal import Journal

HANDLERS_SPEC = "taskserve_conformance.chaos.handlers:HANDLERS"

_TERMINAL = {TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED}

_CLOCK_SLACK_S = 0.02
"""Tolerance for comparing a due time with a start written by another process."""


@dataclass(frozen=True)
class ChaosSettings:
    """How hard a chaos run pushes."""

    tasks: int = 1000
    consumers: int = 3
    concurrency: int = 6
    producers: int = 2
    work_ms: float = 50.0
    """How long a task pretends to work, on average (uniform between 0 and twice
    this), so that kills interrupt running tasks."""
    kill_every_s: tuple[float, float] = (1.0, 3.0)
    max_kills: int | None = None
    """Stop killing after this many kills (None: until most tasks are done)."""
    min_kills: int = 1
    """Kill at least this many times, however fast the tasks finish."""
    stop_killing_at: float = 0.9
    """Fraction of tasks finished after which no consumer is killed any more."""
    restart_at: float | None = 0.5
    """Fraction of tasks enqueued at which the broker restarts (None: never)."""
    stall_s: float = 120.0
    """The run ends when nothing finished for this long after the last kill."""
    enqueue_retry_s: float = 120.0
    """How long a producer keeps retrying one enqueue the broker refuses."""
    delayed_every: int = 10
    """Every this many tasks, one is enqueued with a delay (0: none), so that
    delayed tasks wait across kills and the broker restart."""
    delay_s: tuple[float, float] = (0.5, 3.0)
    """Range of those delays."""


@dataclass
class ChaosReport:
    """What a chaos run found; every count is of task ids."""

    adapter: str
    tasks: int
    succeeded: int
    lost: int
    """Never run and not finished: the promise broken."""
    stuck: int
    """Run at least once, not finished when the run ended."""
    failed: int
    duplicate_runs: int
    """Tasks run more than once (at-least-once allows it; reported)."""
    extra_runs: int
    duplicate_completions: int
    wrong_results: int
    backward_moves: int
    """Status seen leaving SUCCESS, FAILURE or CANCELLED."""
    delayed: int
    """Tasks enqueued with a delay."""
    started_early: int
    """Delayed tasks that started (any run) before they were due."""
    kills: int
    restarts: int
    enqueue_retries: int
    rerun_after_kill_s: dict[str, float] = field(default_factory=dict)
    """p50, p99 and max seconds from a kill to the next start of a task it interrupted."""
    rerun_clear_of_restart_s: dict[str, float] = field(default_factory=dict)
    """The same, for the kills whose rerun did not wait on the broker restart
    (the broker was reachable from the kill to the rerun)."""
    republished: dict[str, int] | None = None
    """How often the store's ledger published a task again, by reason: ``lost``
    (the engine lost its message) and ``lease`` (its consumer died); None for
    stores without a ledger."""
    lease_s: float = 0.0
    duration_s: float = 0.0
    lost_ids: list[str] = field(default_factory=list)
    stuck_ids: list[str] = field(default_factory=list)

    def line(self) -> str:
        """A one-line summary."""
        rerun = self.rerun_after_kill_s
        return (
            f"{self.adapter}: {self.succeeded}/{self.tasks} succeeded, {self.lost} lost, "
            f"{self.stuck} stuck, {self.duplicate_runs} run twice or more "
            f"({self.duplicate_completions} duplicate completions), {self.wrong_results} wrong "
            f"results, {self.backward_moves} backward moves, {self.started_early} of "
            f"{self.delayed} delayed tasks started early; {self.kills} kills, "
            f"{self.restarts} broker restart(s), {self.enqueue_retries} enqueue retries, "
            f"republished {self.republished}; kill -> rerun p50 {rerun.get('p50', 0):.2f}s "
            f"p99 {rerun.get('p99', 0):.2f}s max {rerun.get('max', 0):.2f}s "
            f"(max {self.rerun_clear_of_restart_s.get('max', 0):.2f}s clear of the restart; "
            f"lease {self.lease_s:g}s); {self.duration_s:.0f}s"
        )

    def to_json(self) -> str:
        """The report as JSON."""
        return json.dumps(asdict(self), indent=2)


class _Kills:
    """When each consumer was killed."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}

    def record(self, pid: int) -> None:
        self.at[pid] = time.time()


class ChaosRun:
    """One run against ``config``; see the module docstring."""

    def __init__(
        self,
        config: TaskProcessorConfig,
        workdir: Path,
        settings: ChaosSettings | None = None,
        restart: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.settings = settings or ChaosSettings()
        self.workdir = workdir
        self.restart = restart
        self.journal = Journal(workdir / "journal")
        self._run_id = uuid.uuid4().hex[:12]
        self._ids: dict[int, str] = {}
        self._adapter_class: type[TaskProcessorAdapter] | None = None
        self._due: dict[str, float] = {}
        """Task id -> due time of the tasks enqueued with a delay."""
        self._ids_lock = threading.Lock()
        self._enqueue_retries = 0
        self._producer_errors: list[BaseException] = []
        self._restarts = 0
        self._restart_window: tuple[float, float] | None = None
        self._kills = _Kills()
        self._stop = threading.Event()
        self._backward: set[str] = set()
        self._seen_terminal: dict[str, TaskState] = {}

    # -- the run ---------------------------------------------------------------
    def run(self) -> ChaosReport:
        """Run to the end and return the count."""
        started = time.monotonic()
        settings = self.settings
        pool = ConsumerPool(self.journal, self.config, self.workdir / "consumers", 60.0)
        producer = instantiate_adapter_from_config(self.config)
        self._adapter_class = type(producer)
        try:
            for _ in range(settings.consumers):
                self._start_consumer(pool)
            producers = [
                threading.Thread(
                    target=self._produce, args=(producer, slice_), name=f"chaos-producer-{n}"
                )
                for n, slice_ in enumerate(self._slices())
            ]
            for thread in producers:
                thread.start()
            watcher = threading.Thread(target=self._watch, args=(producer,), name="chaos-watch")
            watcher.start()
            self._kill_and_restart(pool, producer, producers)
            for thread in producers:
                thread.join()
            if self._producer_errors:
                error = self._producer_errors[0]
                raise RuntimeError(f"a chaos producer stopped: {error!r}") from error
            statuses = self._drain(producer)
            self._stop.set()
            watcher.join()
            return self._report(producer, statuses, time.monotonic() - started)
        finally:
            self._stop.set()
            pool.reap()
            producer.shutdown()

    def _slices(self) -> list[range]:
        n, p = self.settings.tasks, max(self.settings.producers, 1)
        return [range(i, n, p) for i in range(p)]

    def _start_consumer(self, pool: ConsumerPool) -> ConsumerProcess:
        """Start a consumer; one that exits before it is ready (the broker is
        restarting, or still loading its data) is started again, as a
        supervisor would, for up to ``stall_s``."""
        deadline = time.monotonic() + self.settings.stall_s
        while True:
            try:
                return pool.start(
                    self.config,
                    concurrency=self.settings.concurrency,
                    graceful_timeout_s=5.0,
                    handlers=HANDLERS_SPEC,
                )
            except ConsumerStartError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    @property
    def _delays(self) -> bool:
        """Whether the adapter takes delays (others get no delayed tasks)."""
        return self._adapter_class is not None and self._adapter_class.supports(
            Capability.DELAYED_TASKS
        )

    def _produce(self, producer: TaskProcessorAdapter, indexes: range) -> None:
        try:
            self._produce_slice(producer, indexes)
        except BaseException as e:  # reported by run(), not lost in the thread
            with self._ids_lock:
                self._producer_errors.append(e)
            self._stop.set()

    def _produce_slice(self, producer: TaskProcessorAdapter, indexes: range) -> None:
        for index in indexes:
            if self._stop.is_set():
                return
            key = f"chaos-{self._run_id}-{index}"
            deadline = time.monotonic() + self.settings.enqueue_retry_s
            work_ms = random.uniform(0, 2 * self.settings.work_ms)  # one payload per key
            every = self.settings.delayed_every if self._delays else 0
            delay_s = (
                random.uniform(*self.settings.delay_s) if every and index % every == 0 else None
            )
            while True:
                try:
                    task = producer.enqueue_task_sync(
                        "chaos_work", [index, work_ms], idempotency_key=key, delay_s=delay_s
                    )
                    break
                except BrokerUnavailable:  # anything else is a failure of the run
                    if time.monotonic() > deadline:
                        raise
                    with self._ids_lock:
                        self._enqueue_retries += 1
                    time.sleep(0.1)
            with self._ids_lock:
                self._ids[index] = task.id
                if delay_s is not None:
                    # A retried enqueue returns the first record; its due time counts.
                    self._due[task.id] = task.due_at if task.due_at is not None else 0.0

    def _enqueued(self) -> int:
        with self._ids_lock:
            return len(self._ids)

    def _finished(self) -> int:
        return len(self.journal.run_counts("end"))

    def _kill_and_restart(
        self, pool: ConsumerPool, producer: TaskProcessorAdapter, producers: list[threading.Thread]
    ) -> None:
        settings = self.settings
        restart_due = self.restart is not None and settings.restart_at is not None
        kills = 0
        while True:
            time.sleep(random.uniform(*settings.kill_every_s))
            done = self._finished() >= settings.stop_killing_at * settings.tasks
            enqueuing = any(t.is_alive() for t in producers)
            if restart_due and self._enqueued() >= (settings.restart_at or 0) * settings.tasks:
                assert self.restart is not None
                began = time.time()
                self.restart()
                self._restart_window = (began, time.time())
                self._restarts += 1
                restart_due = False
            if done and not enqueuing and not restart_due and kills >= settings.min_kills:
                return
            if settings.max_kills is not None and kills >= settings.max_kills:
                if not enqueuing and not restart_due:
                    return
                continue
            alive = pool.alive()
            if alive:
                victim = random.choice(alive)
                victim.kill()
                self._kills.record(victim.pid)
                kills += 1
            self._start_consumer(pool)

    def _watch(self, producer: TaskProcessorAdapter) -> None:
        """Sample statuses; note any that leaves a terminal state."""
        while not self._stop.wait(0.2):
            with self._ids_lock:
                sample = random.sample(list(self._ids.values()), min(len(self._ids), 100))
            for task_id in sample:
                self._observe(producer, task_id)

    def _observe(self, producer: TaskProcessorAdapter, task_id: str) -> TaskState | None:
        try:
            status = producer.get_task_status_sync(task_id).status
        except TaskNotFound:
            return None
        except Exception:
            return None  # the broker restarts: read again later
        seen = self._seen_terminal.get(task_id)
        if seen is not None and status is not seen:
            self._backward.add(task_id)
        if status in _TERMINAL:
            self._seen_terminal[task_id] = status
        return status

    def _drain(self, producer: TaskProcessorAdapter) -> dict[str, TaskState | None]:
        """Wait until every task is finished, or nothing finished for ``stall_s``."""
        pending = set(self._ids.values())
        statuses: dict[str, TaskState | None] = {}
        last_progress = time.monotonic()
        while pending and time.monotonic() - last_progress < self.settings.stall_s:
            for task_id in list(pending):
                status = self._observe(producer, task_id)
                statuses[task_id] = status
                if status in _TERMINAL:
                    pending.discard(task_id)
                    last_progress = time.monotonic()
            if pending:
                time.sleep(0.5)
        for task_id in pending:
            statuses[task_id] = self._observe(producer, task_id)
        return statuses

    # -- the count -----------------------------------------------------------------
    def _report(
        self,
        producer: TaskProcessorAdapter,
        statuses: dict[str, TaskState | None],
        duration_s: float,
    ) -> ChaosReport:
        entries = self.journal.entries()
        delays = self._rerun_delays(entries)
        starts = Counter(e.task_id for e in entries if e.event == "start")
        ends = Counter(e.task_id for e in entries if e.event == "end")
        ids = set(self._ids.values())
        index_of = {task_id: index for index, task_id in self._ids.items()}
        wrong = 0
        for task_id in ids:
            if statuses.get(task_id) is TaskState.SUCCESS:
                result = producer.get_task_status_sync(task_id).result
                if result != expected_result(index_of[task_id]):
                    wrong += 1
        first_start: dict[str, float] = {}
        for entry in entries:
            if entry.event == "start" and entry.task_id not in first_start:
                first_start[entry.task_id] = entry.time
        early = sum(
            1
            for task_id, due in self._due.items()
            if task_id in first_start and first_start[task_id] < due - _CLOCK_SLACK_S
        )
        lost = sorted(t for t in ids if statuses.get(t) not in _TERMINAL and not starts[t])
        stuck = sorted(t for t in ids if statuses.get(t) not in _TERMINAL and starts[t])
        return ChaosReport(
            adapter=f"{producer.alias or type(producer).__name__}",
            tasks=len(ids),
            succeeded=sum(1 for t in ids if statuses.get(t) is TaskState.SUCCESS),
            lost=len(lost),
            stuck=len(stuck),
            failed=sum(1 for t in ids if statuses.get(t) is TaskState.FAILURE),
            duplicate_runs=sum(1 for t in ids if starts[t] > 1),
            extra_runs=sum(starts[t] - 1 for t in ids if starts[t] > 1),
            duplicate_completions=sum(1 for t in ids if ends[t] > 1),
            wrong_results=wrong,
            backward_moves=len(self._backward),
            delayed=len(self._due),
            started_early=early,
            kills=len(self._kills.at),
            restarts=self._restarts,
            enqueue_retries=self._enqueue_retries,
            rerun_after_kill_s=_distribution(d for _, _, d in delays),
            rerun_clear_of_restart_s=_distribution(
                d for killed, rerun, d in delays if not self._spans_restart(killed, rerun)
            ),
            republished=_republished(producer),
            lease_s=self.config.lease_s,
            duration_s=round(duration_s, 1),
            lost_ids=lost[:50],
            stuck_ids=stuck[:50],
        )

    def _spans_restart(self, start: float, end: float) -> bool:
        window = self._restart_window
        return window is not None and start <= window[1] and end >= window[0]

    def _rerun_delays(self, entries: list[Any]) -> list[tuple[float, float, float]]:
        """(kill, rerun, seconds between) for each task a killed consumer was
        running, from the kill to the task's next start."""
        runs: dict[str, list[Any]] = defaultdict(list)
        for entry in entries:
            runs[entry.task_id].append(entry)
        delays = []
        for events in runs.values():
            for i, event in enumerate(events):
                killed_at = self._kills.at.get(event.pid)
                if event.event != "start" or killed_at is None or event.time > killed_at:
                    continue
                ended = any(e.event == "end" and e.pid == event.pid for e in events[i + 1 :])
                rerun = next(
                    (e for e in events[i + 1 :] if e.event == "start" and e.time > killed_at),
                    None,
                )
                if not ended and rerun is not None:
                    delays.append((killed_at, rerun.time, rerun.time - killed_at))
        return delays


def _distribution(values: Iterable[float]) -> dict[str, float]:
    """p50, p99, max and count of ``values`` (empty when there are none)."""
    delays = sorted(values)
    if not delays:
        return {}
    return {
        "p50": round(statistics.median(delays), 2),
        "p99": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))], 2),
        "max": round(delays[-1], 2),
        "count": len(delays),
    }


def _republished(producer: TaskProcessorAdapter) -> dict[str, int] | None:
    store = getattr(producer, "store", None)
    if isinstance(store, LedgerStore):
        return store.republished()
    return None
