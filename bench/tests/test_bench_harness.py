"""The benchmark harness stays runnable: a smoke run on the sqlite adapter (a few
tasks, one repetition, seconds) and the report of a synthetic comparison."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.compare import ratios, summaries
from bench.plot import plot
from bench.report import render
from bench.results import Results
from bench.runner import RunResult, size_tasks
from bench.stats import Spread, percentile

REPOSITORY = Path(__file__).resolve().parents[2]


def test_smoke_run_on_sqlite_writes_every_result(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "bench",
        "--smoke",
        "--only",
        "sqlite",
        "--scenarios",
        "throughput,crash,delay",
        "--output",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    runs = {(run["key"], run["task"]): run for run in data["runs"]}
    assert set(runs) == {("sqlite/file/taskserve", "noop"), ("sqlite/file/taskserve", "sleep_10ms")}
    assert all(run["throughput"] > 0 and run["latency_p50_s"] > 0 for run in runs.values())
    assert runs[("sqlite/file/taskserve", "sleep_10ms")]["latency_p50_s"] >= 0.01
    [crash] = data["crashes"]
    assert crash["redelivery_s"] is not None and crash["redelivery_s"] < crash["wait_s"]
    [delay] = data["delays"]
    assert delay["started"] == delay["tasks"] == 10 and delay["early"] == 0
    assert delay["lateness_p50_s"] is not None and delay["lateness_p50_s"] >= 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "taskserve-sqlite" in report and "## Delayed tasks" in report
    assert (tmp_path / "throughput.png").stat().st_size > 0


def _run(key: str, throughput: float) -> RunResult:
    return RunResult(key, "noop", 1000, 8, throughput, 1000 / throughput, 900.0, 0.004, 0.009)


def test_report_shows_taskserve_against_raw_and_ray(tmp_path: Path) -> None:
    runs = [_run("celery/redis/raw", rate) for rate in (390.0, 400.0, 420.0)]
    runs += [_run("celery/redis/taskserve", rate) for rate in (600.0, 610.0, 580.0)]
    runs += [_run("celery/redis/ray", 300.0)]
    results = Results(
        settings={
            "preset": "full",
            "repetitions": 3,
            "tasks": 1000,
            "latency_samples": 50,
            "concurrency": 8,
        },
        machine={"CPU": "test"},
        started="now",
        runs=runs,
    )
    found = summaries(results.runs)
    pairs = {pair.other.contender.label: pair.value for pair in ratios(found)}
    assert pairs == {"raw Celery": 600.0 / 400.0, "Ray built-in": 2.0}
    report = render(results)
    assert (
        "| celery, Redis | no-op | raw Celery | 600 (580\u2013610) | 400 (390\u2013420) | **1.50\u00d7** |"
        in report
    )
    plot(found, tmp_path / "throughput.png")
    assert (tmp_path / "throughput.png").stat().st_size > 0


def test_sizes_and_percentiles() -> None:
    assert size_tasks(1234.0, 6.0) == 7400
    assert size_tasks(5.0, 6.0) == 100
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0, 3)
