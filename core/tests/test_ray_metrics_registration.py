"""Where the Ray metrics plugin is registered: in every process connected to
Ray that builds a producer or starts a consumer, once, and nowhere else (a
plain script imports neither Ray nor the Serve integration).

A stand-in ``ray`` module says whether Ray is initialized, and the plugin
records into fake metrics, so no Ray starts here."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest

from taskserve import TaskProcessorConfig, TaskState, instantiate_adapter_from_config
from taskserve.plugins import get_plugin_manager
from taskserve.serve import metrics
from taskserve.serve.consumer import ConsumerRuntime
from taskserve.serve.metrics import PLUGIN_NAME, RayMetricsPlugin


class CountingMetric:
    """A ``ray.util.metrics`` stand-in counting what is recorded, by tags."""

    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self.values: list[float] = []

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self.values.append(value)

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.values.append(value)

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.values.append(value)


@pytest.fixture
def config(tmp_path: Path) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name="ray-metrics-registration",
        adapter_config={"path": str(tmp_path / "tasks.db"), "poll_interval_s": 0.01},
        consumer_concurrency=1,
    )


@pytest.fixture
def manager() -> Iterator[pluggy.PluginManager]:
    """The plugin manager without the metrics plugin; whatever was registered
    under its name before the test is registered again after it."""
    manager = get_plugin_manager()
    before = manager.unregister(name=PLUGIN_NAME)
    yield manager
    manager.unregister(name=PLUGIN_NAME)
    if before is not None:
        manager.register(before, name=PLUGIN_NAME)


@pytest.fixture
def ray_state(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """A stand-in ``ray`` module whose ``is_initialized()`` reads ``state["up"]``;
    the plugin's metrics are :class:`CountingMetric`."""
    state = {"up": False}
    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: state["up"]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(
        metrics,
        "_ray_factories",
        lambda: {"counter": CountingMetric, "histogram": CountingMetric, "gauge": CountingMetric},
    )
    return state


def _registered(manager: pluggy.PluginManager) -> list[RayMetricsPlugin]:
    return [p for p in manager.get_plugins() if isinstance(p, RayMetricsPlugin)]


def test_a_plain_script_imports_no_ray(tmp_path: Path) -> None:
    script = f"""
import sys
from taskserve import instantiate_adapter_from_config
from taskserve.plugins import get_plugin_manager
adapter = instantiate_adapter_from_config(
    {{"queue_name": "plain", "adapter_config": {{"path": {str(tmp_path / "plain.db")!r}}}}}
)
task = adapter.enqueue_task_sync("x")
adapter.cancel_task_sync(task.id)
adapter.shutdown()
assert "ray" not in sys.modules, "Ray was imported"
assert "taskserve.serve" not in sys.modules, "the Serve integration was imported"
assert get_plugin_manager().get_plugin({PLUGIN_NAME!r}) is None
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_nothing_is_registered_while_ray_is_not_initialized(
    manager: pluggy.PluginManager, ray_state: dict[str, bool], config: TaskProcessorConfig
) -> None:
    producer = instantiate_adapter_from_config(config)
    try:
        producer.enqueue_task_sync("x")
    finally:
        producer.shutdown()
    assert _registered(manager) == []


def test_a_producer_and_a_consumer_in_one_process_count_each_event_once(
    manager: pluggy.PluginManager, ray_state: dict[str, bool], config: TaskProcessorConfig
) -> None:
    ray_state["up"] = True
    producer = instantiate_adapter_from_config(config)
    second = instantiate_adapter_from_config(config)
    runtime = ConsumerRuntime(config, {"echo": lambda value: value}, owner="Echo")
    runtime.start()
    try:
        plugins = _registered(manager)
        assert len(plugins) == 1, plugins
        task = producer.enqueue_task_sync("echo", args=[1])
        deadline = time.monotonic() + 10
        while producer.get_task_status_sync(task.id).status is not TaskState.SUCCESS:
            assert time.monotonic() < deadline, producer.get_task_status_sync(task.id)
            time.sleep(0.02)
        queued = second.enqueue_task_sync("never", delay_s=300)
        second.cancel_task_sync(queued.id)
    finally:
        runtime.stop(timeout=5)
        producer.shutdown()
        second.shutdown()
    counters = plugins[0].counters
    assert counters["enqueued"].values == [1, 1]
    assert counters["started"].values == [1]
    assert counters["succeeded"].values == [1]
    assert counters["cancelled"].values == [1]
    assert _registered(manager) == plugins
