"""The tasks every benchmarked system runs, under the same names.

``noop`` and ``sleep_10ms`` are measured; ``hold`` is the task a consumer is
killed in: it records each start (time and process id) in the directory named
by ``TASKSERVE_BENCH_MARKERS`` before it sleeps. Raw RQ refers to them by
their import path (``bench.tasks.noop``), the other systems by name.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKERS_ENV = "TASKSERVE_BENCH_MARKERS"
"""Environment variable naming the directory of ``hold``'s start markers."""

TASK_LABELS = {"noop": "no-op", "sleep_10ms": "10 ms"}
"""The measured tasks, with the label the results use."""


def noop() -> None:
    """Nothing: the systems' own cost per task."""


def sleep_10ms() -> None:
    """A task that waits 10 ms (an I/O-bound call)."""
    time.sleep(0.01)


def hold(seconds: float) -> float:
    """Record this start, then sleep ``seconds`` (long enough to be killed in)."""
    folder = Path(os.environ[MARKERS_ENV])
    name = f"{os.getpid()}-{uuid.uuid4().hex}"
    temporary = folder / f".{name}"
    temporary.write_text(json.dumps({"time": time.time(), "pid": os.getpid()}))
    temporary.rename(folder / f"start-{name}.json")
    time.sleep(seconds)
    return seconds


def stamp(label: str) -> str:
    """Record this start under ``label`` (a task id), at once."""
    folder = Path(os.environ[MARKERS_ENV])
    temporary = folder / f".{label}"
    temporary.write_text(json.dumps({"time": time.time(), "pid": os.getpid(), "label": label}))
    temporary.rename(folder / f"stamp-{label}.json")
    return label


def stamps(folder: Path) -> dict[str, float]:
    """Label -> first start time of every ``stamp`` run recorded in ``folder``."""
    return {
        str(data["label"]): float(data["time"])
        for data in (json.loads(path.read_text()) for path in folder.glob("stamp-*.json"))
    }


def starts(folder: Path) -> list[dict[str, Any]]:
    """The starts ``hold`` recorded in ``folder``, oldest first."""
    found = [json.loads(path.read_text()) for path in folder.glob("start-*.json")]
    return sorted(found, key=lambda start: float(start["time"]))


HANDLERS: dict[str, Callable[..., Any]] = {
    "noop": noop,
    "sleep_10ms": sleep_10ms,
    "hold": hold,
    "stamp": stamp,
}
"""Task name -> function, as ``python -m taskserve.worker --handlers`` loads it."""
