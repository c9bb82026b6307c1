"""Ray Serve's task processor scenarios on taskserve-celery, in a real Serve application.

Each test mirrors the test of the same name in Ray 2.60's
``python/ray/serve/tests/test_task_processor.py``: the same deployments, the
same producer (a Ray task building an adapter with
``instantiate_adapter_from_config``), the same assertions, with Ray's imports
replaced by taskserve's. Every scenario runs on two set-ups:

* ``filesystem``: Ray's own - the local-testing ``filesystem://`` broker with
  its transport options, a ``file://`` result backend and
  ``worker_concurrency=1``, exactly as Ray's fixture builds them;
* ``redis``: Redis as broker (db 0) and state store (db 1), as in Ray's cancel
  test; queue names get a unique suffix so that runs do not meet.

Where taskserve differs on purpose, the test's docstring says how and why:

* ``worker_concurrency`` is ignored by Ray 2.60 and by taskserve alike (a
  replica runs ``max_ongoing_requests`` tasks at once), so the scenarios that
  count on one task at a time set ``max_ongoing_requests=1``;
* SPEC §9 fixes what the reference gets wrong: ``async def`` handlers run, a
  cancelled task never runs and stays CANCELLED (taskserve's one state name,
  SPEC §3.3, for Celery's REVOKED), argument-binding errors are not retried.

Ray's test utilities ``SignalActor`` and ``wait_for_condition`` come from the
installed Ray; ``serve_instance`` is the conformance suite's shared Serve.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="these scenarios need ray[serve]")

from ray import serve  # noqa: E402
from ray._common.test_utils import SignalActor, wait_for_condition  # noqa: E402

from taskserve import (  # noqa: E402
    TaskProcessorConfig,
    TaskState,
    instantiate_adapter_from_config,
    task_consumer,
    task_handler,
)
from taskserve_celery import CeleryAdapterConfig  # noqa: E402
from taskserve_celery.testing import CeleryHarness  # noqa: E402

pytest_plugins = ["taskserve_conformance.plugin"]
pytestmark = pytest.mark.filterwarnings("ignore::taskserve.errors.IgnoredSettingWarning")

REDIS_BROKER = "redis://127.0.0.1:6379/0"
REDIS_BACKEND = "redis://127.0.0.1:6379/1"


@ray.remote
class ProcessedTasksTracker:
    def __init__(self) -> None:
        self.processed_tasks: set[Any] = set()

    def add_task(self, task_data: Any) -> None:
        self.processed_tasks.add(task_data)

    def get_processed_tasks(self) -> set[Any]:
        return self.processed_tasks

    def get_count(self) -> int:
        return len(self.processed_tasks)


@ray.remote
def send_request_to_queue(
    processor_config: TaskProcessorConfig, data: Any, task_name: str = "process_request"
) -> str:
    adapter_instance = instantiate_adapter_from_config(task_processor_config=processor_config)
    result = adapter_instance.enqueue_task_sync(task_name, args=[data])
    assert result.id is not None
    return result.id


@pytest.fixture
def temp_queue_directory(tmp_path: Path) -> dict[str, Path]:
    """A 'queue', a 'results' and a 'control' directory, as Ray's fixture makes them."""
    folders = {name: tmp_path / name for name in ("queue", "results", "control")}
    for folder in folders.values():
        folder.mkdir()
    return {f"{name}_path": folder for name, folder in folders.items()}


@pytest.fixture
def transport_options(temp_queue_directory: dict[str, Path]) -> dict[str, str]:
    """Ray's transport options of the filesystem broker."""
    queue_path = temp_queue_directory["queue_path"]
    return {
        "data_folder_in": str(queue_path),
        "data_folder_out": str(queue_path),
        "data_folder_processed": str(queue_path),
        "control_folder": str(temp_queue_directory["control_path"]),
    }


@pytest.fixture(params=["filesystem", "redis"])
def broker(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def create_processor_config(
    broker: str,
    temp_queue_directory: dict[str, Path],
    transport_options: dict[str, str],
) -> Iterator[Callable[..., TaskProcessorConfig]]:
    """Ray's config factory; on Redis, queue names take a unique suffix."""
    made: list[TaskProcessorConfig] = []
    suffix = "" if broker == "filesystem" else f"_{uuid.uuid4().hex[:10]}"

    def _create(
        failed_task_queue_name: str | None = None,
        unprocessable_task_queue_name: str | None = None,
        **kwargs: Any,
    ) -> TaskProcessorConfig:
        if broker == "filesystem":
            adapter_config = CeleryAdapterConfig(
                broker_url="filesystem://",
                backend_url=f"file://{temp_queue_directory['results_path']}",
                broker_transport_options=transport_options,
                worker_concurrency=1,
            )
        else:
            adapter_config = CeleryAdapterConfig(
                broker_url=REDIS_BROKER, backend_url=REDIS_BACKEND, worker_concurrency=1
            )
        config_params: dict[str, Any] = {
            "queue_name": f"my_default_app_queue{suffix}",
            "adapter_config": adapter_config,
        }
        if failed_task_queue_name is not None:
            config_params["failed_task_queue_name"] = failed_task_queue_name + suffix
        if unprocessable_task_queue_name is not None:
            config_params["unprocessable_task_queue_name"] = unprocessable_task_queue_name + suffix
        config_params.update(kwargs)
        config = TaskProcessorConfig(**config_params)
        made.append(config)
        return config

    yield _create
    _delete_apps()
    for config in made:
        CeleryHarness().cleanup(config)


def _delete_apps() -> None:
    for name in list(serve.status().applications):
        serve.delete(name)


def _get_task_counts_by_routing_key(queue_path: Path) -> dict[str, int]:
    """Messages in the filesystem broker's folder, by routing key (as Ray counts them)."""
    counts: dict[str, int] = defaultdict(int)
    for msg_file in queue_path.iterdir():
        if msg_file.is_file():
            try:
                data = json.loads(msg_file.read_text())
            except (ValueError, OSError):
                continue
            routing_key = data.get("properties", {}).get("delivery_info", {}).get("routing_key")
            if routing_key:
                counts[routing_key] += 1
    return counts


def _get_task_counts_in_redis(names: list[str]) -> dict[str, int]:
    """Messages waiting in the Redis broker's lists of ``names``."""
    import redis

    client = redis.Redis.from_url(REDIS_BROKER)
    try:
        return {name: int(client.llen(name)) for name in names}
    finally:
        client.close()


class TestTaskConsumerWithRayServe:
    """Mirrors Ray's ``TestTaskConsumerWithRayServe``."""

    def test_task_consumer_as_serve_deployment(
        self, temp_queue_directory: Any, serve_instance: str, create_processor_config: Any
    ) -> None:
        processor_config = create_processor_config()

        @serve.deployment
        @task_consumer(task_processor_config=processor_config)
        class ServeTaskConsumer:
            def __init__(self) -> None:
                self.data_received = None
                self.task_received = False

            @task_handler(name="process_request")
            def process_request(self, data: Any) -> None:
                self.task_received = True
                self.data_received = data

            def assert_task_received(self) -> None:
                assert self.task_received is True
                assert self.data_received is not None
                assert self.data_received == "test_data_1"

        handle = serve.run(ServeTaskConsumer.bind())
        send_request_to_queue.remote(processor_config, "test_data_1")

        def assert_result() -> bool:
            try:
                handle.assert_task_received.remote().result()
                return True
            except Exception:
                return False

        wait_for_condition(assert_result)

    def test_task_consumer_as_serve_deployment_with_failed_task(
        self, temp_queue_directory: Any, serve_instance: str, create_processor_config: Any
    ) -> None:
        processor_config = create_processor_config(failed_task_queue_name="my_failed_task_queue")

        @serve.deployment
        @task_consumer(task_processor_config=processor_config)
        class ServeTaskConsumer:
            def __init__(self) -> None:
                self.num_calls = 0

            @task_handler(name="process_request")
            def process_request(self, data: Any) -> None:
                self.num_calls += 1
                raise ValueError("Task failed as expected")

            def get_num_calls(self) -> int:
                return self.num_calls

        handle = serve.run(ServeTaskConsumer.bind())
        task_id = ray.get(send_request_to_queue.remote(processor_config, "test_data_1"))

        adapter_instance = instantiate_adapter_from_config(task_processor_config=processor_config)

        def assert_result() -> bool:
            result = adapter_instance.get_task_status_sync(task_id)
            return bool(
                result.status == "FAILURE"
                and result.result is not None
                and isinstance(result.result, ValueError)
                and str(result.result) == "Task failed as expected"
                and handle.get_num_calls.remote().result() == 1 + processor_config.max_retries
            )

        wait_for_condition(assert_result, timeout=20)

    def test_task_consumer_persistence_across_restarts(
        self, temp_queue_directory: Any, serve_instance: str, create_processor_config: Any
    ) -> None:
        """Ray's scenario counts on one task at a time from ``worker_concurrency=1``,
        which Ray 2.60 ignores as taskserve does: the deployment sets
        ``max_ongoing_requests=1``, which both honour.

        Serve keeps a deleted replica running for ``graceful_shutdown_wait_loop_s``
        (2 s) before it calls the destructor that stops the consumer, and a
        consumer - Ray's as taskserve's - takes tasks until then; releasing every
        blocked task at once, as Ray's test does, lets the whole queue drain in
        that window. So once the first application is deleted the test releases
        the running task every half second until the application is gone."""
        config = create_processor_config()
        tracker = ProcessedTasksTracker.remote()  # type: ignore[attr-defined]
        signal1 = SignalActor.remote()

        @serve.deployment(num_replicas=1, graceful_shutdown_timeout_s=60, max_ongoing_requests=1)
        @task_consumer(task_processor_config=config)
        class TaskConsumer:
            def __init__(self, tracker_ref: Any, signal_ref: Any) -> None:
                self.tracker, self.signal = tracker_ref, signal_ref
                self.local_processed: list[Any] = []

            @task_handler(name="process_request")
            def process_request(self, data: Any) -> str:
                ray.get(self.signal.wait.remote())
                self.local_processed.append(data)
                ray.get(self.tracker.add_task.remote(data))
                return f"Processed: {data}"

            def get_local_processed(self) -> list[Any]:
                return self.local_processed

        serve.run(TaskConsumer.bind(tracker, signal1), name="app_v1")

        num_tasks = 20
        for i in range(num_tasks):
            ray.get(send_request_to_queue.remote(config, f"task_{i}"))

        wait_for_condition(lambda: ray.get(signal1.cur_num_waiters.remote()) == 1, timeout=10)
        ray.get(signal1.send.remote(clear=True))
        wait_for_condition(lambda: ray.get(tracker.get_count.remote()) == 1, timeout=10)

        serve.delete("app_v1", _blocking=False)

        def release_running_task_until_deleted() -> bool:
            ray.get(signal1.send.remote(clear=True))
            if "app_v1" not in serve.status().applications:
                return True
            time.sleep(0.5)
            return False

        wait_for_condition(release_running_task_until_deleted, timeout=100)

        tasks_before_restart = ray.get(tracker.get_count.remote())
        assert tasks_before_restart >= 2 and tasks_before_restart < num_tasks, (
            f"Expected at least 2 tasks processed and at least one less than num_tasks, got "
            f"{tasks_before_restart}"
        )

        signal2 = SignalActor.remote()
        handle = serve.run(TaskConsumer.bind(tracker, signal2), name="app_v2")

        wait_for_condition(lambda: ray.get(signal2.cur_num_waiters.remote()) == 1, timeout=10)
        ray.get(signal2.send.remote())
        wait_for_condition(lambda: ray.get(tracker.get_count.remote()) == num_tasks, timeout=100)

        expected_tasks = {f"task_{i}" for i in range(num_tasks)}
        final_tasks = ray.get(tracker.get_processed_tasks.remote())
        second_deployment_tasks = handle.get_local_processed.remote().result()

        assert final_tasks == expected_tasks, f"Missing tasks: {expected_tasks - final_tasks}"
        assert len(second_deployment_tasks) == num_tasks - tasks_before_restart

    def test_task_consumer_as_serve_deployment_with_async_task_handler(
        self, temp_queue_directory: Any, serve_instance: str, create_processor_config: Any
    ) -> None:
        """Ray refuses ``async def`` handlers with NotImplementedError; SPEC §6.1 and §9
        fix that: the same consumer is declared without error and its async
        handler runs."""
        processor_config = create_processor_config()

        @serve.deployment
        @task_consumer(task_processor_config=processor_config)
        class ServeTaskConsumer:
            def __init__(self) -> None:
                self.data_received = None
                self.task_received = False

            @task_handler(name="process_request")
            async def process_request(self, data: Any) -> None:
                self.task_received = True
                self.data_received = data

            def get_data_received(self) -> Any:
                return self.data_received

        handle = serve.run(ServeTaskConsumer.bind())
        send_request_to_queue.remote(processor_config, "test_data_1")
        wait_for_condition(lambda: handle.get_data_received.remote().result() == "test_data_1")

    def test_task_consumer_metrics(
        self,
        broker: str,
        temp_queue_directory: Any,
        serve_instance: str,
        create_processor_config: Any,
    ) -> None:
        """Ray asserts one worker of max-concurrency 1 from ``worker_concurrency=1``,
        which Ray 2.60 ignores as taskserve does: the deployment sets
        ``max_ongoing_requests=1``. Consumers' statistics are as of their last
        beat in the store (a quarter of a second after a change), so the test
        waits for the run to show before asserting Ray's assertions."""
        processor_config = create_processor_config()

        @serve.deployment(max_ongoing_requests=1)
        @task_consumer(task_processor_config=processor_config)
        class ServeTaskConsumer:
            def __init__(self) -> None:
                self.task_received = False

            @task_handler(name="process_request")
            def process_request(self, data: Any) -> None:
                self.task_received = True

            def get_task_received(self) -> bool:
                return self.task_received

        handle = serve.run(ServeTaskConsumer.bind())
        send_request_to_queue.remote(processor_config, "test_data_1")

        wait_for_condition(lambda: handle.get_task_received.remote().result(), timeout=20)

        adapter_instance = instantiate_adapter_from_config(task_processor_config=processor_config)
        wait_for_condition(
            lambda: any(
                stats["total"].get("process_request")
                for stats in adapter_instance.get_metrics_sync().values()
            ),
            timeout=5,
        )
        metrics = adapter_instance.get_metrics_sync()

        assert len(metrics) == 1
        worker_name = next(iter(metrics))
        worker_stats = metrics[worker_name]

        assert worker_stats["pool"]["threads"] == 1
        assert worker_stats["pool"]["max-concurrency"] == 1
        assert worker_stats["total"]["process_request"] == 1
        assert worker_stats["broker"]["transport"] == broker

    def test_task_consumer_health_check(
        self, temp_queue_directory: Any, serve_instance: str, create_processor_config: Any
    ) -> None:
        processor_config = create_processor_config()

        @serve.deployment
        @task_consumer(task_processor_config=processor_config)
        class ServeTaskConsumer:
            pass

        serve.run(ServeTaskConsumer.bind())

        adapter_instance = instantiate_adapter_from_config(task_processor_config=processor_config)

        def check_health() -> bool:
            health_status = adapter_instance.health_check_sync()
            return len(health_status) > 0

        wait_for_condition(check_health, timeout=20)

        health_status = adapter_instance.health_check_sync()
        assert len(health_status) == 1

        worker_reply = health_status[0]
        assert len(worker_reply) == 1
        worker_name = next(iter(worker_reply))
        assert worker_reply[worker_name] == {"ok": "pong"}

    def test_task_processor_with_cancel_tasks(
        self, temp_queue_directory: Any, serve_instance: str, create_processor_config: Any
    ) -> None:
        """Ray's scenario counts on one task at a time from ``worker_concurrency=1``
        (ignored by Ray 2.60 and taskserve): the deployment sets
        ``max_ongoing_requests=1``. The cancelled task never runs and reads
        CANCELLED, taskserve's one name for Celery's REVOKED (SPEC §3.3), and it
        stays so (SPEC §9: Ray's REVOKED flips to SUCCESS once a worker that
        fetched it runs it). Ray runs it on Redis only (its guide: the filesystem
        broker cannot cancel); taskserve's cancel is durable on both."""
        processor_config = create_processor_config()
        signal = SignalActor.remote()

        @serve.deployment(max_ongoing_requests=1)
        @task_consumer(task_processor_config=processor_config)
        class MyTaskConsumer:
            def __init__(self, signal_actor: Any) -> None:
                self._signal = signal_actor
                self.message_received: list[Any] = []

            @task_handler(name="process")
            def process(self, data: Any) -> None:
                ray.get(self._signal.wait.remote())
                self.message_received.append(data)

            def get_message_received(self) -> list[Any]:
                return self.message_received

        handle = serve.run(MyTaskConsumer.bind(signal), name="app_v1")

        task_ids = [
            ray.get(
                send_request_to_queue.remote(
                    processor_config, f"test_data_{i}", task_name="process"
                )
            )
            for i in range(2)
        ]

        wait_for_condition(lambda: ray.get(signal.cur_num_waiters.remote()) == 1, timeout=10)

        adapter_instance = instantiate_adapter_from_config(task_processor_config=processor_config)
        adapter_instance.cancel_task_sync(task_ids[1])

        ray.get(signal.send.remote())

        def check_cancelled() -> bool:
            status = adapter_instance.get_task_status_sync(task_ids[1])
            return bool(status.status == "CANCELLED")

        wait_for_condition(check_cancelled, timeout=20)
        wait_for_condition(
            lambda: adapter_instance.get_task_status_sync(task_ids[0]).status is TaskState.SUCCESS
        )

        assert "test_data_0" in handle.get_message_received.remote().result()
        assert "test_data_1" not in handle.get_message_received.remote().result()
        assert adapter_instance.get_task_status_sync(task_ids[1]).status is TaskState.CANCELLED

        serve.delete("app_v1")


class TestTaskConsumerWithDLQsConfiguration:
    """Mirrors Ray's ``TestTaskConsumerWithDLQsConfiguration``: the dead-letter
    queues are read as broker queues (message files of the filesystem broker, by
    routing key, as Ray reads them; Redis lists), which taskserve fills by
    mirroring its dead-letter records (``mirror_dead_letters``)."""

    def _assert_queue_counts(
        self,
        temp_queue_directory: dict[str, Path],
        processor_config: TaskProcessorConfig,
        expected_main: int = 0,
        expected_unprocessable: int = 0,
        expected_failed: int = 0,
        timeout: float = 15,
    ) -> None:
        main = processor_config.queue_name
        unprocessable = processor_config.unprocessable_task_queue_name or ""
        failed = processor_config.failed_task_queue_name or ""

        def check_counts() -> bool:
            adapter_config = processor_config.adapter_config
            assert isinstance(adapter_config, CeleryAdapterConfig)
            if adapter_config.broker_url == "filesystem://":
                counts = _get_task_counts_by_routing_key(temp_queue_directory["queue_path"])
            else:
                counts = _get_task_counts_in_redis([n for n in (main, unprocessable, failed) if n])
            return (
                counts.get(main, 0) == expected_main
                and counts.get(unprocessable, 0) == expected_unprocessable
                and counts.get(failed, 0) == expected_failed
            )

        wait_for_condition(check_counts, timeout=timeout)

    def test_task_consumer_as_serve_deployment_with_unknown_task(
        self, temp_queue_directory: Any, serve_instance: str, create_processor_config: Any
    ) -> None:
        processor_config = create_processor_config(
            unprocessable_task_queue_name="unprocessable_task_queue"
        )

        @serve.deployment
        @task_consumer(task_processor_config=processor_config)
        class ServeTaskConsumer:
            @task_handler(name="process_request")
            def process_request(self, data: Any) -> None:
                pass

        serve.run(ServeTaskConsumer.bind())
        send_request_to_queue.remote(processor_config, "test_data_1", task_name="unregistered_task")

        self._assert_queue_counts(
            temp_queue_directory,
            processor_config,
            expected_main=0,
            expected_unprocessable=1,
            timeout=10,
        )

    def test_task_consumer_as_serve_deployment_with_failed_task_and_dead_letter_queue(
        self, temp_queue_directory: Any, serve_instance: str, create_processor_config: Any
    ) -> None:
        processor_config = create_processor_config(failed_task_queue_name="failed_task_queue")

        @serve.deployment
        @task_consumer(task_processor_config=processor_config)
        class ServeTaskConsumer:
            @task_handler(name="process_request")
            def process_request(self, data: Any) -> None:
                raise ValueError("Task failed as expected")

        serve.run(ServeTaskConsumer.bind())
        send_request_to_queue.remote(processor_config, "test_data_1")

        self._assert_queue_counts(
            temp_queue_directory, processor_config, expected_main=0, expected_failed=1
        )

    def test_task_consumer_with_mismatched_arguments(
        self, temp_queue_directory: Any, serve_instance: str, create_processor_config: Any
    ) -> None:
        """Same outcome as Ray's; the binding error is not retried first (SPEC §4.6, §9)."""
        processor_config = create_processor_config(
            unprocessable_task_queue_name="unprocessable_task_queue",
            failed_task_queue_name="failed_task_queue",
        )

        @serve.deployment
        @task_consumer(task_processor_config=processor_config)
        class ServeTaskConsumer:
            @task_handler(name="process_request")
            def process_request(self, arg1: Any, arg2: Any) -> None:
                pass

        serve.run(ServeTaskConsumer.bind())
        send_request_to_queue.remote(processor_config, ["test_data_1"])

        self._assert_queue_counts(
            temp_queue_directory, processor_config, expected_main=0, expected_failed=1
        )

    def test_task_consumer_with_argument_type_mismatch(
        self, temp_queue_directory: Any, serve_instance: str, create_processor_config: Any
    ) -> None:
        processor_config = create_processor_config(
            unprocessable_task_queue_name="unprocessable_task_queue",
            failed_task_queue_name="failed_task_queue",
        )

        @serve.deployment
        @task_consumer(task_processor_config=processor_config)
        class ServeTaskConsumer:
            @task_handler(name="process_request")
            def process_request(self, data: str) -> int:
                return len(data)

        serve.run(ServeTaskConsumer.bind())
        send_request_to_queue.remote(processor_config, 12345)

        self._assert_queue_counts(
            temp_queue_directory, processor_config, expected_main=0, expected_failed=1
        )
