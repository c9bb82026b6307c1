"""Ray Serve's unit scenarios of ``@task_consumer`` and ``@task_handler``, on taskserve.

Each test is named after the test of Ray 2.60's
``python/ray/serve/tests/unit/test_task_consumer.py`` whose scenario it plays:
a consumer class decorated the way Ray's guide does it, whose config selects
(by class) an adapter written against Ray's ``TaskProcessorAdapter``
interface, which records what it is asked to do; the same outcomes are
checked. Where taskserve differs on purpose, the module or the test says so:

* taskserve starts the consumer when the decorated class is instantiated
  (Ray's replica calls ``initialize_callable()``, which is internal to Ray);
  the adapter is reached with ``get_consumer(instance).adapter``;
* a handler reaches the adapter wrapped (the wrapper counts the replica's
  running tasks for autoscaling), so it is compared after ``inspect.unwrap``;
* Ray's test config is a ``CeleryAdapterConfig(broker_url="fake://")``; taskserve
  checks Celery URLs when the config is built, so the adapter here takes
  ``adapter_config={"param": "value"}``, which it receives as given.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from taskserve import TaskProcessorConfig, TaskResult
from taskserve.ray_adapter import RayAdapterShim, TaskProcessorAdapter
from taskserve.serve import get_consumer, task_consumer, task_handler


class RecordingAdapter(TaskProcessorAdapter):
    """An adapter of Ray Serve's interface that only records its calls."""

    def __init__(self, config: TaskProcessorConfig) -> None:
        self.config = config
        self.registered: list[tuple[Callable[..., Any], str | None]] = []
        self.events: list[str] = []

    def initialize(self, consumer_concurrency: int = 3) -> None:
        self.events.append("initialize")

    def register_task_handle(self, func: Callable[..., Any], name: str | None = None) -> None:
        self.registered.append((func, name))

    def start_consumer(self, **kwargs: Any) -> None:
        self.events.append("start")

    def stop_consumer(self, timeout: float = 10.0) -> None:
        self.events.append("stop")

    def shutdown(self) -> None:
        self.events.append("shutdown")

    def enqueue_task_sync(
        self, task_name: str, args: Any = None, kwargs: Any = None, **options: Any
    ) -> TaskResult:
        raise NotImplementedError

    def get_task_status_sync(self, task_id: str) -> TaskResult:
        raise NotImplementedError

    def cancel_task_sync(self, task_id: str) -> None:
        raise NotImplementedError

    def get_metrics_sync(self) -> dict[str, Any]:
        return {}

    def health_check_sync(self) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def config() -> TaskProcessorConfig:
    return TaskProcessorConfig(
        queue_name=f"unit-{uuid.uuid4().hex}",
        adapter=RecordingAdapter,
        adapter_config={"param": "value"},
    )


def recording_adapter(instance: object) -> RecordingAdapter:
    """The adapter behind a started consumer instance."""
    shim = get_consumer(instance).adapter
    assert isinstance(shim, RayAdapterShim)
    assert isinstance(shim.ray_adapter, RecordingAdapter)
    return shim.ray_adapter


def registered_handlers(instance: object) -> list[tuple[Any, str | None]]:
    """(handler, task name) registered with the adapter, in order, unwrapped."""
    return [(inspect.unwrap(f), name) for f, name in recording_adapter(instance).registered]


def destroy(instance: Any) -> RecordingAdapter:
    """What Serve does when a replica goes away; returns the adapter."""
    adapter = recording_adapter(instance)
    instance.__del__()
    return adapter


# -- task_handler -------------------------------------------------------------------------
class TestTaskHandlerDecorator:
    def test_task_handler_decorator_with_name(self) -> None:
        calls: list[int] = []

        @task_handler(name="my_task")
        def handler() -> None:
            calls.append(1)

        handler()
        assert calls == [1]
        assert handler._task_name == "my_task"  # type: ignore[attr-defined]

    def test_task_handler_decorator_without_name(self) -> None:
        calls: list[int] = []

        @task_handler
        def test_handler() -> None:
            calls.append(1)

        test_handler()
        assert calls == [1]
        assert test_handler._task_name == "test_handler"  # type: ignore[attr-defined]

    @pytest.mark.parametrize("invalid_name", ["", "   ", 123])
    def test_task_handler_decorator_invalid_name(self, invalid_name: Any) -> None:
        expected = f"Task name must be a non-empty string, got {invalid_name}"
        with pytest.raises(ValueError, match=expected):
            task_handler(name=invalid_name)

    def test_task_handler_on_callable_object_without_name_attr(self) -> None:
        class Nameless:
            def __call__(self) -> None:
                return None

        with pytest.raises(AttributeError):
            task_handler(Nameless())


# -- task_consumer ---------------------------------------------------------------------
class TestTaskConsumerDecorator:
    def test_task_consumer_basic(self, config: TaskProcessorConfig) -> None:
        @task_consumer(task_processor_config=config)
        class Consumer:
            @task_handler
            def my_task(self) -> None:
                pass

        instance = Consumer()
        assert "start" in recording_adapter(instance).events
        assert registered_handlers(instance) == [(instance.my_task, "my_task")]
        assert destroy(instance).events[-2:] == ["stop", "shutdown"]

    def test_task_consumer_multiple_handlers(self, config: TaskProcessorConfig) -> None:
        @task_consumer(task_processor_config=config)
        class Consumer:
            @task_handler
            def task1(self) -> None:
                pass

            @task_handler
            def task2(self) -> None:
                pass

        instance = Consumer()
        assert registered_handlers(instance) == [
            (instance.task1, "task1"),
            (instance.task2, "task2"),
        ]
        destroy(instance)

    def test_task_consumer_custom_names(self, config: TaskProcessorConfig) -> None:
        @task_consumer(task_processor_config=config)
        class Consumer:
            @task_handler(name="custom_task")
            def task1(self) -> None:
                pass

            @task_handler
            def task2(self) -> None:
                pass

        instance = Consumer()
        assert registered_handlers(instance) == [
            (instance.task1, "custom_task"),
            (instance.task2, "task2"),
        ]
        destroy(instance)

    def test_task_consumer_init_args(self, config: TaskProcessorConfig) -> None:
        @task_consumer(task_processor_config=config)
        class Consumer:
            def __init__(self, value: int) -> None:
                self.value = value

        instance = Consumer(value=42)  # type: ignore[call-arg]
        assert instance.value == 42
        assert "start" in recording_adapter(instance).events
        destroy(instance)

    def test_task_consumer_no_handlers(self, config: TaskProcessorConfig) -> None:
        @task_consumer(task_processor_config=config)
        class Consumer:
            def some_method(self) -> None:
                pass

        instance = Consumer()
        assert "start" in recording_adapter(instance).events
        assert registered_handlers(instance) == []
        destroy(instance)

    def test_task_consumer_inheritance(self, config: TaskProcessorConfig) -> None:
        class Base:
            @task_handler
            def base_task(self) -> None:
                pass

        @task_consumer(task_processor_config=config)
        class Derived(Base):
            @task_handler
            def derived_task(self) -> None:
                pass

        instance = Derived()
        assert registered_handlers(instance) == [
            (instance.base_task, "base_task"),
            (instance.derived_task, "derived_task"),
        ]
        destroy(instance)

    def test_task_consumer_no_args_decorator(self) -> None:
        class Consumer:
            pass

        with pytest.raises(TypeError):
            task_consumer(Consumer)  # type: ignore[arg-type]
