"""Everything one benchmark run measured, kept as JSON next to the report."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.runner import RunResult
from bench.scenarios.autoscaling import AutoscalingResult
from bench.scenarios.backlog import BacklogResult
from bench.scenarios.batching import BatchingResult
from bench.scenarios.consumers import ConsumersResult
from bench.scenarios.crash import CrashResult
from bench.scenarios.delayed import DelayResult
from bench.scenarios.enqueue_cost import EnqueueResult
from bench.scenarios.leftovers import LeftoverResult
from bench.scenarios.producers import ProducerResult
from bench.scenarios.roundtrips import RoundTripResult
from bench.scenarios.startup import StartupResult
from bench.scenarios.two_node_ray import TwoNodeResult


@dataclass
class Results:
    """The measurements, the settings they were taken with, and the machine."""

    settings: dict[str, Any]
    machine: dict[str, str]
    started: str
    wall_s: float = 0.0
    runs: list[RunResult] = field(default_factory=list)
    crashes: list[CrashResult] = field(default_factory=list)
    delays: list[DelayResult] = field(default_factory=list)
    serve_cold_start_s: float | None = None
    startups: list[StartupResult] = field(default_factory=list)
    autoscaling: list[AutoscalingResult] = field(default_factory=list)
    producers: list[ProducerResult] = field(default_factory=list)
    baselines: dict[str, float] = field(default_factory=dict)
    """``<system key> <task>`` -> the drain rate the paced producers were set from."""
    enqueues: list[EnqueueResult] = field(default_factory=list)
    roundtrips: list[RoundTripResult] = field(default_factory=list)
    leftovers: list[LeftoverResult] = field(default_factory=list)
    backlogs: list[BacklogResult] = field(default_factory=list)
    consumers: list[ConsumersResult] = field(default_factory=list)
    two_node: list[TwoNodeResult] = field(default_factory=list)
    """Drains by taskserve-celery replicas on one and on two local Ray nodes."""
    batching: list[BatchingResult] = field(default_factory=list)
    """Drains of the batched model task at each batch size."""
    skipped: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Results:
        """Read what :meth:`save` wrote."""
        data = json.loads(path.read_text())
        return cls(
            settings=data["settings"],
            machine=data["machine"],
            started=data["started"],
            wall_s=data["wall_s"],
            runs=[RunResult(**run) for run in data["runs"]],
            crashes=[CrashResult(**crash) for crash in data["crashes"]],
            delays=[DelayResult(**delay) for delay in data.get("delays", [])],
            serve_cold_start_s=data["serve_cold_start_s"],
            startups=[StartupResult(**startup) for startup in data["startups"]],
            autoscaling=[
                AutoscalingResult(**{**item, "timeline": [tuple(p) for p in item["timeline"]]})
                for item in data["autoscaling"]
            ],
            producers=[ProducerResult(**item) for item in data.get("producers", [])],
            baselines=data.get("baselines", {}),
            enqueues=[EnqueueResult(**item) for item in data.get("enqueues", [])],
            roundtrips=[RoundTripResult(**item) for item in data.get("roundtrips", [])],
            leftovers=[LeftoverResult(**item) for item in data.get("leftovers", [])],
            backlogs=[BacklogResult(**item) for item in data.get("backlogs", [])],
            consumers=[ConsumersResult(**item) for item in data.get("consumers", [])],
            two_node=[TwoNodeResult(**item) for item in data.get("two_node", [])],
            batching=[BatchingResult(**item) for item in data.get("batching", [])],
            skipped=data["skipped"],
        )
