"""What the runner needs from a benchmarked system."""

from __future__ import annotations

import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READY_LINE = "bench-consumer ready"
"""Printed by a ``python -m bench.consume`` process once it consumes."""


class TaskFailed(RuntimeError):
    """A benchmark task ended in another state than SUCCESS."""


@dataclass(frozen=True)
class TrialOptions:
    """Settings of one run of one system.

    ``run_id`` makes the queue and key names unique; ``workdir`` holds the
    run's files (sqlite database, consumer logs); ``markers`` is where the
    ``hold`` task records its starts; ``result_ttl_s``, when set, is given to
    taskserve's adapters (the other systems keep their own).
    """

    run_id: str
    concurrency: int
    workdir: Path
    markers: Path
    lease_s: float = 30.0
    result_ttl_s: float | None = None


@dataclass(frozen=True)
class ConsumerCommand:
    """How to start a consumer process and recognize that it is consuming."""

    argv: Sequence[str]
    ready_line: str = READY_LINE
    env: dict[str, str] = field(default_factory=dict)


def bench_consumer(engine: str, **spec: Any) -> ConsumerCommand:
    """``python -m bench.consume <engine> <spec>``: the consumer of a raw engine."""
    return ConsumerCommand([sys.executable, "-m", "bench.consume", engine, json.dumps(spec)])


class Trial(ABC):
    """One system on one fresh queue.

    The producer side lives in this process; :meth:`consumer` says how to
    start a consumer process; :meth:`close` deletes the queue, the results
    and every key the run created.
    """

    @abstractmethod
    def enqueue(self, task: str, args: Sequence[Any] = ()) -> str:
        """Send one task; return its id."""

    @abstractmethod
    def succeeded(self, task_id: str) -> bool:
        """Whether SUCCESS is visible for the task; raise TaskFailed if it failed."""

    @abstractmethod
    def consumer(self) -> ConsumerCommand:
        """The consumer process of this queue, with the run's concurrency."""

    @abstractmethod
    def close(self) -> None:
        """Delete what the run created; release connections."""
