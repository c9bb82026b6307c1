"""The systems compared, grouped by engine and broker.

Each group runs taskserve's adapter and, side by side on the same broker, the
raw engine with equivalent settings (for RQ both worker classes; for
PostgreSQL a hand-written ``SKIP LOCKED`` consumer) and, for Celery, Ray
Serve's built-in adapter. The first raw system of a group is the
baseline of its ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.brokers import POSTGRES, RABBITMQ, REDIS, SQLITE_FILE
from bench.engines.base import Trial, TrialOptions

TASKSERVE = "taskserve"
RAW = "raw"
RAY = "ray"

GROUPS: tuple[tuple[str, str], ...] = (
    ("sqlite", SQLITE_FILE),
    ("celery", REDIS),
    ("celery", RABBITMQ),
    ("dramatiq", REDIS),
    ("dramatiq", RABBITMQ),
    ("rq", REDIS),
    ("postgres", POSTGRES),
)
"""(engine, broker) of every adapter and broker taskserve supports."""

_ENGINE_NAMES = {
    "sqlite": "sqlite",
    "celery": "Celery",
    "dramatiq": "Dramatiq",
    "rq": "RQ",
    "postgres": "PostgreSQL",
}


@dataclass(frozen=True)
class Contender:
    """One system on one broker: ``system`` is taskserve, raw or ray;
    ``variant`` tells raw RQ's worker classes apart."""

    engine: str
    broker: str
    system: str
    variant: str = ""

    @property
    def key(self) -> str:
        """A unique, stable name (``celery/redis/raw``)."""
        return "/".join(
            part for part in (self.engine, self.broker, self.system, self.variant) if part
        )

    @property
    def group(self) -> str:
        """The engine and broker (``celery/redis``)."""
        return f"{self.engine}/{self.broker}"

    @property
    def label(self) -> str:
        """How the results name it."""
        if self.system == TASKSERVE:
            return f"taskserve-{self.engine}"
        if self.system == RAY:
            return "Ray built-in"
        return " ".join(part for part in ("raw", _ENGINE_NAMES[self.engine], self.variant) if part)

    def open(self, options: TrialOptions) -> Trial:
        """A trial of this system on a fresh queue."""
        if self.system == TASKSERVE:
            from bench.engines.adapters import AdapterTrial

            return AdapterTrial(self.engine, self.broker, options)
        if self.system == RAY:
            from bench.engines.ray_celery import RayCeleryTrial

            return RayCeleryTrial(self.broker, options)
        if self.engine == "celery":
            from bench.engines.raw_celery import RawCeleryTrial

            return RawCeleryTrial(self.broker, options)
        if self.engine == "dramatiq":
            from bench.engines.raw_dramatiq import RawDramatiqTrial

            return RawDramatiqTrial(self.broker, options)
        if self.engine == "rq":
            from bench.engines.raw_rq import RawRQTrial

            return RawRQTrial(self.variant, options)
        if self.engine == "postgres":
            from bench.engines.raw_postgres import RawPostgresTrial

            return RawPostgresTrial(options)
        raise ValueError(f"no system {self.key}")


def contenders(engine: str, broker: str) -> list[Contender]:
    """The systems of one group: the baseline first, then taskserve, then the others."""
    if engine == "sqlite":
        return [Contender(engine, broker, TASKSERVE)]
    if engine == "rq":
        return [
            Contender(engine, broker, RAW, "SimpleWorker"),
            Contender(engine, broker, TASKSERVE),
            Contender(engine, broker, RAW, "Worker"),
        ]
    found = [Contender(engine, broker, RAW), Contender(engine, broker, TASKSERVE)]
    if engine == "celery":
        found.append(Contender(engine, broker, RAY))
    return found


def concurrency_of(engine: str, default: int) -> int:
    """Tasks run at once by the one consumer: an RQ worker runs one job at a
    time, so RQ's group runs at 1; the others at ``default``."""
    return 1 if engine == "rq" else default
