"""Ray's metrics endpoint exports every series of the metrics plugin, tagged with
the queue, from a real consumer replica and a real HTTP ingress.

The tasks go through the ingress only, so the enqueue counter can read what
was submitted only if the ingress's producer records it (the consumer replica
never enqueues). They succeed, fail once and then succeed (a retry), fail for
good (a retry, then a failure and a dead letter), are cancelled while running
(in the replica) and while delayed (in the ingress).
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray", reason="the metrics endpoint is Ray's")

from prometheus_client.parser import text_string_to_metric_families

from taskserve import TaskProcessorConfig, TaskState
from taskserve.client import TaskClient
from taskserve.serve import metrics
from taskserve.serve.metrics import RayMetricsPlugin
from taskserve_conformance import BrokerHarness, SqliteHarness
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.deadlines import Deadlines, timeout_factor
from taskserve_conformance.serve import ServeApps, ray_metrics_url, serve_apps_in
from taskserve_conformance.waiting import wait_until

pytest_plugins = ["taskserve_conformance.plugin"]

# With the other sqlite Serve tests, on one of the suite's three Ray instances.
pytestmark = pytest.mark.xdist_group("serve-ray-3")

RAY_PREFIX = "ray_"
COUNTS = {
    "taskserve_tasks_enqueued_total": 5,
    "taskserve_tasks_started_total": 6,  # echo 1, flaky 2, fail 2, hold 1
    "taskserve_tasks_succeeded_total": 2,
    "taskserve_tasks_retried_total": 2,
    "taskserve_tasks_failed_total": 1,
    "taskserve_tasks_dead_lettered_total": 1,
    "taskserve_tasks_cancelled_total": 2,
}
"""The counters, and what each reads once the test's five tasks are done."""
HISTOGRAMS = ("taskserve_task_run_time_seconds", "taskserve_task_queue_wait_seconds")
GAUGES = ("taskserve_queue_depth", "taskserve_queue_in_flight")
README = Path(__file__).resolve().parents[2] / "README.md"
EXPORT_WAIT_S = 30.0
"""Bound for Ray to export what was recorded (every second in the suite's Ray)."""


class _Named:
    """Stands in for a ``ray.util.metrics`` class and remembers the name."""

    made: list[str] = []

    def __init__(self, name: str, **options: Any) -> None:
        self.made.append(name)


def _documented(text: str) -> set[str]:
    """Series names quoted in ``text``; ``taskserve_tasks_{a,b}_total`` (across lines
    too) reads as two names."""
    names: set[str] = set()
    for head, choices, tail in re.findall(r"(taskserve_\w*?)(?:\{([\w,\s]+)\})?(\w*)`", text):
        names.update(f"{head}{choice.strip()}{tail}" for choice in (choices or "").split(","))
    return names


def test_the_plugin_defines_the_documented_series() -> None:
    """The series this test waits for are exactly those the plugin records, and
    the plugin's docstring and the README list each of them."""
    _Named.made = []
    RayMetricsPlugin({"counter": _Named, "histogram": _Named, "gauge": _Named})
    series = {*COUNTS, *HISTOGRAMS, *GAUGES}
    assert sorted(_Named.made) == sorted(series)
    assert series <= _documented(metrics.__doc__ or ""), "the metrics module's docstring"
    assert series <= _documented(README.read_text()), "the README"


def _samples(url: str, queue: str) -> dict[str, float]:
    """Sample name -> value summed over the series tagged ``queue`` (one series per
    process and task name), from Ray's Prometheus text; empty while unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("queue") == queue and sample.name.startswith(RAY_PREFIX):
                name = sample.name.removeprefix(RAY_PREFIX)
                found[name] = found.get(name, 0.0) + sample.value
    return found


def _missing(samples: Mapping[str, float]) -> list[str]:
    """What the exported samples lack: a series, or a counter's final value."""
    missing = [
        f"{name}={samples.get(name)} (want {want})"
        for name, want in COUNTS.items()
        if samples.get(name) != want
    ]
    missing += [f"{name}_count" for name in HISTOGRAMS if not samples.get(f"{name}_count")]
    missing += [name for name in GAUGES if name not in samples]
    return missing


def _finished(client: TaskClient, ids: list[str]) -> list[TaskState] | None:
    """The statuses of ``ids`` once every one is terminal, else None."""
    statuses = [client.status(task_id).status for task_id in ids]
    terminal = {TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED}
    return statuses if all(s in terminal for s in statuses) else None


class TestRayMetricsEndpoint:
    adapter = "sqlite"

    @pytest.fixture
    def adapter_config(self, tmp_path: Path) -> dict[str, str]:
        return {"path": str(tmp_path / "queue.db")}

    @pytest.fixture
    def harness(self) -> BrokerHarness:
        return SqliteHarness()

    @pytest.fixture
    def serve_apps(
        self, serve_instance: str, tmp_path: Path, make_config: ConfigFactory
    ) -> Iterator[ServeApps]:
        with serve_apps_in(tmp_path) as apps:
            yield apps

    def test_every_series_is_exported_with_its_queue(
        self,
        serve_apps: ServeApps,
        serve_instance: str,
        make_config: ConfigFactory,
        record_property: Any,
    ) -> None:
        config: TaskProcessorConfig = make_config(max_retries=1)
        deadlines = Deadlines(config)
        consumer = serve_apps.consumer(config, max_ongoing_requests=4)
        ingress = serve_apps.ingress(config)
        prefix = "/metrics-test"
        serve_apps.run(ingress.bind(consumer.bind(str(serve_apps.marker_dir))), route_prefix=prefix)
        started = time.monotonic()
        with TaskClient(f"{serve_instance}{prefix}") as client:
            delayed = client.submit("echo", ["later"], delay_s=300)
            held = client.submit("hold", ["never-released", 300])
            done = [
                client.submit("echo", ["now"]),
                client.submit("flaky", ["second time"]),
                client.submit("fail", ["always"]),
            ]
            assert client.cancel(delayed.id).status is TaskState.CANCELLED
            wait_until(
                lambda: client.status(held.id).status is TaskState.STARTED,
                deadlines.pickup,
                "the held task did not start",
            )
            client.cancel(held.id)
            ids = [h.id for h in [*done, held]]
            statuses = wait_until(
                lambda: _finished(client, ids),
                deadlines.retries(1),
                "the tasks did not finish",
                describe=lambda: [client.status(i).status for i in ids],
            )
        assert statuses == [
            TaskState.SUCCESS,
            TaskState.SUCCESS,
            TaskState.FAILURE,
            TaskState.CANCELLED,
        ]
        url = ray_metrics_url()
        wait_until(
            lambda: not _missing(_samples(url, config.queue_name)),
            EXPORT_WAIT_S * timeout_factor(),
            f"Ray's metrics endpoint lacks series of queue '{config.queue_name}'",
            interval=0.25,
            describe=lambda: _missing(_samples(url, config.queue_name)),
        )
        record_property("tasks_to_exported_s", round(time.monotonic() - started, 3))
