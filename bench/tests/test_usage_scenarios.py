"""The scenarios of real use stay runnable: smoke runs that write results.json and
RESULTS.md, and the report of synthetic measurements against a baseline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.brokers import REDIS, reachable
from bench.report import render
from bench.results import Results
from bench.scenarios.enqueue_cost import EnqueueResult
from bench.scenarios.leftovers import LeftoverResult
from bench.scenarios.producers import ProducerResult
from bench.scenarios.roundtrips import RoundTripResult

REPOSITORY = Path(__file__).resolve().parents[2]


def _smoke(output: Path, only: str, scenarios: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench", "--smoke", "--only", only]
    command += ["--scenarios", scenarios, "--output", str(output)]
    done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads((output / "results.json").read_text())
    assert data["skipped"] == [], data["skipped"]
    return data


def test_producers_and_enqueue_smoke_on_sqlite(tmp_path: Path) -> None:
    data = _smoke(tmp_path, "sqlite", "producers,enqueue")
    modes = {run["target_rate"] is None for run in data["producers"]}
    assert modes == {True, False}
    for run in data["producers"]:
        assert run["enqueued"] >= 2 and run["enqueue_rate"] > 0
        assert run["drained"] or run["target_rate"] is None  # a paced producer is kept up with
        assert run["latency_p50_s"] is not None and run["latency_p50_s"] >= 0.01
    assert set(data["baselines"]) == {"sqlite/file/taskserve sleep_10ms"}
    assert sorted(run["threads"] for run in data["enqueues"]) == [1, 4]
    assert all(run["calls_per_s"] > 0 and run["cpu_per_call_s"] > 0 for run in data["enqueues"])
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## With a producer running" in report and "## Enqueue cost" in report


@pytest.mark.skipif(
    shutil.which("redis-server") is None or not reachable(REDIS),
    reason="needs redis-server and the machine's Redis",
)
def test_roundtrips_and_leftovers_smoke_on_rq(tmp_path: Path) -> None:
    data = _smoke(tmp_path, "rq", "roundtrips,leftovers")
    counted = {run["key"]: run for run in data["roundtrips"]}
    assert set(counted) == {
        "rq/redis/raw/SimpleWorker",
        "rq/redis/taskserve",
        "rq/redis/raw/Worker",
    }
    for run in counted.values():
        assert run["enqueue"] >= 1 and run["consume"] >= 1 and run["status"] >= 1
    [left] = data["leftovers"]
    assert left["key"] == "rq/redis/taskserve" and left["tasks"] == 10
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## Redis round trips per task" in report and "## Left after the result TTL" in report


def test_report_of_the_usage_scenarios() -> None:
    def producer(key: str, rate: float | None, done: float, p50: float) -> ProducerResult:
        return ProducerResult(key, "noop", rate, 3.0, 900, 300.0, done, 4, True, p50, 2 * p50)

    results = Results(
        settings={
            "preset": "full",
            "repetitions": 3,
            "tasks": 100,
            "latency_samples": 5,
            "concurrency": 8,
            "producer_load": 0.7,
            "producer_s": 3.0,
            "enqueue_calls": 100,
        },
        machine={"CPU": "test"},
        started="now",
        producers=[
            *(producer("celery/redis/raw", 280.0, done, 0.004) for done in (270.0, 280.0, 290.0)),
            *(producer("celery/redis/taskserve", 280.0, 280.0, 0.006) for _ in range(3)),
            producer("celery/redis/raw", None, 500.0, 1.0),
            producer("celery/redis/taskserve", None, 250.0, 2.0),
        ],
        baselines={"celery/redis/raw noop": 400.0},
        enqueues=[
            EnqueueResult("celery/redis/raw", "noop", 1, 100, 1000.0, 0.0005),
            EnqueueResult("celery/redis/taskserve", "noop", 1, 100, 500.0, 0.001),
        ],
        roundtrips=[
            RoundTripResult(
                "celery/redis/raw",
                10,
                1.0,
                5.0,
                1.0,
                2.0,
                {"enqueue": {"lpush": 1.0}, "consume": {}, "status": {"get": 1.0}},
                {"enqueue": 0.0, "consume": 0.0, "status": 0.0},
            ),
            RoundTripResult(
                "celery/redis/taskserve",
                10,
                2.0,
                6.0,
                1.0,
                4.0,
                {"enqueue": {"evalsha": 1.0, "lpush": 1.0}, "consume": {}, "status": {}},
                {"enqueue": 9.0, "consume": 3.0, "status": 0.0},
            ),
        ],
        leftovers=[
            LeftoverResult("celery/redis/taskserve", 10, 1.0, 5.0, {"p:tasks:<run>": 10}, None, []),
        ],
    )
    report = render(results)
    assert (
        "| taskserve-celery | Redis | no-op | 280/s | 300 (300\u2013300) | 280 (280\u2013280) | 1.00\u00d7 |"
        in report
    )
    assert "| raw Celery | Redis | no-op | unlimited | 300 | 500 | baseline |" in report
    assert "| taskserve-celery | Redis | 1 | 500 | 0.50\u00d7 | 1,000 | 2.00\u00d7 |" in report
    assert (
        "| taskserve-celery | Redis | 2.0 | 6.0 | 1.0 | 9.0 | +2.0 | 4.0 | 9.0 / 3.0 / 0.0 "
        "| evalsha 1.0, lpush 1.0 |" in report
    )
    assert "**10**: `p:tasks:<run>` (10) | never |" in report
