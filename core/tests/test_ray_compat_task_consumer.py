"""Ray Serve's unit scenarios of ``@task_consumer`` and ``@task_handler``, on taskserve.

Each test mirrors the test of the same name in Ray 2.60's
``python/ray/serve/tests/unit/test_task_consumer.py``: the same set-up (a mock
adapter written against Ray's ``TaskProcessorAdapter`` interface, selected by
class in the ``TaskProcessorConfig``) and the same assertions, with Ray's
imports replaced by taskserve's. Where taskserve differs on purpose, the
test's docstring says how and why:

* taskserve starts the consumer when the decorated class is instantiated
  (Ray's replica calls a separate ``initialize_callable()``, which is internal
  to Ray); the adapter is reached with ``get_consumer(instance).adapter``;
* handlers reach the adapter wrapped (the wrapper counts the replica's running
  tasks for autoscaling), so a registered handler is compared after
  ``inspect.unwrap``;
* ``CeleryAdapterConfig`` checks its URLs when it is built, so Ray's
  ``broker_url="fake://"`` config is replaced by ``adapter_config={"param":
  "value"}``, which an adapter of Ray's interface receives as given.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from typing import Any
from unittest.mock import MagicMock

import pytest

from taskserve import TaskProcessorConfig, TaskResult
from taskserve.ray_adapter import RayAdapterShim, TaskProcessorAdapter
from taskserve.serve import get_consumer, task_consumer, task_handler


class MockTaskProcessorAdapter(TaskProcessorAdapter):
    """An adapter written against Ray Serve's interface, as in Ray's unit tests."""

    _start_consumer_received: bool = False
    _stop_consumer_received: bool = False
    _shutdown_received: bool = False

    def __init__(self, config: TaskProcessorConfig) -> None:
        self._config = config
        self.register_task_handle_mock = MagicMock()

    def initialize(self, consumer_concurrency: int = 3) -> None:
        pass

    def register_task_handle(self, func: Callable[..., Any], name: str | None = None) -> None:
        self.register_task_handle_mock(func, name=name)

    def enqueue_task_sync(
        self, task_name: str, args: Any = None, kwargs: Any = None, **options: Any
    ) -> TaskResult:
        raise NotImplementedError

    def get_task_status_sync(self, task_id: str) -> TaskResult:
        raise NotImplementedError

    def start_consumer(self, **kwargs: Any) -> None:
        self._start_consumer_received = True

    def stop_consumer(self, timeout: float = 10.0) -> None:
        self._stop_consumer_received = True

    def shutdown(self) -> None:
        self._shutdown_received = True

    def cancel_task_sync(self, task_id: str) -> bool:
        return False

    def get_metrics_sync(self) -> dict[str, Any]:
        return {}

    def health_check_sync(self) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def config() -> TaskProcessorConfig:
    """A TaskProcessorConfig selecting the mock adapter by class."""
    return TaskProcessorConfig(
        queue_name=f"test_queue_{uuid.uuid4().hex}",
        adapter_config={"param": "value"},
        adapter=MockTaskProcessorAdapter,
    )


class TestTaskHandlerDecorator:
    """Mirrors Ray's ``TestTaskHandlerDecorator``."""

    def _create_and_test_handler(
        self, decorator_args: dict[str, Any] | None = None, expected_name: str | None = None
    ) -> None:
        mock = MagicMock()

        if decorator_args is None:

            @task_handler
            def test_handler() -> None:
                mock()

        else:

            @task_handler(**decorator_args)
            def test_handler() -> None:
                mock()

        test_handler()

        assert mock.call_count == 1
        assert test_handler._task_name == expected_name  # type: ignore[attr-defined]

    def test_task_handler_decorator_with_name(self) -> None:
        self._create_and_test_handler(decorator_args={"name": "my_task"}, expected_name="my_task")

    def test_task_handler_decorator_without_name(self) -> None:
        self._create_and_test_handler(expected_name="test_handler")

    @pytest.mark.parametrize("invalid_name", ["", "   ", 123])
    def test_task_handler_decorator_invalid_name(self, invalid_name: Any) -> None:
        with pytest.raises(
            ValueError, match=f"Task name must be a non-empty string, got {invalid_name}"
        ):

            @task_handler(name=invalid_name)
            def my_task_handler() -> None:
                pass

    def test_task_handler_on_callable_object_without_name_attr(self) -> None:
        class MyCallable:
            def __call__(self) -> None:
                pass

        with pytest.raises(AttributeError):
            task_handler(MyCallable())


class TestTaskConsumerDecorator:
    """Mirrors Ray's ``TestTaskConsumerDecorator``."""

    def _verify_and_cleanup(
        self, instance: Any, expected_calls: list[tuple[Any, str]] | None = None
    ) -> None:
        shim = get_consumer(instance).adapter
        assert isinstance(shim, RayAdapterShim)
        adapter = shim.ray_adapter
        assert isinstance(adapter, MockTaskProcessorAdapter)
        assert adapter._start_consumer_received

        if expected_calls is not None:
            registered = [
                (inspect.unwrap(c.args[0]), c.kwargs["name"])
                for c in adapter.register_task_handle_mock.call_args_list
            ]
            assert registered == expected_calls
            assert adapter.register_task_handle_mock.call_count == len(expected_calls)

        instance.__del__()
        assert adapter._stop_consumer_received and adapter._shutdown_received
        del instance

    def _run_consumer_test(
        self,
        config: TaskProcessorConfig,
        consumer_class_factory: Callable[[TaskProcessorConfig], type],
        expected_calls_factory: Callable[[Any], list[tuple[Any, str]]] | None = None,
    ) -> None:
        consumer_class = consumer_class_factory(config)
        instance = consumer_class()
        expected_calls = expected_calls_factory(instance) if expected_calls_factory else None
        self._verify_and_cleanup(instance, expected_calls)

    def test_task_consumer_basic(self, config: TaskProcessorConfig) -> None:
        def make_consumer(cfg: TaskProcessorConfig) -> type:
            @task_consumer(task_processor_config=cfg)
            class MyConsumer:
                @task_handler
                def my_task(self) -> None:
                    pass

            return MyConsumer

        self._run_consumer_test(config, make_consumer, lambda inst: [(inst.my_task, "my_task")])

    def test_task_consumer_multiple_handlers(self, config: TaskProcessorConfig) -> None:
        def make_consumer(cfg: TaskProcessorConfig) -> type:
            @task_consumer(task_processor_config=cfg)
            class MyConsumer:
                @task_handler
                def task1(self) -> None:
                    pass

                @task_handler
                def task2(self) -> None:
                    pass

            return MyConsumer

        self._run_consumer_test(
            config, make_consumer, lambda inst: [(inst.task1, "task1"), (inst.task2, "task2")]
        )

    def test_task_consumer_custom_names(self, config: TaskProcessorConfig) -> None:
        def make_consumer(cfg: TaskProcessorConfig) -> type:
            @task_consumer(task_processor_config=cfg)
            class MyConsumer:
                @task_handler(name="custom_task")
                def task1(self) -> None:
                    pass

                @task_handler
                def task2(self) -> None:
                    pass

            return MyConsumer

        self._run_consumer_test(
            config,
            make_consumer,
            lambda inst: [(inst.task1, "custom_task"), (inst.task2, "task2")],
        )

    def test_task_consumer_init_args(self, config: TaskProcessorConfig) -> None:
        @task_consumer(task_processor_config=config)
        class MyConsumer:
            def __init__(self, value: int) -> None:
                self.value = value

        instance = MyConsumer(value=42)  # type: ignore[call-arg]
        assert instance.value == 42
        self._verify_and_cleanup(instance)

    def test_task_consumer_no_handlers(self, config: TaskProcessorConfig) -> None:
        def make_consumer(cfg: TaskProcessorConfig) -> type:
            @task_consumer(task_processor_config=cfg)
            class MyConsumer:
                def some_method(self) -> None:
                    pass

            return MyConsumer

        self._run_consumer_test(config, make_consumer, lambda inst: [])

    def test_task_consumer_inheritance(self, config: TaskProcessorConfig) -> None:
        def make_consumer(cfg: TaskProcessorConfig) -> type:
            class BaseConsumer:
                @task_handler
                def base_task(self) -> None:
                    pass

            @task_consumer(task_processor_config=cfg)
            class DerivedConsumer(BaseConsumer):
                @task_handler
                def derived_task(self) -> None:
                    pass

            return DerivedConsumer

        self._run_consumer_test(
            config,
            make_consumer,
            lambda inst: [(inst.base_task, "base_task"), (inst.derived_task, "derived_task")],
        )

    def test_task_consumer_no_args_decorator(self) -> None:
        with pytest.raises(TypeError):

            @task_consumer  # type: ignore[arg-type]
            class MyConsumer:
                pass
