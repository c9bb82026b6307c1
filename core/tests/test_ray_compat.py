"""Code written for Ray Serve's alpha API, on the core: configs, result shapes,
health and metrics shapes, and adapters written against Ray's interface.

The Celery-specific scenarios (Ray's ``CeleryAdapterConfig``, its broker and
result backends, its enqueue options) are in
``plugins/celery/tests/test_ray_compat_*.py``.
"""

from __future__ import annotations

import asyncio
import pickle
import queue
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskserve import (
    Capability,
    ConfigError,
    RemoteTaskError,
    TaskError,
    TaskProcessorConfig,
    TaskResult,
    TaskserveError,
    TaskState,
    UnsupportedCapability,
    instantiate_adapter_from_config,
    resolve_adapter,
)
from taskserve.config import UNLIMITED_ATTEMPTS
from taskserve.errors import ArgumentBindingError
from taskserve.ray_adapter import RayAdapterShim, TaskProcessorAdapter
from taskserve.serve import get_consumer, task_consumer, task_handler


def _wait(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


# -- TaskProcessorConfig ----------------------------------------------------------------
def test_rays_task_processor_config_fields_are_all_accepted() -> None:
    schema = pytest.importorskip("ray.serve.schema")
    assert set(schema.TaskProcessorConfig.model_fields) <= set(TaskProcessorConfig.model_fields)


def test_max_retries_none_retries_without_limit_as_in_celery(tmp_path: Path) -> None:
    config = TaskProcessorConfig(
        queue_name="q", adapter_config={"path": str(tmp_path / "t.db")}, max_retries=None
    )
    assert config.max_retries is None
    assert config.max_attempts == UNLIMITED_ATTEMPTS


@pytest.mark.parametrize("name", ["my queue", "queue with spaces", "élan/vital", "a" * 200])
def test_queue_names_ray_accepts_are_accepted_where_the_engine_carries_them(
    name: str, tmp_path: Path
) -> None:
    config = TaskProcessorConfig(
        queue_name=name,
        failed_task_queue_name=f"{name} failed"[:200],
        adapter_config={"path": str(tmp_path / "t.db")},
    )
    assert config.queue_name == name


@pytest.mark.parametrize("name", ["", "   ", "tab\tbed", "a" * 201])
def test_queue_names_no_engine_can_carry_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(ConfigError, match="queue_name"):
        TaskProcessorConfig(queue_name=name)


def test_rays_taskiq_adapter_path_is_refused_naming_the_alternatives() -> None:
    with pytest.raises(ConfigError, match="Taskiq adapter, which taskserve has no counterpart"):
        TaskProcessorConfig(
            queue_name="q",
            adapter="ray.serve.taskiq_task_processor.TaskiqTaskProcessorAdapter",
            adapter_config={},
        )


# -- TaskResult ----------------------------------------------------------------------------
def _failed(exc: BaseException) -> TaskResult:
    return TaskResult(id="t", status=TaskState.FAILURE, error=TaskError.from_exception(exc))


def test_a_failed_result_is_the_exception_rebuilt_from_its_type_and_message() -> None:
    result = _failed(ValueError("Task failed as expected"))
    assert isinstance(result.result, ValueError)
    assert str(result.result) == "Task failed as expected"
    assert result.error is not None and result.error.type == "ValueError"
    assert "Task failed as expected" in result.error.traceback


def test_the_pdf_templates_str_of_the_result_prints_the_message() -> None:
    assert str(_failed(RuntimeError("pdf download failed")).result) == "pdf download failed"
    assert str(_failed(KeyError("page")).result) == str(KeyError("page"))
    assert isinstance(_failed(KeyError("page")).result, KeyError)


def test_other_types_become_a_generic_exception_carrying_the_type_name() -> None:
    class InferenceError(Exception):
        pass

    result = _failed(InferenceError("GPU out of memory"))
    assert isinstance(result.result, RemoteTaskError)
    assert result.result.type_name.endswith("InferenceError")
    assert str(result.result) == "GPU out of memory"
    copy = pickle.loads(pickle.dumps(result))
    assert copy == result and isinstance(copy.result, RemoteTaskError)


def test_nothing_is_imported_or_unpickled_to_rebuild_an_exception() -> None:
    result = TaskResult(
        id="t",
        status=TaskState.FAILURE,
        error=TaskError(type="os.system", message="echo unsafe"),
    )
    assert isinstance(result.result, RemoteTaskError)
    assert result.result.type_name == "os.system"


def test_taskservers_own_errors_are_rebuilt_by_name() -> None:
    result = _failed(ArgumentBindingError("arguments do not fit handler 'f'"))
    assert isinstance(result.result, ArgumentBindingError)
    assert isinstance(result.result, TypeError)


def test_json_keeps_the_structured_error_and_a_null_result() -> None:
    result = _failed(ValueError("boom"))
    data = result.model_dump(mode="json")
    assert data["result"] is None and data["error"]["type"] == "ValueError"
    again = TaskResult.model_validate_json(result.model_dump_json())
    assert isinstance(again.result, ValueError) and again == result


def test_dict_works_without_pydantic_deprecation_warnings() -> None:
    task = TaskResult(id="t", status=TaskState.PENDING)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert task.dict()["id"] == "t"
        assert task.dict(mode="json")["status"] == "PENDING"
        assert '"id":"t"' in task.json()


@pytest.mark.parametrize(
    ("celery", "state"),
    [("REVOKED", TaskState.CANCELLED), ("RECEIVED", TaskState.PENDING), ("SUCCESS", "SUCCESS")],
)
def test_celery_state_names_map_to_taskserve_states(celery: str, state: str) -> None:
    assert TaskResult(id="t", status=celery, result=None).status == state  # type: ignore[arg-type]


# -- health and metrics shapes (sqlite: one process, real consumer) --------------------------
@pytest.fixture
def sqlite_config(tmp_path: Path) -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name=f"compat-{uuid.uuid4().hex[:8]}",
        adapter_config={"path": str(tmp_path / "tasks.db"), "poll_interval_s": 0.02},
        consumer_concurrency=1,
    )


def test_metrics_and_health_also_have_the_shapes_ray_returns(
    sqlite_config: TaskProcessorConfig,
) -> None:
    consumer = resolve_adapter(sqlite_config.adapter or "sqlite")(sqlite_config)
    consumer.initialize()
    consumer.register_task_handle(lambda data: data, "process_request")
    producer = instantiate_adapter_from_config(sqlite_config)
    assert len(producer.health_check_sync()) == 0 and producer.health_check_sync()
    consumer.start_consumer()
    try:
        task = producer.enqueue_task_sync("process_request", args=["x"])
        _wait(lambda: producer.get_task_status_sync(task.id).status is TaskState.SUCCESS)
        metrics = _wait(
            lambda: (
                m
                if (m := producer.get_metrics_sync()).get(next(iter(m), ""), {}).get("total")
                else None
            )
        )
        assert len(metrics) == 1
        worker_name = next(iter(metrics))
        stats = metrics[worker_name]
        assert stats["pool"]["max-concurrency"] == 1 and stats["pool"]["threads"] == 1
        assert stats["total"]["process_request"] == 1
        assert stats["broker"]["transport"] == "sqlite"
        assert metrics.queue_depth == 0 and dict(metrics) == metrics.workers

        health = producer.health_check_sync()
        assert health.healthy and len(health) == 1
        reply = health[0]
        assert len(reply) == 1 and reply[next(iter(reply))] == {"ok": "pong"}
        assert list(health) == health.workers
    finally:
        consumer.stop_consumer(5)
        consumer.shutdown()
    assert len(producer.health_check_sync()) == 0
    producer.shutdown()


def test_engine_options_an_adapter_does_not_take_are_a_clear_error(
    sqlite_config: TaskProcessorConfig,
) -> None:
    producer = instantiate_adapter_from_config(sqlite_config)
    with pytest.raises(ConfigError, match=r"countdown .*'sqlite' takes none"):
        producer.enqueue_task_sync("f", countdown=1)
    producer.shutdown()


# -- an adapter written against Ray Serve's interface -----------------------------------------
class InMemoryRayAdapter(TaskProcessorAdapter):
    """A small adapter written against Ray Serve's ``TaskProcessorAdapter``: tasks
    in a Python queue of this process, run by one thread."""

    def __init__(self, config: TaskProcessorConfig) -> None:
        self.config = config
        self.param = config.adapter_config["param"]
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.tasks: dict[str, TaskResult] = {}
        self._queue: queue.Queue[tuple[str, str, list[Any], dict[str, Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.concurrency: int | None = None

    def initialize(self, consumer_concurrency: int = 5) -> None:
        self.concurrency = consumer_concurrency

    def register_task_handle(self, func: Callable[..., Any], name: str | None = None) -> None:
        self.handlers[name or func.__name__] = func

    def enqueue_task_sync(
        self, task_name: str, args: Any = None, kwargs: Any = None, **options: Any
    ) -> TaskResult:
        task_id = options.get("task_id") or str(uuid.uuid4())
        self.tasks[task_id] = TaskResult(
            id=task_id, status="PENDING", created_at=time.time(), result=None
        )
        self._queue.put((task_id, task_name, list(args or []), dict(kwargs or {})))
        return self.tasks[task_id]

    def get_task_status_sync(self, task_id: str) -> TaskResult:
        return self.tasks[task_id]

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            task_id, name, args, kwargs = item
            if self.tasks[task_id].status != "PENDING":
                continue
            try:
                value = self.handlers[name](*args, **kwargs)
                self.tasks[task_id] = TaskResult(id=task_id, status="SUCCESS", result=value)
            except Exception as e:
                self.tasks[task_id] = TaskResult(id=task_id, status="FAILURE", result=e)

    def start_consumer(self, **kwargs: Any) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop_consumer(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def cancel_task_sync(self, task_id: str) -> None:
        if self.tasks[task_id].status == "PENDING":
            self.tasks[task_id] = TaskResult(id=task_id, status="REVOKED", result=None)

    def get_metrics_sync(self) -> dict[str, Any]:
        return {"memory@here": {"queued": self._queue.qsize(), "param": self.param}}

    def health_check_sync(self) -> list[dict[str, Any]]:
        alive = self._thread is not None and self._thread.is_alive()
        return [{"memory@here": {"ok": "pong"}}] if alive else []


@pytest.fixture
def ray_interface_config() -> Iterator[TaskProcessorConfig]:
    yield TaskProcessorConfig(
        queue_name="memory",
        adapter=f"{__name__}.InMemoryRayAdapter",
        adapter_config={"param": "value"},
    )


def test_a_ray_interface_adapter_is_selected_by_dotted_path_and_gets_its_config_as_given(
    ray_interface_config: TaskProcessorConfig,
) -> None:
    shim_class = resolve_adapter(ray_interface_config.adapter or "")
    assert issubclass(shim_class, RayAdapterShim)
    assert shim_class.capabilities == frozenset()
    assert resolve_adapter(f"{__name__}:InMemoryRayAdapter") is shim_class
    assert resolve_adapter(InMemoryRayAdapter) is shim_class
    producer = instantiate_adapter_from_config(ray_interface_config)
    assert isinstance(producer, RayAdapterShim)
    assert producer.ray_adapter.param == "value"
    assert producer.ray_adapter.config.adapter_config == {"param": "value"}


def test_a_ray_interface_adapter_runs_a_task_consumer(
    ray_interface_config: TaskProcessorConfig,
) -> None:
    @task_consumer(task_processor_config=ray_interface_config)
    class Consumer:
        @task_handler(name="double")
        def double(self, x: int) -> int:
            return 2 * x

        @task_handler
        def fail(self) -> None:
            raise ValueError("Task failed as expected")

    instance = Consumer()
    shim = get_consumer(instance).adapter
    assert isinstance(shim, RayAdapterShim)
    memory = shim.ray_adapter
    assert memory.concurrency == 5  # the default max_ongoing_requests, outside Serve
    task = shim.enqueue_task_sync("double", args=[21])
    assert task.status is TaskState.PENDING
    done = _wait(
        lambda: r if (r := shim.get_task_status_sync(task.id)).status.is_terminal else None
    )
    assert done.status is TaskState.SUCCESS and done.result == 42
    failed_task = shim.enqueue_task_sync("fail")
    failed = _wait(
        lambda: r if (r := shim.get_task_status_sync(failed_task)).status.is_terminal else None
    )
    assert failed.status is TaskState.FAILURE and str(failed.result) == "Task failed as expected"

    health = shim.health_check_sync()
    assert health.healthy and health.consumer_running and len(health) == 1
    assert shim.get_metrics_sync() == {"memory@here": {"queued": 0, "param": "value"}}
    assert asyncio.run(shim.get_task_status_async(task.id)).result == 42

    instance.__del__()
    assert not shim.consumer_started


def test_a_ray_interface_adapter_cancels_and_reports_celerys_revoked_as_cancelled(
    ray_interface_config: TaskProcessorConfig,
) -> None:
    producer = instantiate_adapter_from_config(ray_interface_config)
    task = producer.enqueue_task_sync("anything")
    outcome = producer.cancel_task_sync(task.id)
    assert outcome.cancelled and outcome.status is TaskState.CANCELLED
    assert producer.get_task_status_sync(task.id).status is TaskState.CANCELLED


def test_a_ray_interface_adapter_declares_no_capability_and_refuses_what_it_cannot_prove(
    ray_interface_config: TaskProcessorConfig,
) -> None:
    producer = instantiate_adapter_from_config(ray_interface_config)
    assert not any(producer.supports(c) for c in Capability)
    with pytest.raises(UnsupportedCapability, match="dead_letters"):
        producer.list_dead_letters_sync()
    with pytest.raises(UnsupportedCapability, match="idempotency_keys"):
        producer.enqueue_task_sync("f", idempotency_key="k")
    with pytest.raises(TaskserveError, match="keeps no original payload"):
        producer.retry_task_sync("some-id")


def test_a_subclass_of_rays_own_base_class_runs_behind_the_shim() -> None:
    schema = pytest.importorskip("ray.serve.schema")

    class RaySubclass(schema.TaskProcessorAdapter):  # type: ignore[misc,name-defined]
        def __init__(self, config: Any) -> None:
            self.config = config

        initialize = register_task_handle = start_consumer = stop_consumer = lambda self, *a, **k: (
            None
        )
        enqueue_task_sync = get_task_status_sync = cancel_task_sync = lambda self, *a, **k: None
        get_metrics_sync = lambda self: {}  # noqa: E731
        health_check_sync = lambda self: []  # noqa: E731

    adapter_class = resolve_adapter(RaySubclass)
    assert issubclass(adapter_class, RayAdapterShim)
    config = TaskProcessorConfig(queue_name="q", adapter=RaySubclass, adapter_config=None)
    shim = instantiate_adapter_from_config(config)
    assert isinstance(shim, RayAdapterShim) and isinstance(shim.ray_adapter, RaySubclass)
    with pytest.raises(TaskserveError, match="returned None, not a TaskResult"):
        shim.get_task_status_sync("x")
