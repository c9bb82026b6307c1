"""Ray Serve's Celery configs, enqueue options and result shapes on taskserve-celery.

Ray 2.60's configs validate unchanged, side by side with Ray's own models,
and mean the same; the enqueue options Ray passes through to Celery
(``countdown``, ``eta``, ``expires``, ``priority``) work; failed results,
health and metrics read as Ray's; dead letters can be consumed from the
broker queues named after the dead-letter queues, in Ray's layout. Each
scenario that needs a broker runs on Redis and on the local-testing
filesystem broker (with its ``file://`` state store); a consumer runs in this
process. The Serve scenarios are in ``test_ray_compat_processor.py`` and
``test_ray_compat_autoscaling.py``.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskserve import (
    ConfigError,
    IgnoredSettingWarning,
    InvalidArgument,
    TaskProcessorAdapter,
    TaskProcessorConfig,
    TaskResult,
    TaskState,
    instantiate_adapter_from_config,
    resolve_adapter,
)
from taskserve import errors as taskserve_errors
from taskserve.serve.autoscaling import QueueDepthAutoscalingPolicy
from taskserve_celery import CeleryAdapter, CeleryAdapterConfig
from taskserve_celery.deadletters import DEAD_LETTER_HEADER
from taskserve_celery.testing import CeleryHarness

REDIS = "redis://127.0.0.1:6379/0"
REDIS_BACKEND = "redis://127.0.0.1:6379/1"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def fresh_warnings() -> Iterator[None]:
    """Ignored settings warn once per process; each test here sees its own."""
    saved = set(taskserve_errors._warned)
    taskserve_errors._warned.clear()
    yield
    taskserve_errors._warned.update(saved)


def _filesystem_config(folder: Path, **extra: Any) -> CeleryAdapterConfig:
    queue = str(folder / "queue")
    return CeleryAdapterConfig(
        broker_url="filesystem://",
        backend_url=f"file://{folder / 'results'}",
        broker_transport_options={
            "data_folder_in": queue,
            "data_folder_out": queue,
            "data_folder_processed": queue,
            "control_folder": str(folder / "control"),
        },
        **extra,
    )


# -- Ray's configs, side by side ------------------------------------------------------------
RAY_CELERY_CONFIGS: dict[str, dict[str, Any]] = {
    "guide": {"broker_url": "redis://localhost:6379/0", "backend_url": "redis://localhost:6379/1"},
    "processor tests (filesystem)": {
        "broker_url": "filesystem://",
        "backend_url": "file:///tmp/taskserve-ray-compat/results",
        "broker_transport_options": {
            "data_folder_in": "/tmp/taskserve-ray-compat/queue",
            "data_folder_out": "/tmp/taskserve-ray-compat/queue",
            "data_folder_processed": "/tmp/taskserve-ray-compat/queue",
            "control_folder": "/tmp/taskserve-ray-compat/control",
        },
        "worker_concurrency": 1,
    },
    "cancel test (redis)": {
        "broker_url": "redis://127.0.0.1:6379/0",
        "backend_url": "redis://127.0.0.1:6379/1",
        "worker_concurrency": 1,
    },
    "custom settings": {
        "broker_url": "amqp://guest:guest@localhost:5672//",
        "backend_url": "redis://localhost:6379/1",
        "app_custom_config": {"worker_prefetch_multiplier": 1, "broker_pool_limit": 4},
        "task_custom_config": {"time_limit": 60},
        "broker_transport_options": {"confirm_publish": True},
    },
}


@pytest.mark.parametrize("name", sorted(RAY_CELERY_CONFIGS))
def test_rays_celery_configs_validate_unchanged_with_the_same_meaning(name: str) -> None:
    schema = pytest.importorskip("ray.serve.schema")
    data = RAY_CELERY_CONFIGS[name]
    theirs = schema.CeleryAdapterConfig(**data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IgnoredSettingWarning)
        ours = CeleryAdapterConfig(**data)
    for field in schema.CeleryAdapterConfig.model_fields:
        assert getattr(ours, field) == getattr(theirs, field), field
    config = TaskProcessorConfig(
        queue_name="my_queue",
        adapter="ray.serve.task_processor.CeleryTaskProcessorAdapter",
        adapter_config=ours,
        max_retries=None,
        failed_task_queue_name="failed_tasks",
        unprocessable_task_queue_name="unprocessable_tasks",
    )
    assert config.adapter == "celery" and config.max_retries is None
    assert resolve_adapter(config.adapter) is CeleryAdapter


def test_rays_adapter_path_selects_taskservers_celery_adapter_without_importing_ray() -> None:
    for path in (
        "ray.serve.task_processor.CeleryTaskProcessorAdapter",
        "ray.serve.task_processor:CeleryTaskProcessorAdapter",
    ):
        assert resolve_adapter(path) is CeleryAdapter


def test_worker_concurrency_is_ignored_and_warns_once_naming_itself(
    fresh_warnings: None,
) -> None:
    with pytest.warns(IgnoredSettingWarning, match="worker_concurrency is ignored"):
        CeleryAdapterConfig(broker_url=REDIS, worker_concurrency=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CeleryAdapterConfig(broker_url=REDIS, worker_concurrency=4)


def test_a_time_limit_in_task_custom_config_is_the_core_time_limit(
    fresh_warnings: None,
) -> None:
    """Ray's threads pool drops Celery's time limits; here the limit takes effect
    (as TaskProcessorConfig.task_time_limit_s), and no warning is due."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settings = CeleryAdapterConfig(broker_url=REDIS, task_custom_config={"time_limit": 60})
    adapter = CeleryAdapter(TaskProcessorConfig(queue_name="q", adapter_config=settings))
    assert adapter.config.task_time_limit_s == 60


def test_celerys_time_limit_stops_a_task_at_the_limit(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(app_custom_config={"task_time_limit": 0.5}, max_retries=0)
    stop = threading.Event()

    def forever() -> None:
        while not stop.wait(0.02):  # the handler's own work, interrupted by the limit
            pass

    try:
        queue.consume(forever=forever)
        started = time.monotonic()
        failed = queue.wait(queue.producer.enqueue_task_sync("forever"), timeout=30)
        assert failed.status is TaskState.FAILURE
        assert (
            failed.error is not None
            and failed.error.type == "taskserve.errors.TaskTimeLimitExceeded"
        )
        assert time.monotonic() - started < 20
    finally:
        stop.set()


def test_a_kept_setting_at_taskservers_value_is_accepted_silently(fresh_warnings: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = CeleryAdapterConfig(
            broker_url=REDIS, app_custom_config={"worker_prefetch_multiplier": 1}
        )
    assert config.app_custom_config == {"worker_prefetch_multiplier": 1}


def test_queue_names_the_filesystem_broker_cannot_carry_are_refused_saying_why(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="kombu names a file after the queue's exchange"):
        TaskProcessorConfig(queue_name="my queue", adapter_config=_filesystem_config(tmp_path))
    with pytest.raises(ConfigError, match="failed_task_queue_name"):
        TaskProcessorConfig(
            queue_name="q",
            failed_task_queue_name="failed tasks",
            adapter_config=_filesystem_config(tmp_path),
        )


def test_rabbitmq_reserved_queue_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="RabbitMQ reserves"):
        TaskProcessorConfig(
            queue_name="amq.tasks",
            adapter_config=CeleryAdapterConfig(broker_url=AMQP, backend_url=REDIS),
        )


# -- a producer and an in-process consumer --------------------------------------------------
class Queue:
    """A Celery-adapter queue with a producer and, on demand, a consumer."""

    def __init__(self, config: TaskProcessorConfig) -> None:
        self.config = config
        self.producer = instantiate_adapter_from_config(config)
        self.consumer: TaskProcessorAdapter | None = None
        self.runs: list[Any] = []

    def consume(self, **handlers: Callable[..., Any]) -> None:
        consumer = resolve_adapter("celery")(self.config)
        consumer.initialize(consumer_concurrency=2)
        for name, handler in handlers.items():
            consumer.register_task_handle(handler, name)
        consumer.start_consumer()
        self.consumer = consumer

    def wait(self, task: TaskResult, timeout: float = 60.0) -> TaskResult:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.producer.get_task_status_sync(task.id)
            if result.status.is_terminal:
                return result
            time.sleep(0.05)
        raise AssertionError(f"task {task.id} did not finish: {result}")

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.stop_consumer(5)
            self.consumer.shutdown()
        self.producer.shutdown()
        CeleryHarness().cleanup(self.config)


@pytest.fixture(params=["redis", "filesystem"])
def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Queue]]:
    made: list[Queue] = []

    def make(
        queue_name: str | None = None,
        task_custom_config: dict[str, Any] | None = None,
        app_custom_config: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Queue:
        unique = uuid.uuid4().hex[:10]
        custom = {"task_custom_config": task_custom_config, "app_custom_config": app_custom_config}
        if request.param == "redis":
            adapter_config = CeleryAdapterConfig(
                broker_url=REDIS, backend_url=REDIS_BACKEND, **custom
            )
        else:
            adapter_config = _filesystem_config(tmp_path / unique, **custom)
        fields.setdefault("retry_backoff_s", 0.1)
        config = TaskProcessorConfig(
            queue_name=queue_name or f"compat_{unique}",
            adapter_config=adapter_config,
            failed_task_queue_name=f"compat_failed_{unique}",
            unprocessable_task_queue_name=f"compat_unprocessable_{unique}",
            **fields,
        )
        made.append(Queue(config))
        return made[-1]

    yield make
    for queue in made:
        queue.close()


@pytest.mark.parametrize("broker_url", [REDIS, AMQP])
def test_a_queue_name_with_spaces_carries_tasks_on_redis_and_rabbitmq(broker_url: str) -> None:
    config = TaskProcessorConfig(
        queue_name=f"document indexing {uuid.uuid4().hex[:8]}",
        adapter_config=CeleryAdapterConfig(broker_url=broker_url, backend_url=REDIS_BACKEND),
    )
    queue = Queue(config)
    try:
        queue.consume(echo=lambda value: value)
        done = queue.wait(queue.producer.enqueue_task_sync("echo", args=["spaced"]))
        assert (done.status, done.result) == (TaskState.SUCCESS, "spaced")
    finally:
        queue.close()


def test_a_rabbitmq_queue_declared_without_priorities_is_refused_saying_what_to_do() -> None:
    """A queue created without ``x-max-priority`` (by Ray Serve's adapter, or by an
    earlier taskserve-celery) cannot be declared with it: RabbitMQ refuses."""
    from kombu.connection import Connection
    from kombu.entity import Exchange
    from kombu.entity import Queue as KombuQueue

    config = TaskProcessorConfig(
        queue_name=f"compat_plain_{uuid.uuid4().hex[:10]}",
        adapter_config=CeleryAdapterConfig(broker_url=AMQP, backend_url=REDIS_BACKEND),
    )
    name = config.queue_name
    connection: Any
    with Connection(AMQP) as connection:  # type: ignore[no-untyped-call]
        exchange = Exchange(name, type="direct", durable=True)  # type: ignore[no-untyped-call]
        plain = KombuQueue(name, exchange, routing_key=name, durable=True)  # type: ignore[no-untyped-call]
        plain(connection.channel()).declare()  # type: ignore[no-untyped-call]
    queue = Queue(config)
    try:
        expected = rf"queue '{name}': it exists with other arguments.*Delete the queue"
        with pytest.raises(ConfigError, match=expected):
            queue.producer.enqueue_task_sync("echo", args=[1], priority=3)
        assert queue.producer.get_metrics_sync().queue_depth == 0
        with pytest.raises(ConfigError, match=expected):
            queue.consume(echo=lambda value: value)
    finally:
        queue.close()


def test_a_failed_result_reads_as_rays(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(max_retries=1)

    def process_request(data: Any) -> None:
        raise ValueError("Task failed as expected")

    queue.consume(process_request=process_request)
    result = queue.wait(queue.producer.enqueue_task_sync("process_request", args=["x"]))
    assert result.status == "FAILURE"
    assert isinstance(result.result, ValueError)
    assert str(result.result) == "Task failed as expected"  # the PDF template's str(status.result)
    assert result.error is not None and result.error.type == "ValueError"
    assert "process_request" in result.error.traceback and result.attempts == 2


def test_health_and_metrics_of_a_producer_list_the_consumers_alive(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue()
    assert len(queue.producer.health_check_sync()) == 0
    assert len(queue.producer.get_metrics_sync()) == 0
    queue.consume(echo=lambda value: value)
    health = queue.producer.health_check_sync()
    assert len(health) == 1 and next(iter(health[0].values())) == {"ok": "pong"}
    metrics = queue.producer.get_metrics_sync()
    [stats] = metrics.values()
    assert stats["pool"]["max-concurrency"] == 2
    transport = queue.config.adapter_config.broker_kind.value  # type: ignore[union-attr]
    assert stats["broker"]["transport"] == transport


# -- enqueue options ------------------------------------------------------------------------
def test_countdown_keeps_the_task_pending_and_never_runs_it_early(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue()
    started: list[float] = []
    queue.consume(stamp=lambda: started.append(time.time()))
    before = time.time()
    task = queue.producer.enqueue_task_sync("stamp", countdown=3.0)
    time.sleep(0.5)  # well before the countdown ends, even on a loaded machine
    assert queue.producer.get_task_status_sync(task.id).status is TaskState.PENDING
    assert queue.producer.get_metrics_sync().queue_depth == 1
    assert queue.wait(task).status is TaskState.SUCCESS
    assert started[0] >= before + 3.0


def test_eta_is_a_datetime_and_a_waiting_task_can_be_cancelled(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue()
    queue.consume(echo=lambda value: value)
    eta = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=0.8)
    kept = queue.producer.enqueue_task_sync("echo", args=["eta"], eta=eta)
    cancelled = queue.producer.enqueue_task_sync("echo", args=["never"], countdown=0.8)
    assert queue.producer.cancel_task_sync(cancelled.id).cancelled
    assert queue.wait(kept).result == "eta"
    time.sleep(0.5)
    assert queue.producer.get_task_status_sync(cancelled.id).status is TaskState.CANCELLED


def test_an_expired_task_is_not_run_and_ends_cancelled(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    runs: list[str] = []
    expired = queue.producer.enqueue_task_sync("record", args=["late"], expires=0.2)
    fresh = queue.producer.enqueue_task_sync("record", args=["fresh"], expires=60)
    time.sleep(0.4)
    queue.consume(record=runs.append)
    assert queue.wait(expired).status is TaskState.CANCELLED
    assert queue.wait(fresh).status is TaskState.SUCCESS
    assert runs == ["fresh"]


def _redis_priority_lists(name: str) -> dict[int, int]:
    """Messages waiting in each of kombu's Redis lists of queue ``name``, by kombu
    priority (the list of 0 is named after the queue, the others add a step)."""
    import redis

    client = redis.Redis.from_url(REDIS)
    try:
        lengths = {0: int(client.llen(name))}
        lengths.update({step: int(client.llen(f"{name}\x06\x16{step}")) for step in range(1, 10)})
    finally:
        client.close()
    return {step: length for step, length in lengths.items() if length}


def _file_levels(settings: CeleryAdapterConfig, name: str) -> dict[int, int]:
    """Message files waiting in queue ``name`` of the filesystem broker, by the
    level that starts their names (``9 - priority``: the first taken is 0)."""
    folder = Path(str((settings.broker_transport_options or {})["data_folder_in"]))
    levels: dict[int, int] = {}
    for path in folder.glob(f"*.{name}.msg"):
        assert path.name.startswith("+"), path.name
        levels[int(path.name[1])] = levels.get(int(path.name[1]), 0) + 1
    return levels


def _broker_levels(settings: CeleryAdapterConfig, name: str) -> dict[int, int]:
    """Messages waiting in queue ``name``, by the broker's own order: 0 is taken
    first (kombu's Redis list of priority 0, or the file names' level)."""
    if settings.broker_url == "filesystem://":
        return _file_levels(settings, name)
    return _redis_priority_lists(name)


def test_priority_is_published_where_the_broker_has_priorities(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue()
    settings = queue.config.adapter_config
    assert isinstance(settings, CeleryAdapterConfig)
    urgent = queue.producer.enqueue_task_sync("echo", args=["urgent"], priority=9)
    task = queue.producer.enqueue_task_sync("echo", args=[1], priority=5)
    plain = queue.producer.enqueue_task_sync("echo", args=["plain"])
    # Taken first: kombu's Redis list of priority 0, and the file names starting
    # with level 0; taskserve's 9 goes there, its 0 to the last (9).
    assert _broker_levels(settings, queue.config.queue_name) == {0: 1, 4: 1, 9: 1}
    if settings.broker_url != "filesystem://":
        assert CeleryAdapter.broker_queue_length(REDIS, queue.config.queue_name) == 3
    queue.consume(echo=lambda value: value)
    assert queue.wait(task).result == 1
    assert queue.wait(urgent).result == "urgent" and queue.wait(plain).result == "plain"
    message = queue.producer.store.message(task.id)  # type: ignore[attr-defined]
    assert message.priority == 5


def test_task_custom_config_priority_is_the_default_of_tasks_without_one(
    make_queue: Callable[..., Queue], fresh_warnings: None
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IgnoredSettingWarning)
        queue = make_queue(task_custom_config={"priority": 7})
    ignored = [str(w.message) for w in caught if issubclass(w.category, IgnoredSettingWarning)]
    settings = queue.config.adapter_config
    assert isinstance(settings, CeleryAdapterConfig)
    assert not ignored
    defaulted = queue.producer.enqueue_task_sync("echo", args=["defaulted"])
    own = queue.producer.enqueue_task_sync("echo", args=["own"], priority=1)
    assert _broker_levels(settings, queue.config.queue_name) == {2: 1, 8: 1}  # 9 - 7 and 9 - 1
    # the record keeps the priority it was published with (retries, redrives, the ledger)
    store = queue.producer.store  # type: ignore[attr-defined]
    assert store.message(defaulted.id).priority == 7
    assert store.message(own.id).priority == 1


def test_other_enqueue_options_are_refused_naming_the_supported_ones(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue()
    with pytest.raises(ConfigError, match=r"takes countdown, expires \(with Celery's meaning\)"):
        queue.producer.enqueue_task_sync("echo", link="callback")
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=5)
    with pytest.raises(InvalidArgument, match="not both"):
        queue.producer.enqueue_task_sync("echo", countdown=1, eta=soon)
    with pytest.raises(InvalidArgument, match="aware datetime"):
        queue.producer.enqueue_task_sync("echo", eta=datetime.datetime.now())


# -- dead letters as broker queues, in Ray's layout -------------------------------------------
def _broker_messages(queue: Queue, name: str) -> list[dict[str, Any]]:
    """The messages waiting on broker queue ``name``: headers and decoded body."""
    settings = queue.config.adapter_config
    assert isinstance(settings, CeleryAdapterConfig)
    raw: list[dict[str, Any]] = []
    if settings.broker_url == "filesystem://":
        folder = Path((settings.broker_transport_options or {})["data_folder_in"])
        for path in sorted(folder.iterdir()):
            if path.name.partition(".")[2] == f"{name}.msg":
                raw.append(json.loads(path.read_text()))
    else:
        import redis

        client = redis.Redis.from_url(REDIS)
        raw = [json.loads(item) for item in client.lrange(name, 0, -1)]
        client.close()
    messages = []
    for item in raw:
        body = item["body"]
        if item["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        messages.append({"headers": item["headers"], "body": json.loads(body)})
    return messages


def test_dead_letters_are_also_messages_on_the_named_broker_queues_in_rays_layout(
    make_queue: Callable[..., Queue],
) -> None:
    queue = make_queue(max_retries=0)

    def process_request(data: Any) -> None:
        raise ValueError("Task failed as expected")

    queue.consume(process_request=process_request)
    failed = queue.wait(queue.producer.enqueue_task_sync("process_request", args=[{"doc": 1}]))
    unknown = queue.wait(queue.producer.enqueue_task_sync("unregistered_task", args=["x"]))
    assert failed.status is TaskState.FAILURE and unknown.status is TaskState.FAILURE
    failed_queue = queue.config.failed_task_queue_name or ""
    unprocessable_queue = queue.config.unprocessable_task_queue_name or ""

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (
        _broker_messages(queue, failed_queue) and _broker_messages(queue, unprocessable_queue)
    ):
        time.sleep(0.05)
    [failed_message] = _broker_messages(queue, failed_queue)
    [record] = queue.producer.list_dead_letters_sync()
    assert failed_message["headers"]["task"] == "process_request"
    assert failed_message["headers"][DEAD_LETTER_HEADER] == record.id
    args, kwargs, _ = failed_message["body"]
    assert args[:4] == [failed.id, "Task failed as expected", [{"doc": 1}], {}]
    assert "ValueError" in args[4] and kwargs == {}

    [unknown_message] = _broker_messages(queue, unprocessable_queue)
    assert unknown_message["headers"]["task"] == "unregistered_task"
    args, _, _ = unknown_message["body"]
    assert args[0:2] == ["unregistered_task", unknown.id]
    assert args[2]["args"] == ["x"] and "no handler" in args[3]

    assert queue.producer.purge_dead_letters_sync() == 1
    assert _broker_messages(queue, failed_queue) == []


# -- Ray's autoscaling policy arguments -----------------------------------------------------------
def test_the_autoscaling_policy_takes_rays_arguments_and_polls_the_broker() -> None:
    config = TaskProcessorConfig(
        queue_name=f"autoscaling_{uuid.uuid4().hex[:10]}",
        adapter_config=CeleryAdapterConfig(broker_url=REDIS, backend_url=REDIS_BACKEND),
    )
    queue = Queue(config)
    try:
        for i in range(3):
            queue.producer.enqueue_task_sync("process", args=[i])
        policy = QueueDepthAutoscalingPolicy(
            broker_url=REDIS, queue_name=config.queue_name, poll_interval_s=1
        )
        policy._poll_once()
        assert policy.workload(object())["queue_depth"] == 3
        with pytest.raises(ValueError, match="together"):
            QueueDepthAutoscalingPolicy(broker_url=REDIS)
    finally:
        queue.close()
