"""How much to measure: the full run, ``--quick``, and the smoke run of the tests."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Settings:
    """Sizes and repetitions of one benchmark run.

    ``tasks`` fixes N for every run; when None, N is sized per system and
    task from a calibration run of ``calibration_tasks`` tasks so that its
    drain lasts about ``target_s`` seconds.
    """

    preset: str
    repetitions: int
    target_s: float
    calibration_tasks: int
    latency_samples: int
    concurrency: int
    crash_lease_s: float
    crash_wait_s: float
    serve_repetitions: int
    autoscaling_tasks: int
    autoscaling_task_s: float
    tasks: int | None = None
    delayed_tasks: int = 200
    """Tasks of the delayed-task scenario, per adapter and broker."""
    producer_tasks: tuple[str, ...] = ("noop", "sleep_10ms")
    """Tasks of the scenario with a producer running."""
    producer_s: float = 6.0
    """How long the producer enqueues, per run."""
    producer_load: float = 0.7
    """The paced producer's rate, as a fraction of the baseline's drain rate."""
    enqueue_calls: int = 2000
    """Enqueue calls per measurement of the enqueue cost."""
    enqueue_threads: tuple[int, ...] = (1, 4)
    """Producer threads of the enqueue-cost measurements."""
    roundtrip_tasks: int = 200
    """Tasks per run of the round-trip count."""
    roundtrip_idle_s: float = 2.0
    """How long an idle consumer's commands are counted."""
    leftover_tasks: int = 100
    """Tasks run with a short result TTL, per adapter and broker."""
    leftover_ttl_s: float = 3.0
    """Their ``result_ttl_s``."""
    leftover_wait_s: float = 45.0
    """Longest wait past the TTL for nothing to be left."""
    backlog_sizes: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    """Backlogs measured at, smallest first (the smallest is the reference of the ratios)."""
    backlog_largest_groups: tuple[str, ...] = ("sqlite/file", "celery/redis")
    """Groups (``engine/broker``) that run every size of ``backlog_sizes``."""
    backlog_others_max: int | None = 100_000
    """Largest backlog of the other groups (None: every size on every group)."""
    backlog_fill_threads: int = 4
    """Producer threads that fill a backlog."""
    backlog_enqueue_calls: int = 2000
    """Enqueue calls (one thread) measured at each backlog size."""
    backlog_status_reads: int = 500
    """Status reads of random tasks of the backlog, at each size."""
    backlog_metrics_reads: int = 100
    """Queue-length (metrics) calls, at each size."""
    consumer_processes: tuple[int, ...] = (1, 2, 4)
    """Consumer processes draining one queue together."""
    consumer_tasks: int = 3000
    """Tasks of the backlog they drain, per run."""
    two_node_tasks: int = 3000
    """Tasks drained by taskserve-celery replicas on one and on two local Ray nodes
    (0: that variant is not run)."""
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    """``batch_max_size`` values of the batching scenario (each one a handler of
    :mod:`bench.batch_model`)."""
    batch_concurrency: int = 64
    """Consumer concurrency of the batching scenario: twice the largest batch, so
    that the next batch gathers while one runs."""
    batch_target_s: float = 3.0
    """Seconds of the model's own work in each backlog the batching scenario drains."""

    def with_overrides(self, repetitions: int | None, tasks: int | None) -> Settings:
        """These settings with the command line's overrides applied."""
        changed = self
        if repetitions is not None:
            changed = replace(changed, repetitions=repetitions)
        if tasks is not None:
            changed = replace(changed, tasks=tasks)
        return changed


FULL = Settings(
    preset="full",
    repetitions=3,
    target_s=6.0,
    calibration_tasks=300,
    latency_samples=40,
    concurrency=8,
    crash_lease_s=5.0,
    crash_wait_s=20.0,
    serve_repetitions=3,
    autoscaling_tasks=8,
    autoscaling_task_s=15.0,
)
QUICK = replace(
    FULL,
    preset="quick",
    repetitions=1,
    target_s=2.0,
    calibration_tasks=100,
    latency_samples=10,
    crash_lease_s=2.0,
    crash_wait_s=8.0,
    serve_repetitions=1,
    autoscaling_task_s=4.0,
    delayed_tasks=60,
    producer_tasks=("sleep_10ms",),
    producer_s=3.0,
    enqueue_calls=600,
    roundtrip_tasks=100,
    roundtrip_idle_s=1.0,
    leftover_tasks=50,
    leftover_ttl_s=2.0,
    leftover_wait_s=40.0,
    backlog_sizes=(1_000, 20_000),
    backlog_others_max=None,
    backlog_enqueue_calls=1000,
    backlog_status_reads=300,
    backlog_metrics_reads=50,
    consumer_tasks=600,
    two_node_tasks=1000,
    batch_target_s=2.0,
)
SMOKE = replace(
    QUICK,
    preset="smoke",
    tasks=30,
    latency_samples=5,
    crash_lease_s=1.0,
    crash_wait_s=6.0,
    delayed_tasks=10,
    producer_s=1.0,
    enqueue_calls=40,
    roundtrip_tasks=10,
    roundtrip_idle_s=0.5,
    leftover_tasks=10,
    leftover_ttl_s=1.0,
    leftover_wait_s=10.0,
    backlog_sizes=(100, 500),
    backlog_enqueue_calls=50,
    backlog_status_reads=50,
    backlog_metrics_reads=10,
    consumer_processes=(1, 2),
    consumer_tasks=40,
    two_node_tasks=0,
    batch_sizes=(1, 8),
    batch_target_s=0.3,
)
PRESETS = {settings.preset: settings for settings in (FULL, QUICK, SMOKE)}
