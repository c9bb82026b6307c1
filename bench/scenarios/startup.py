"""``serve.run`` to first SUCCESS: how soon a new consumer application does work.

A task is enqueued on the sqlite adapter, then ``serve.run`` deploys a
``@task_consumer`` application (one replica) on the running local Serve; the
time from the call to the task's SUCCESS being visible is measured, with the
time ``serve.run`` itself took. Each repetition deploys a new application.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.brokers import SQLITE_FILE
from bench.engines.adapters import cleanup, processor_config
from bench.engines.base import SessionOptions
from bench.scenarios.local_serve import consumer_deployment

TIMEOUT_S = 120.0


@dataclass(frozen=True)
class StartupResult:
    """Seconds from calling ``serve.run`` to its return and to the first SUCCESS."""

    adapter: str
    serve_run_s: float
    first_success_s: float


def serve_run_to_first_success(workdir: Path, adapter: str = "sqlite") -> StartupResult:
    """Deploy a consumer application for a queue holding one task; time it."""
    from ray import serve

    from taskserve import TaskState, instantiate_adapter_from_config

    run_id = uuid.uuid4().hex[:12]
    options = SessionOptions(run_id=run_id, concurrency=1, workdir=workdir, markers=workdir)
    config = processor_config(adapter, SQLITE_FILE, options)
    producer = instantiate_adapter_from_config(config)
    task = producer.enqueue_task_sync("noop")
    app = consumer_deployment(config, max_ongoing_requests=1).bind()
    name = f"bench-{run_id}"
    started = time.perf_counter()
    try:
        serve.run(app, name=name, route_prefix=None)
        returned = time.perf_counter()
        deadline = time.monotonic() + TIMEOUT_S
        while producer.get_task_status_sync(task.id).status is not TaskState.SUCCESS:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no SUCCESS within {TIMEOUT_S:.0f}s of serve.run")
            time.sleep(0.002)
        succeeded = time.perf_counter()
    finally:
        serve.delete(name)
        producer.shutdown()
        cleanup(adapter, config)
    return StartupResult(adapter, returned - started, succeeded - started)
