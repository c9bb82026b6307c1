"""Ray Serve's task processor scenarios on taskserve-celery, in a real Serve application.

Each test is named after the test of Ray 2.60's
``python/ray/serve/tests/test_task_processor.py`` whose scenario it plays:
the same consumer deployment, the same producer (a Ray task in another
process building an adapter with ``instantiate_adapter_from_config``), the
same outcomes checked, through taskserve's imports. Every scenario runs on two
set-ups:

* ``filesystem``: Ray's own - the local-testing ``filesystem://`` broker with
  Ray's transport options, a ``file://`` result backend and
  ``worker_concurrency=1``;
* ``redis``: Redis as broker (db 0) and state store (db 1), as Ray's cancel
  test has it; queue names take a unique suffix so that runs do not meet.

Where taskserve differs on purpose, the test's docstring says how and why:

* ``worker_concurrency`` is ignored by Ray 2.60 and by taskserve alike (a
  replica runs ``max_ongoing_requests`` tasks at once), so the scenarios that
  count on one task at a time set ``max_ongoing_requests=1``;
* SPEC §9 fixes what the reference gets wrong: ``async def`` handlers run, a
  cancelled task never runs and stays CANCELLED (taskserve's one name, SPEC
  §3.3, for Celery's REVOKED), argument-binding errors are not retried.

``SignalActor`` and ``wait_for_condition`` are Ray's test utilities from the
installed Ray; ``serve_instance`` is the conformance suite's shared Serve.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
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
pytestmark = [
    pytest.mark.filterwarnings("ignore::taskserve.errors.IgnoredSettingWarning"),
    # One worker, one Ray, for every Serve test of this module (pytest-xdist).
    pytest.mark.xdist_group("serve-ray-1"),
]

REDIS_BROKER = "redis://127.0.0.1:6379/0"
REDIS_BACKEND = "redis://127.0.0.1:6379/1"


TIMEOUT_FACTOR = 3.0
"""Ray's timeouts of these scenarios, tripled: here they run beside the rest of
the suite on a two-core machine."""


def wait_scaled(condition: Any, timeout: float = 10.0) -> None:
    """Ray's ``wait_for_condition`` (default timeout 10 s) with the timeout scaled."""
    wait_for_condition(condition, timeout=timeout * TIMEOUT_FACTOR)


@ray.remote
def enqueue_from_ray(
    config: TaskProcessorConfig, value: Any, task_name: str = "process_request"
) -> str:
    """Enqueue one task from a Ray worker process; its id."""
    producer = instantiate_adapter_from_config(task_processor_config=config)
    task = producer.enqueue_task_sync(task_name, args=[value])
    assert task.id is not None
    return task.id


@ray.remote
def import_the_producer() -> None:
    """Import what ``enqueue_from_ray`` needs, in a Ray worker process."""
    import taskserve_celery  # noqa: F401


@pytest.fixture(scope="module", autouse=True)
def warm_ray_workers(serve_instance: str) -> None:
    """Start Ray's worker processes for the producer tasks, and import Celery in
    them, once before the scenarios: on a loaded machine the first start takes
    longer than a scenario's whole timeout, and it is not what they check."""
    ray.get([import_the_producer.remote() for _ in range(2)], timeout=180)


@ray.remote
class SeenValues:
    """The values handlers saw, across replicas and deployments."""

    def __init__(self) -> None:
        self.seen: set[Any] = set()

    def add(self, value: Any) -> None:
        self.seen.add(value)

    def values(self) -> set[Any]:
        return self.seen

    def count(self) -> int:
        return len(self.seen)


class Setup:
    """One broker set-up of the scenarios: configs, and the broker's queues."""

    def __init__(self, broker: str, folder: Path) -> None:
        self.broker = broker
        self.queue_folder = folder / "queue"
        self.results_folder = folder / "results"
        self.control_folder = folder / "control"
        for path in (self.queue_folder, self.results_folder, self.control_folder):
            path.mkdir()
        self.suffix = "" if broker == "filesystem" else f"_{uuid.uuid4().hex[:10]}"
        self.configs: list[TaskProcessorConfig] = []

    def adapter_config(self) -> CeleryAdapterConfig:
        if self.broker == "redis":
            return CeleryAdapterConfig(
                broker_url=REDIS_BROKER, backend_url=REDIS_BACKEND, worker_concurrency=1
            )
        queue = str(self.queue_folder)
        return CeleryAdapterConfig(
            broker_url="filesystem://",
            backend_url=f"file://{self.results_folder}",
            broker_transport_options={
                "data_folder_in": queue,
                "data_folder_out": queue,
                "data_folder_processed": queue,
                "control_folder": str(self.control_folder),
            },
            worker_concurrency=1,
        )

    def config(
        self, failed: str | None = None, unprocessable: str | None = None
    ) -> TaskProcessorConfig:
        """Ray's processor config, with the given dead-letter queues."""
        config = TaskProcessorConfig(
            queue_name=f"my_default_app_queue{self.suffix}",
            adapter_config=self.adapter_config(),
            failed_task_queue_name=failed and failed + self.suffix,
            unprocessable_task_queue_name=unprocessable and unprocessable + self.suffix,
        )
        self.configs.append(config)
        return config

    def messages_by_queue(self, config: TaskProcessorConfig) -> Counter[str]:
        """Messages waiting on the broker, by queue: message files by routing key
        (as Ray's test reads the filesystem broker), or the lengths of a queue's
        Redis lists (kombu keeps one per priority; a task of priority 0 waits in
        the list of kombu priority 9)."""
        names = [
            n
            for n in (
                config.queue_name,
                config.failed_task_queue_name,
                config.unprocessable_task_queue_name,
            )
            if n
        ]
        counts: Counter[str] = Counter()
        if self.broker == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_BROKER)
            try:
                for name in names:
                    lists = [name, *(f"{name}\x06\x16{step}" for step in range(1, 10))]
                    counts[name] = sum(int(client.llen(key)) for key in lists)
            finally:
                client.close()
            return counts
        for path in self.queue_folder.iterdir():
            try:
                message = json.loads(path.read_text())
            except (ValueError, OSError):
                continue
            key = message.get("properties", {}).get("delivery_info", {}).get("routing_key")
            if key in names:
                counts[key] += 1
        return counts

    def close(self) -> None:
        for name in list(serve.status().applications):
            serve.delete(name)
        for config in self.configs:
            CeleryHarness().cleanup(config)


@pytest.fixture(params=["filesystem", "redis"])
def setup(request: pytest.FixtureRequest, tmp_path: Path, serve_instance: str) -> Iterator[Setup]:
    prepared = Setup(str(request.param), tmp_path)
    yield prepared
    prepared.close()


def wait_for_broker_counts(
    setup: Setup, config: TaskProcessorConfig, timeout: float, **expected: int
) -> None:
    """Wait until the broker holds ``expected`` messages: ``main``, ``failed``,
    ``unprocessable`` (the dead-letter queues are broker queues through
    ``mirror_dead_letters``)."""
    names = {
        "main": config.queue_name,
        "failed": config.failed_task_queue_name or "",
        "unprocessable": config.unprocessable_task_queue_name or "",
    }

    def reached() -> bool:
        counts = setup.messages_by_queue(config)
        return all(counts.get(names[k], 0) == expected.get(k, 0) for k in names)

    wait_scaled(reached, timeout=timeout)


class TestTaskConsumerWithRayServe:
    def test_task_consumer_as_serve_deployment(self, setup: Setup) -> None:
        config = setup.config()

        @serve.deployment
        @task_consumer(task_processor_config=config)
        class Consumer:
            def __init__(self) -> None:
                self.received: list[Any] = []

            @task_handler(name="process_request")
            def process_request(self, data: Any) -> None:
                self.received.append(data)

            def received_values(self) -> list[Any]:
                return self.received

        handle = serve.run(Consumer.bind())
        enqueue_from_ray.remote(config, "test_data_1")
        wait_scaled(lambda: handle.received_values.remote().result() == ["test_data_1"])

    def test_task_consumer_as_serve_deployment_with_failed_task(self, setup: Setup) -> None:
        config = setup.config(failed="my_failed_task_queue")

        @serve.deployment
        @task_consumer(task_processor_config=config)
        class Consumer:
            def __init__(self) -> None:
                self.calls = 0

            @task_handler(name="process_request")
            def process_request(self, data: Any) -> None:
                self.calls += 1
                raise ValueError("Task failed as expected")

            def call_count(self) -> int:
                return self.calls

        handle = serve.run(Consumer.bind())
        task_id = ray.get(enqueue_from_ray.remote(config, "test_data_1"))
        producer = instantiate_adapter_from_config(task_processor_config=config)
        assert config.max_retries is not None

        def failed_as_ray_reports_it() -> bool:
            status = producer.get_task_status_sync(task_id)
            return (
                status.status == "FAILURE"
                and isinstance(status.result, ValueError)
                and str(status.result) == "Task failed as expected"
                and handle.call_count.remote().result() == config.max_retries + 1
            )

        wait_scaled(failed_as_ray_reports_it, timeout=20)

    def test_task_consumer_persistence_across_restarts(self, setup: Setup) -> None:
        """Ray's scenario counts on one task at a time from ``worker_concurrency=1``,
        which Ray 2.60 ignores as taskserve does: the deployment sets
        ``max_ongoing_requests=1``, which both honour.

        Serve keeps a deleted replica running for ``graceful_shutdown_wait_loop_s``
        (2 s) before it calls the destructor that stops the consumer, and a
        consumer - Ray's as taskserve's - takes tasks until then; releasing every
        blocked task at once, as Ray's test does, lets the whole queue drain in
        that window. So once the first application is deleted the test releases
        the running task every half second until the application is gone."""
        config = setup.config()
        seen = SeenValues.remote()  # type: ignore[attr-defined]

        @serve.deployment(num_replicas=1, graceful_shutdown_timeout_s=60, max_ongoing_requests=1)
        @task_consumer(task_processor_config=config)
        class Consumer:
            def __init__(self, seen: Any, gate: Any) -> None:
                self.seen, self.gate = seen, gate
                self.processed_here: list[Any] = []

            @task_handler(name="process_request")
            def process_request(self, data: Any) -> str:
                ray.get(self.gate.wait.remote())
                self.processed_here.append(data)
                ray.get(self.seen.add.remote(data))
                return f"Processed: {data}"

            def processed(self) -> list[Any]:
                return self.processed_here

        first_gate = SignalActor.remote()
        serve.run(Consumer.bind(seen, first_gate), name="app_v1")
        total = 20
        for i in range(total):
            ray.get(enqueue_from_ray.remote(config, f"task_{i}"))

        # One task at a time: let exactly one through, then delete the application.
        wait_scaled(lambda: ray.get(first_gate.cur_num_waiters.remote()) == 1, timeout=10)
        ray.get(first_gate.send.remote(clear=True))
        wait_scaled(lambda: ray.get(seen.count.remote()) == 1, timeout=10)
        serve.delete("app_v1", _blocking=False)

        def deleted_after_releasing_the_running_task() -> bool:
            ray.get(first_gate.send.remote(clear=True))
            if "app_v1" not in serve.status().applications:
                return True
            time.sleep(0.5)
            return False

        wait_scaled(deleted_after_releasing_the_running_task, timeout=100)
        done_before = ray.get(seen.count.remote())
        assert 2 <= done_before < total

        second_gate = SignalActor.remote()
        handle = serve.run(Consumer.bind(seen, second_gate), name="app_v2")
        wait_scaled(lambda: ray.get(second_gate.cur_num_waiters.remote()) == 1, timeout=10)
        ray.get(second_gate.send.remote())
        wait_scaled(lambda: ray.get(seen.count.remote()) == total, timeout=100)

        assert ray.get(seen.values.remote()) == {f"task_{i}" for i in range(total)}
        assert len(handle.processed.remote().result()) == total - done_before

    def test_task_consumer_as_serve_deployment_with_async_task_handler(self, setup: Setup) -> None:
        """Ray refuses ``async def`` handlers with NotImplementedError; SPEC §6.1 and §9
        fix that: the same consumer is declared without error and its async
        handler runs."""
        config = setup.config()

        @serve.deployment
        @task_consumer(task_processor_config=config)
        class Consumer:
            def __init__(self) -> None:
                self.received: Any = None

            @task_handler(name="process_request")
            async def process_request(self, data: Any) -> None:
                self.received = data

            def received_value(self) -> Any:
                return self.received

        handle = serve.run(Consumer.bind())
        enqueue_from_ray.remote(config, "test_data_1")
        wait_scaled(lambda: handle.received_value.remote().result() == "test_data_1")

    def test_task_consumer_metrics(self, setup: Setup) -> None:
        """Ray expects one worker of max-concurrency 1 from ``worker_concurrency=1``,
        which Ray 2.60 ignores as taskserve does: the deployment sets
        ``max_ongoing_requests=1``. Consumers' statistics are as of their last
        beat in the store (a quarter of a second after a change), so the test
        waits for the run to show before checking Ray's expectations."""
        config = setup.config()

        @serve.deployment(max_ongoing_requests=1)
        @task_consumer(task_processor_config=config)
        class Consumer:
            def __init__(self) -> None:
                self.ran = False

            @task_handler(name="process_request")
            def process_request(self, data: Any) -> None:
                self.ran = True

            def has_run(self) -> bool:
                return self.ran

        handle = serve.run(Consumer.bind())
        enqueue_from_ray.remote(config, "test_data_1")
        wait_scaled(lambda: handle.has_run.remote().result(), timeout=20)

        producer = instantiate_adapter_from_config(task_processor_config=config)
        wait_scaled(
            lambda: any(s["total"] for s in producer.get_metrics_sync().values()), timeout=5
        )
        metrics = producer.get_metrics_sync()
        assert len(metrics) == 1
        [stats] = [metrics[name] for name in metrics]
        assert stats["pool"]["threads"] == 1
        assert stats["pool"]["max-concurrency"] == 1
        assert stats["total"]["process_request"] == 1
        assert stats["broker"]["transport"] == setup.broker

    def test_task_consumer_health_check(self, setup: Setup) -> None:
        config = setup.config()

        @serve.deployment
        @task_consumer(task_processor_config=config)
        class Consumer:
            pass

        serve.run(Consumer.bind())
        producer = instantiate_adapter_from_config(task_processor_config=config)
        wait_scaled(lambda: len(producer.health_check_sync()) > 0, timeout=20)

        replies = producer.health_check_sync()
        assert len(replies) == 1
        [reply] = list(replies)
        assert len(reply) == 1
        assert list(reply.values()) == [{"ok": "pong"}]

    def test_task_processor_with_cancel_tasks(self, setup: Setup) -> None:
        """Ray's scenario counts on one task at a time from ``worker_concurrency=1``
        (ignored by Ray 2.60 and taskserve): the deployment sets
        ``max_ongoing_requests=1``. The cancelled task never runs and reads
        CANCELLED, taskserve's one name for Celery's REVOKED (SPEC §3.3), and it
        stays so (SPEC §9: Ray's REVOKED flips to SUCCESS once a worker that
        fetched it runs it). Ray runs it on Redis only (its guide: the filesystem
        broker cannot cancel); taskserve's cancel is durable on both."""
        config = setup.config()
        gate = SignalActor.remote()

        @serve.deployment(max_ongoing_requests=1)
        @task_consumer(task_processor_config=config)
        class Consumer:
            def __init__(self, gate: Any) -> None:
                self.gate = gate
                self.received: list[Any] = []

            @task_handler(name="process")
            def process(self, data: Any) -> None:
                ray.get(self.gate.wait.remote())
                self.received.append(data)

            def received_values(self) -> list[Any]:
                return self.received

        handle = serve.run(Consumer.bind(gate), name="app_v1")
        first, second = (
            ray.get(enqueue_from_ray.remote(config, f"test_data_{i}", task_name="process"))
            for i in range(2)
        )
        wait_scaled(lambda: ray.get(gate.cur_num_waiters.remote()) == 1, timeout=10)

        producer = instantiate_adapter_from_config(task_processor_config=config)
        producer.cancel_task_sync(second)
        ray.get(gate.send.remote())

        wait_scaled(lambda: producer.get_task_status_sync(second).status == "CANCELLED", timeout=20)
        wait_scaled(lambda: producer.get_task_status_sync(first).status is TaskState.SUCCESS)
        received = handle.received_values.remote().result()
        assert "test_data_0" in received and "test_data_1" not in received
        assert producer.get_task_status_sync(second).status is TaskState.CANCELLED
        serve.delete("app_v1")


class TestTaskConsumerWithDLQsConfiguration:
    """The dead-letter queues are read as broker queues (message files of the
    filesystem broker, by routing key, as Ray's test reads them; Redis lists),
    which taskserve fills by mirroring its dead-letter records
    (``mirror_dead_letters``)."""

    def test_task_consumer_as_serve_deployment_with_unknown_task(self, setup: Setup) -> None:
        config = setup.config(unprocessable="unprocessable_task_queue")

        @serve.deployment
        @task_consumer(task_processor_config=config)
        class Consumer:
            @task_handler(name="process_request")
            def process_request(self, data: Any) -> None:
                pass

        serve.run(Consumer.bind())
        enqueue_from_ray.remote(config, "test_data_1", task_name="unregistered_task")
        wait_for_broker_counts(setup, config, 10, main=0, unprocessable=1)

    def test_task_consumer_as_serve_deployment_with_failed_task_and_dead_letter_queue(
        self, setup: Setup
    ) -> None:
        config = setup.config(failed="failed_task_queue")

        @serve.deployment
        @task_consumer(task_processor_config=config)
        class Consumer:
            @task_handler(name="process_request")
            def process_request(self, data: Any) -> None:
                raise ValueError("Task failed as expected")

        serve.run(Consumer.bind())
        enqueue_from_ray.remote(config, "test_data_1")
        wait_for_broker_counts(setup, config, 15, main=0, failed=1)

    def test_task_consumer_with_mismatched_arguments(self, setup: Setup) -> None:
        """Same outcome as Ray's; the binding error is not retried first (SPEC §4.6, §9)."""
        config = setup.config(failed="failed_task_queue", unprocessable="unprocessable_task_queue")

        @serve.deployment
        @task_consumer(task_processor_config=config)
        class Consumer:
            @task_handler(name="process_request")
            def process_request(self, arg1: Any, arg2: Any) -> None:
                pass

        serve.run(Consumer.bind())
        enqueue_from_ray.remote(config, ["test_data_1"])
        wait_for_broker_counts(setup, config, 15, main=0, failed=1)

    def test_task_consumer_with_argument_type_mismatch(self, setup: Setup) -> None:
        config = setup.config(failed="failed_task_queue", unprocessable="unprocessable_task_queue")

        @serve.deployment
        @task_consumer(task_processor_config=config)
        class Consumer:
            @task_handler(name="process_request")
            def process_request(self, data: str) -> int:
                return len(data)

        serve.run(Consumer.bind())
        enqueue_from_ray.remote(config, 12345)
        wait_for_broker_counts(setup, config, 15, main=0, failed=1)
