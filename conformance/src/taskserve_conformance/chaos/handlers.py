"""The handler of chaos runs, loaded by their consumer processes.

``chaos_work(index, work_ms)`` journals its start and end (with this
process's id) and returns a value computed from ``index``, so the run checks
every result. It imports neither pytest nor the harness.
"""

from __future__ import annotations

import time
from typing import Any

from taskserve import current_task
from taskserve_conformance.journal import write_event


def expected_result(index: int) -> dict[str, int]:
    """What ``chaos_work(index, ...)`` returns."""
    return {"index": index, "square": index * index}


def chaos_work(index: int, work_ms: float) -> dict[str, Any]:
    """Pretend to work for ``work_ms`` milliseconds; journal the run."""
    task = current_task()
    write_event("start", task_id=task.id, name=task.name, attempt=task.attempt, args=[index])
    if work_ms > 0:
        time.sleep(work_ms / 1000)
    write_event("end", task_id=task.id, name=task.name, attempt=task.attempt, args=[index])
    return expected_result(index)


HANDLERS = {"chaos_work": chaos_work}
