"""``serve.run`` to first SUCCESS: how soon a new consumer application does work.

A task is enqueued, then ``serve.run`` deploys a one-replica consumer
application on the running local Serve; the time from the call to the task's
SUCCESS being visible is measured, with the time ``serve.run`` itself took.
Each repetition deploys a new application on a fresh queue. Measured for the
sqlite adapter, and side by side on Redis for taskserve-celery and Ray's
built-in ``@task_consumer`` (its Celery adapter).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.brokers import REDIS, SQLITE_FILE
from bench.contenders import TASKSERVE, Contender
from bench.engines.adapters import AdapterTrial
from bench.engines.base import Trial, TrialOptions
from bench.engines.ray_celery import RayCeleryTrial, ray_processor_config
from bench.scenarios.local_serve import consumer_deployment, ray_consumer_deployment

TIMEOUT_S = 120.0

SYSTEMS = (
    Contender("sqlite", SQLITE_FILE, TASKSERVE),
    Contender("celery", REDIS, TASKSERVE),
    Contender("celery", REDIS, "ray"),
)
"""The consumers deployed: the sqlite adapter, then taskserve against Ray on Redis."""


@dataclass(frozen=True)
class StartupResult:
    """Seconds from calling ``serve.run`` to its return and to the first SUCCESS."""

    key: str
    serve_run_s: float
    first_success_s: float


def _application(trial: Trial) -> Any:
    if isinstance(trial, AdapterTrial):
        return consumer_deployment(trial.config, max_ongoing_requests=1).bind()
    if isinstance(trial, RayCeleryTrial):
        config = ray_processor_config(trial.broker, trial.queue)
        return ray_consumer_deployment(config, max_ongoing_requests=1).bind()
    raise TypeError(f"no Serve consumer for {type(trial).__name__}")


def serve_run_to_first_success(contender: Contender, workdir: Path) -> StartupResult:
    """Deploy a consumer application for a queue holding one task; time it."""
    from ray import serve

    run_id = uuid.uuid4().hex[:12]
    options = TrialOptions(run_id=run_id, concurrency=1, workdir=workdir, markers=workdir)
    trial = contender.open(options)
    name = f"bench-{run_id}"
    try:
        task_id = trial.enqueue("noop")
        application = _application(trial)
        started = time.perf_counter()
        try:
            serve.run(application, name=name, route_prefix=None)
            returned = time.perf_counter()
            deadline = time.monotonic() + TIMEOUT_S
            while not trial.succeeded(task_id):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no SUCCESS within {TIMEOUT_S:.0f}s of serve.run")
                time.sleep(0.002)
            succeeded = time.perf_counter()
        finally:
            serve.delete(name)
    finally:
        trial.close()
    return StartupResult(contender.key, returned - started, succeeded - started)
