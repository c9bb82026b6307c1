"""Crash-to-redelivery: how long a task of a SIGKILLed consumer waits to run again.

A consumer process (concurrency 1) starts the ``hold`` task; a second, idle
consumer of the same queue is started; the first is killed with SIGKILL. The
time from the kill to the task's next start (recorded by the task itself) is
the redelivery time, waited for up to ``wait_s``. taskserve's adapters run
``python -m taskserve.worker`` with a lease of ``lease_s``; other systems run
their own consumer with their own defaults.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.contenders import TASKSERVE, Contender
from bench.engines.base import TrialOptions
from bench.process import ConsumerProcess
from bench.tasks import starts

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class CrashResult:
    """``redelivery_s`` is None when the task did not start again within
    ``wait_s``; ``lease_s`` is None for systems that have no lease setting."""

    key: str
    lease_s: float | None
    wait_s: float
    redelivery_s: float | None


def _wait_starts(markers: Path, count: int, timeout_s: float) -> list[dict[str, float]]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = starts(markers)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def crash_to_redelivery(
    contender: Contender, lease_s: float, wait_s: float, workdir: Path
) -> CrashResult:
    """Kill a consumer in the middle of a task; seconds until the task starts again."""
    run_id = uuid.uuid4().hex[:12]
    markers = workdir / f"markers-{run_id}"
    markers.mkdir(parents=True, exist_ok=True)
    options = TrialOptions(
        run_id=run_id, concurrency=1, workdir=workdir, markers=markers, lease_s=lease_s
    )
    trial = contender.open(options)
    try:
        command = trial.consumer()
        victim = ConsumerProcess(command, workdir / f"{run_id}-victim.log", markers).start()
        try:
            trial.enqueue("hold", [wait_s + 60.0])
            if not _wait_starts(markers, 1, START_TIMEOUT_S):
                raise RuntimeError(f"{contender.key}: the task did not start")
            survivor = ConsumerProcess(command, workdir / f"{run_id}-survivor.log", markers)
            with survivor:
                victim.kill()
                killed = time.time()
                found = _wait_starts(markers, 2, wait_s)
                survivor.kill()
        finally:
            victim.kill()
    finally:
        trial.close()
    redelivery = float(found[1]["time"]) - killed if len(found) >= 2 else None
    lease = lease_s if contender.system == TASKSERVE else None
    return CrashResult(contender.key, lease, wait_s, redelivery)
