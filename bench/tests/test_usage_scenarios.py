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

from bench.batch_model import bound_rate
from bench.brokers import REDIS, reachable
from bench.report import render
from bench.results import Results
from bench.scenarios.backlog import BacklogResult
from bench.scenarios.batching import BatchingResult, backlog_size
from bench.scenarios.consumers import ConsumersResult
from bench.scenarios.enqueue_cost import EnqueueResult
from bench.scenarios.leftovers import LeftoverResult
from bench.scenarios.producers import ProducerResult
from bench.scenarios.roundtrips import RoundTripResult
from bench.scenarios.two_node_ray import (
    NODE_RESOURCE,
    TwoNodeResult,
    node_commands,
    replica_options,
    replicas_per_node,
)
from bench.settings import FULL, QUICK, SMOKE
from bench.usage_suite import backlog_sizes

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
def test_roundtrips_leftovers_and_backlog_smoke_on_rq(tmp_path: Path) -> None:
    data = _smoke(tmp_path, "rq", "roundtrips,leftovers,backlog")
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
    backlogs = {(run["key"], run["size"]): run for run in data["backlogs"]}
    systems = ("rq/redis/raw/SimpleWorker", "rq/redis/taskserve")
    assert set(backlogs) == {(key, size) for key in systems for size in (100, 500)}
    for (_, size), run in backlogs.items():  # on the private Redis of each run
        assert run["store"] == "Redis memory" and run["bytes_per_task"] > 0
        assert run["queue_length"] == size + data["settings"]["backlog_enqueue_calls"] + 1
        assert run["status_p99_s"] >= run["status_p50_s"] > 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## Redis round trips per task" in report and "## Left after the result TTL" in report
    assert "## Cost as the backlog grows" in report


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


def test_backlog_and_consumers_smoke_on_sqlite(tmp_path: Path) -> None:
    data = _smoke(tmp_path, "sqlite", "backlog,consumers")
    settings = data["settings"]
    backlogs = {run["size"]: run for run in data["backlogs"]}
    assert set(backlogs) == {100, 500}
    for size, run in backlogs.items():
        assert run["key"] == "sqlite/file/taskserve" and run["store"] == "database file"
        assert run["queue_length"] == size + settings["backlog_enqueue_calls"] + 1
        assert run["status_reads"] == settings["backlog_status_reads"]
        assert run["status_p50_s"] > 0 and run["metrics_p99_s"] >= run["metrics_p50_s"] > 0
        assert run["fill_rate"] > 0 and run["enqueue_rate"] > 0 and run["bytes_per_task"] > 0
    drains = {(run["task"], run["processes"]): run for run in data["consumers"]}
    assert set(drains) == {(task, n) for task in ("noop", "sleep_10ms") for n in (1, 2)}
    for (_, processes), run in drains.items():
        assert run["tasks"] == settings["consumer_tasks"] and run["throughput"] > 0
        # CPU time is read in clock ticks (10 ms): a smoke drain may use less.
        assert len(run["cpu_s"]) == processes and min(run["cpu_s"]) >= 0
    assert data["two_node"] == []  # the smoke preset starts no Ray
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## Cost as the backlog grows" in report
    assert "## Several consumer processes on one queue" in report


def test_backlog_sizes_of_each_preset() -> None:
    assert backlog_sizes(FULL, "celery", "redis") == [1_000, 100_000, 1_000_000]
    assert backlog_sizes(FULL, "sqlite", "file") == [1_000, 100_000, 1_000_000]
    assert backlog_sizes(FULL, "dramatiq", "rabbitmq") == [1_000, 100_000]
    assert backlog_sizes(QUICK, "dramatiq", "rabbitmq") == [1_000, 20_000]
    assert backlog_sizes(SMOKE, "postgres", "postgres") == [100, 500]


def test_two_node_ray_plan() -> None:
    ports = iter(range(20_000, 20_100))
    head, second = node_commands("/tmp/tsray-x", 6390, 2, lambda: next(ports))
    assert head[3:6] == ["start", "--head", "--port=6390"]
    assert second[3:5] == ["start", "--address=127.0.0.1:6390"]
    for command in (head, second):
        assert "--block" in command and "--temp-dir=/tmp/tsray-x" in command
        assert "--num-cpus=2" in command
        assert f'--resources={{"{NODE_RESOURCE}": 1}}' in command
    assert "--include-dashboard=false" in head
    opened = [arg.split("=")[1] for arg in head + second if arg.split("=")[0].endswith("-port")]
    assert len(opened) == len(set(opened)) == 5  # GCS, client, dashboard, an agent per node
    assert replica_options(2) == {
        "num_replicas": 2,
        "ray_actor_options": {"num_cpus": 0, "resources": {NODE_RESOURCE: 1}},
    }
    with pytest.raises(ValueError, match="at least one node"):
        replica_options(0)
    assert replicas_per_node(["b", "a", "b"]) == [2, 1]


def test_report_of_backlog_and_consumers() -> None:
    def backlog(key: str, size: int, rate: float, p99: float | None) -> BacklogResult:
        return BacklogResult(
            key,
            size,
            4,
            900.0,
            100,
            rate,
            100,
            p99,
            p99,
            10,
            0.001,
            0.002,
            size + 101,
            None if p99 is None else 800.0,
            "Redis memory" if p99 else "not counted",
        )

    def drain(key: str, processes: int, rate: float) -> ConsumersResult:
        return ConsumersResult(
            key, "noop", processes, 8, 1000, rate, 1000 / rate, [0.5] * processes, 2.0
        )

    results = Results(
        settings={
            "preset": "quick",
            "repetitions": 1,
            "tasks": None,
            "calibration_tasks": 100,
            "target_s": 2.0,
            "latency_samples": 5,
            "concurrency": 8,
            "backlog_status_reads": 100,
            "backlog_metrics_reads": 10,
        },
        machine={"CPU": "test"},
        started="now",
        backlogs=[
            backlog("celery/redis/raw", 1000, 1000.0, 0.001),
            backlog("celery/redis/raw", 20000, 950.0, 0.0012),
            backlog("dramatiq/rabbitmq/raw", 1000, 500.0, None),
            backlog("dramatiq/rabbitmq/raw", 20000, 500.0, None),
        ],
        consumers=[
            drain("celery/redis/raw", 1, 400.0),
            drain("celery/redis/taskserve", 1, 500.0),
            drain("celery/redis/taskserve", 2, 800.0),
            drain("celery/redis/raw", 2, 600.0),
        ],
        two_node=[
            TwoNodeResult("celery/redis/taskserve", 1, [1], 8, 1000, 300.0, 3.0, [1.5], 3.0),
            TwoNodeResult(
                "celery/redis/taskserve", 2, [1, 1], 8, 1000, 450.0, 2.0, [1.0, 1.0], 2.0
            ),
        ],
    )
    report = render(results)
    assert (
        "| raw Celery | Redis | 20,000 | 900 | 950 | 0.95\u00d7 | 1.20 | 1.20 | 1.20\u00d7 "
        "| 1.00 | 2.00 | 20,101 | 800 | Redis memory |" in report
    )
    assert (
        "| raw Dramatiq | RabbitMQ | 1,000 | 900 | 500 | 1.00\u00d7 | \u2013 | \u2013 |" in report
    )
    assert (
        "| raw Celery | Redis | 20,000 / 1,000 | 0.95\u00d7 | 1.20\u00d7 | 1.00\u00d7 | no |"
        in report
    )
    assert (
        "| raw Dramatiq | RabbitMQ | 20,000 / 1,000 | 1.00\u00d7 | \u2013 | 1.00\u00d7 | yes |"
        in report
    )
    assert (
        "| taskserve-celery | Redis | no-op | 2 | 800 | 1.60\u00d7 | 1.33\u00d7 | 25 (25) | 1.00 |"
        in report
    )
    assert (
        "| raw Celery | Redis | no-op | 1 | 400 | 1.00\u00d7 | baseline | 25 (25) | 0.50 |"
        in report
    )
    assert "| 2 | 1 + 1 | 1,000 | 450 | 1.50\u00d7 | 50 / 50 |" in report
    lines = report.splitlines()
    first = lines.index(
        "| raw Celery | Redis | no-op | 1 | 400 | 1.00\u00d7 | baseline | 25 (25) | 0.50 |"
    )
    assert lines[first + 1].startswith("| taskserve-celery | Redis | no-op | 1 |")


def test_batching_smoke_on_sqlite(tmp_path: Path) -> None:
    data = _smoke(tmp_path, "sqlite", "batching")
    settings = data["settings"]
    drains = {run["batch_max_size"]: run for run in data["batching"]}
    assert set(drains) == set(settings["batch_sizes"]) == {1, 8}
    for size, run in drains.items():
        assert run["key"] == "sqlite/file/taskserve"
        assert run["tasks"] == backlog_size(size, settings["batch_target_s"])
        assert run["concurrency"] == settings["batch_concurrency"] and run["throughput"] > 0
        assert run["cpu_s"] > 0
    assert drains[1]["calls"] == drains[1]["tasks"]  # one task per call
    assert drains[8]["tasks"] / 8 <= drains[8]["calls"] < drains[8]["tasks"]  # batched
    report = (tmp_path / "RESULTS.md").read_text()
    assert "## Batched handlers" in report and "![batching](batching.png)" in report
    assert (tmp_path / "batching.png").stat().st_size > 0


def test_report_of_batching() -> None:
    def drain(key: str, size: int, rate: float) -> BatchingResult:
        tasks = 10 * size
        return BatchingResult(
            key, size, 64, tasks, rate, tasks / rate, 10, 0.02 * tasks, bound_rate(size)
        )

    results = Results(
        settings={
            "preset": "quick",
            "repetitions": 2,
            "tasks": None,
            "calibration_tasks": 100,
            "target_s": 2.0,
            "latency_samples": 5,
            "concurrency": 8,
            "batch_target_s": 2.0,
        },
        machine={"CPU": "test"},
        started="now",
        batching=[
            drain("rq/redis/taskserve", 1, 40.0),
            drain("sqlite/file/taskserve", 8, 300.0),
            drain("sqlite/file/taskserve", 1, 40.0),
            drain("sqlite/file/taskserve", 1, 50.0),
            drain("sqlite/file/taskserve", 32, 810.0),
        ],
    )
    report = render(results)
    assert "| adapter, broker | batch_max_size 1 | batch_max_size 8 | batch_max_size 32 |" in report
    assert "| sqlite, file | 45 | 300 (6.7\u00d7) | 810 (18.0\u00d7) |" in report
    assert "| rq, Redis | 40 | \u2013 | \u2013 |" in report
    assert "| *the model alone (bound)* | 49 | 333 (6.8\u00d7) | 889 (18.2\u00d7) |" in report
    sqlite_first = (
        "| sqlite, file | 1 | 10 | 45 (40\u201350) | 1.00\u00d7 | 92% | 1.0 (1.0\u20131.0) "
        "| 20.00 (20.00\u201320.00) |"
    )
    lines = report.splitlines()  # detail rows in the order of the groups
    assert lines.index(sqlite_first) < lines.index(
        "| rq, Redis | 1 | 10 | 40 | 1.00\u00d7 | 82% | 1.0 | 20.00 |"
    )
