"""The Serve integration's pieces that work without a Ray cluster: decorators,
consumer lifecycle and health, the autoscaling decision, the metrics plugin and
the PDF template's names. The Serve group of the conformance suite checks them
in a real Serve application."""

from __future__ import annotations

import asyncio
import inspect
import time
from pathlib import Path
from typing import Any

import pytest

import taskserve
from taskserve import ConfigError, TaskProcessorConfig, TaskState, instantiate_adapter_from_config
from taskserve.hooks import TaskEvent
from taskserve.models import AdapterMetrics
from taskserve.serve import (
    ConsumerUnhealthy,
    QueueDepthAutoscalingPolicy,
    TaskAdapter,
    get_consumer,
    route,
    task_consumer,
    task_handler,
)
from taskserve.serve.consumer import ReplicaSettings
from taskserve.serve.metrics import RayMetricsPlugin


@pytest.fixture
def config(tmp_path: Path) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name="serve-tests",
        adapter_config={"path": str(tmp_path / "tasks.db"), "poll_interval_s": 0.01},
        consumer_concurrency=2,
    )


def wait_status(config: TaskProcessorConfig, task_id: str, state: TaskState) -> Any:
    producer = instantiate_adapter_from_config(config)
    deadline = time.monotonic() + 10
    try:
        while True:
            result = producer.get_task_status_sync(task_id)
            if result.status is state:
                return result
            assert time.monotonic() < deadline, result
            time.sleep(0.02)
    finally:
        producer.shutdown()


def test_task_handler_marks_with_ray_attribute_names() -> None:
    @task_handler
    def plain(x: int) -> int:
        return x

    @task_handler(name="renamed")
    async def coroutine(x: int) -> int:
        return x

    assert plain._is_task_handler and plain._task_name == "plain"  # type: ignore[attr-defined]
    assert coroutine._task_name == "renamed"  # type: ignore[attr-defined]
    assert inspect.iscoroutinefunction(coroutine)
    with pytest.raises(ConfigError):
        task_handler(name=" ")


def test_task_consumer_needs_a_config(config: TaskProcessorConfig) -> None:
    with pytest.raises(TypeError, match="task_processor_config"):
        task_consumer()
    with pytest.raises(TypeError, match="bare @task_consumer"):
        task_consumer(type("X", (), {}))  # type: ignore[arg-type]

    class Twice:
        @task_handler(name="same")
        def one(self) -> None: ...

        @task_handler(name="same")
        def two(self) -> None: ...

    with pytest.raises(ConfigError, match="both handle task 'same'"):
        task_consumer(config)(Twice)


def test_consumer_runs_sync_and_async_handlers_and_drains(config: TaskProcessorConfig) -> None:
    deleted: list[str] = []

    @task_consumer(task_processor_config=config)
    class Consumer:
        """A consumer."""

        def __init__(self, offset: int) -> None:
            self.offset = offset

        @task_handler(name="add")
        def add(self, a: int) -> int:
            return a + self.offset

        @task_handler
        async def shout(self, text: str) -> str:
            await asyncio.sleep(0)
            return text.upper()

        def __del__(self) -> None:
            deleted.append("user")

    assert Consumer.__name__ == "Consumer" and Consumer.__doc__ == "A consumer."
    instance = Consumer(10)
    runtime = get_consumer(instance)
    assert runtime.concurrency == 2
    producer = TaskAdapter(config)
    one = producer.enqueue_task_sync("add", [5])
    two = producer.enqueue_task_sync("shout", kwargs={"text": "hi"})
    assert wait_status(config, one.id, TaskState.SUCCESS).result == 15
    assert wait_status(config, two.id, TaskState.SUCCESS).result == "HI"
    stats = asyncio.run(instance.record_autoscaling_stats())  # type: ignore[attr-defined]
    assert stats["taskserve_in_flight"] == 0
    asyncio.run(instance.check_health())  # type: ignore[attr-defined]
    instance.__del__()
    assert runtime.stopped and deleted == ["user"]
    asyncio.run(instance.check_health())  # type: ignore[attr-defined]  # stopped on purpose: fine
    producer.shutdown()


def test_check_health_fails_on_dead_consumer_and_calls_the_users(
    config: TaskProcessorConfig,
) -> None:
    calls: list[str] = []

    @task_consumer(config)
    class Consumer:
        @task_handler
        def noop(self) -> None: ...

        async def check_health(self) -> None:
            calls.append("user")

    instance = Consumer()
    asyncio.run(instance.check_health())
    assert calls == ["user"]
    consumer = get_consumer(instance).adapter._consumer
    assert consumer is not None
    consumer.stop(0.0)  # the consumer threads end behind the adapter's back
    with pytest.raises(ConsumerUnhealthy, match="consumer is not running"):
        asyncio.run(instance.check_health())
    instance.__del__()


def test_check_health_fails_when_the_broker_is_unreachable(config: TaskProcessorConfig) -> None:
    @task_consumer(config)
    class Consumer:
        @task_handler
        def noop(self) -> None: ...

    instance = Consumer()
    path = Path(config.adapter_config.path)
    path.rename(path.with_name("away.db"))
    try:
        with pytest.raises(ConsumerUnhealthy, match="broker unreachable"):
            asyncio.run(instance.check_health())  # type: ignore[attr-defined]
    finally:
        path.with_name("away.db").rename(path)
        instance.__del__()


def test_async_init_is_supported(config: TaskProcessorConfig) -> None:
    @task_consumer(config)
    class Consumer:
        async def __init__(self) -> None:
            self.ready = True

        @task_handler
        def noop(self) -> None: ...

    instance = Consumer.__new__(Consumer)
    asyncio.run(Consumer.__init__(instance))  # type: ignore[misc]
    assert get_consumer(instance).adapter.consumer_started
    instance.__del__()


def test_drain_budget_leaves_room_before_the_kill() -> None:
    settings = ReplicaSettings(
        in_replica=True, graceful_shutdown_timeout_s=20.0, graceful_shutdown_wait_loop_s=2.0
    )
    assert settings.drain_timeout_s() == pytest.approx(16.0)
    assert ReplicaSettings(in_replica=False).drain_timeout_s() == 20.0
    short = ReplicaSettings(
        in_replica=True, graceful_shutdown_timeout_s=4.0, graceful_shutdown_wait_loop_s=0.5
    )
    assert short.drain_timeout_s() == pytest.approx(2.5)
    tight = ReplicaSettings(in_replica=True, graceful_shutdown_timeout_s=1.0)
    assert tight.drain_timeout_s() == 0.0


def test_task_adapter_finds_the_queue_from_the_adapter_config(config: TaskProcessorConfig) -> None:
    @task_consumer(config.model_copy(update={"queue_name": "routed-queue"}))
    class Consumer:
        @task_handler(name="routed_task")
        def handle(self) -> None: ...

    producer = TaskAdapter(config.adapter_config)
    task = asyncio.run(producer.enqueue_task(task_name="routed_task"))
    assert task.queue_name == "routed-queue"
    status = asyncio.run(producer.get_task_status(taskserve.TaskID(id=task.id)))
    assert status.state is TaskState.PENDING
    with pytest.raises(ConfigError, match="no queue known for task 'unknown'"):
        producer.enqueue_task_sync("unknown")
    assert TaskAdapter(config.adapter_config, "explicit").enqueue_task_sync("x").queue_name == (
        "explicit"
    )
    producer.shutdown()


def test_route_marks_methods() -> None:
    class API:
        @route("/process", methods=["POST"])
        async def process(self) -> None: ...

    assert API.process._taskserve_routes == [("/process", ["POST"], {})]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError):
        route("no-slash")


def test_lazy_exports_do_not_need_ray() -> None:
    assert taskserve.task_consumer is task_consumer
    assert taskserve.task_handler is task_handler
    with pytest.raises(AttributeError):
        taskserve.no_such_name  # noqa: B018


# -- autoscaling -------------------------------------------------------------------
class Point:
    def __init__(self, value: float) -> None:
        self.value = value
        self.timestamp = 0.0


class Config:
    def get_target_ongoing_requests(self) -> float:
        return 2.0


class Context:
    def __init__(
        self,
        in_flight: dict[str, list[float]] | None = None,
        depth: float | None = None,
        current: int = 2,
    ) -> None:
        raw: dict[str, dict[str, list[Point]]] = {}
        if in_flight is not None:
            raw["taskserve_in_flight"] = {r: [Point(v) for v in vs] for r, vs in in_flight.items()}
            if depth is not None:
                raw["taskserve_queue_depth"] = {r: [Point(depth)] for r in in_flight}
        self.raw_metrics = raw
        self.aggregated_metrics: dict[str, Any] = {}
        self.running_replicas = list(in_flight or {})
        self.current_num_replicas = current
        self.target_num_replicas = current
        self.total_num_requests = 0.0
        self.policy_state: dict[str, Any] = {}
        self.config = Config()


def test_policy_holds_until_it_has_data() -> None:
    desired, state = QueueDepthAutoscalingPolicy()(Context(current=3))
    assert desired == 3 and state["taskserve"]["known"] == 0.0


def test_policy_counts_queued_plus_in_flight() -> None:
    policy = QueueDepthAutoscalingPolicy(target_tasks_per_replica=2)
    desired, state = policy(Context({"a": [2.0], "b": [2.0]}, depth=4))
    assert desired == 4  # (4 queued + 4 running) / 2
    assert state["taskserve"]["workload"] == 8.0
    assert policy(Context({"a": [0.0], "b": [0.0]}, depth=0))[0] == 0
    assert QueueDepthAutoscalingPolicy()(Context({"a": [1.0]}, depth=3))[0] == 2  # target 2


def test_policy_never_drops_below_busy_replicas() -> None:
    policy = QueueDepthAutoscalingPolicy(target_tasks_per_replica=10)
    busy = Context({"a": [1.0], "b": [0.0, 1.0, 0.0], "c": [0.0]}, depth=0)
    desired, state = policy(busy)
    assert state["taskserve"]["busy_replicas"] == 2.0
    assert desired == 2


def test_policy_counts_a_replica_without_reports_as_busy() -> None:
    """A running replica whose reports are late is not scaled away as idle."""
    policy = QueueDepthAutoscalingPolicy(target_tasks_per_replica=1)
    late = Context({"a": [1.0]}, depth=0)
    late.running_replicas = ["a", "b"]
    desired, state = policy(late)
    assert state["taskserve"]["busy_replicas"] == 2.0
    assert desired == 2
    idle = Context({"a": [0.0], "b": [0.0]}, depth=0)
    assert policy(idle)[0] == 0


def test_policy_polls_the_broker_for_scale_from_zero(config: TaskProcessorConfig) -> None:
    producer = instantiate_adapter_from_config(config)
    for _ in range(3):
        producer.enqueue_task_sync("x")
    producer.shutdown()
    data = config.model_dump(mode="json")
    policy = QueueDepthAutoscalingPolicy(
        target_tasks_per_replica=1, task_processor_config=data, poll_interval_s=0.0
    )
    context = Context(current=0)
    deadline = time.monotonic() + 10
    while policy(context)[0] != 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_policy_with_ray_arguments_counts_the_broker_until_replicas_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray's arguments poll the broker, whose length counts cancelled tasks'
    messages too: it scales up from zero, and once a replica reports the depth
    read from the store, that depth counts instead."""

    def poll(self: QueueDepthAutoscalingPolicy) -> None:
        self._polled = (7, 0)  # 7 messages: 5 of them cancelled tasks

    monkeypatch.setattr(QueueDepthAutoscalingPolicy, "_poll_once", poll)
    policy = QueueDepthAutoscalingPolicy(
        target_tasks_per_replica=1, broker_url="redis://broker", queue_name="q", poll_interval_s=0
    )
    deadline = time.monotonic() + 10
    while policy(Context(current=0))[0] != 7:  # no replica yet: the broker's length
        assert time.monotonic() < deadline
        time.sleep(0.02)
    desired, state = policy(Context({"a": [1.0]}, depth=2))
    assert state["taskserve"]["queue_depth"] == 2.0
    assert desired == 3  # 2 runnable tasks queued + 1 running


# -- metrics -------------------------------------------------------------------------
class FakeMetric:
    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self.options = options
        self.calls: list[tuple[str, float, dict[str, str]]] = []

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("inc", value, tags or {}))

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("observe", value, tags or {}))

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("set", value, tags or {}))


def test_metrics_plugin_records_every_event() -> None:
    plugin = RayMetricsPlugin({"counter": FakeMetric, "histogram": FakeMetric, "gauge": FakeMetric})
    event = TaskEvent(
        task_id="t",
        task_name="index",
        queue_name="q",
        adapter="sqlite",
        run_time_s=1.5,
        queue_wait_s=0.25,
    )
    for hook in (
        "enqueued",
        "started",
        "retried",
        "succeeded",
        "failed",
        "dead_lettered",
        "cancelled",
    ):
        getattr(plugin, f"taskserve_task_{hook}")(event)
        counter = plugin.counters[hook]
        assert counter.calls == [("inc", 1, {"queue": "q", "adapter": "sqlite", "task": "index"})]
        assert counter.name == f"taskserve_tasks_{hook}_total"
    assert [c[1] for c in plugin.queue_wait.calls] == [0.25]
    assert len(plugin.run_time.calls) == 4  # retried, succeeded, failed, cancelled
    plugin.observe_queue(AdapterMetrics(queue_name="q", queue_depth=7, in_flight=2), "sqlite")
    assert plugin.queue_depth.calls == [("set", 7, {"queue": "q", "adapter": "sqlite"})]
    assert plugin.queue_in_flight.calls == [("set", 2, {"queue": "q", "adapter": "sqlite"})]
