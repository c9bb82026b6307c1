"""The batched tasks of the batching scenario: a simulated model behind batched handlers.

The model stands for one accelerator serving one model: it runs one call at
a time (a lock), and a call on ``n`` inputs takes :data:`CALL_COST_S` plus
``n`` times :data:`ITEM_COST_S`, slept rather than computed, so that the
consumer's own CPU stays what it is. One handler per batch size of
:data:`BATCH_SIZES`, named by :func:`task_name`, each batched with that
``batch_max_size``; every call appends the call's size to a file of the
directory named by ``TASKSERVE_BENCH_MARKERS`` (:func:`calls_seen` reads
them). ``python -m taskserve.worker --handlers bench.batch_model:HANDLERS``
loads them.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from bench.tasks import MARKERS_ENV
from taskserve import BatchItem
from taskserve.serve import task_handler

CALL_COST_S: Final = 0.020
"""Fixed cost of one model call."""
ITEM_COST_S: Final = 0.0005
"""Cost of each input of a call."""
BATCH_SIZES: Final = (1, 8, 32)
"""The ``batch_max_size`` of each handler."""
BATCH_WAIT_TIMEOUT_S: Final = 0.1
"""The handlers' ``batch_wait_timeout_s``."""

_device = threading.Lock()


def call_seconds(size: int) -> float:
    """How long one model call on ``size`` inputs takes."""
    return CALL_COST_S + ITEM_COST_S * size


def bound_rate(size: int) -> float:
    """Tasks per second of the model itself when every call holds ``size`` inputs:
    the most any consumer can reach with that batch size."""
    return size / call_seconds(size)


def task_name(size: int) -> str:
    """The task name of the handler batched at ``size``."""
    return f"model_batch_{size}"


def _record(name: str, size: int) -> None:
    folder = os.environ.get(MARKERS_ENV)
    if folder:
        with open(Path(folder) / f"calls-{os.getpid()}.txt", "a") as calls:
            calls.write(f"{name} {size}\n")


def _handler(size: int) -> Callable[[list[BatchItem]], list[int]]:
    name = task_name(size)

    @task_handler(name=name, batch_max_size=size, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S)
    def infer(items: list[BatchItem]) -> list[int]:
        with _device:
            time.sleep(call_seconds(len(items)))
        _record(name, len(items))
        return [len(items)] * len(items)

    return infer


def calls_seen(folder: Path) -> dict[str, Counter[int]]:
    """Task name -> how many calls of each size the handlers recorded in ``folder``."""
    found: dict[str, Counter[int]] = {}
    for path in folder.glob("calls-*.txt"):
        for line in path.read_text().splitlines():
            name, _, size = line.partition(" ")
            found.setdefault(name, Counter())[int(size)] += 1
    return found


HANDLERS: dict[str, Callable[..., Any]] = {task_name(size): _handler(size) for size in BATCH_SIZES}
"""Task name -> batched handler, as ``python -m taskserve.worker --handlers`` loads it."""
