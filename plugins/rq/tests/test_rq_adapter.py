"""The RQ adapter's own promises, beyond the conformance suite, on a real Redis.

Consumers run in this process (the adapter embeds RQ workers in threads), so
these tests can check what only shows from the inside: no fork, no signal
handler, N tasks at once, thread-safe job timeouts, RQ's own records.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.timeouts import JobTimeoutException

from taskserve import (
    Capability,
    ConfigError,
    TaskProcessorConfig,
    TaskResult,
    TaskState,
    instantiate_adapter_from_config,
    resolve_adapter,
)
from taskserve.adapter import TaskProcessorAdapter
from taskserve.serialization import TaskMessage
from taskserve_rq import RQAdapter, RQAdapterConfig
from taskserve_rq.consumer import RQConsumer
from taskserve_rq.testing import RQHarness
from taskserve_rq.timeouts import ThreadDeathPenalty
from taskserve_rq.wire import RUN_TASK, SERIALIZER, decode_job_data
from taskserve_rq.worker import EmbeddedWorker

REDIS_URL = os.environ.get("TASKSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT_S = 30.0
"""Upper bound of every wait (never reached by a working adapter)."""

LOADED_MODEL = object()
"""Stands for what a replica loads once and every task must share."""


def _config(**settings: Any) -> TaskProcessorConfig:
    queue = f"tsrq-{uuid.uuid4().hex[:12]}"
    adapter_settings = {
        "redis_url": REDIS_URL,
        "key_prefix": f"tsrq-{uuid.uuid4().hex[:12]}",
        **settings.pop("adapter_config", {}),
    }
    return TaskProcessorConfig.from_dict(
        {
            "queue_name": queue,
            "adapter_config": RQAdapterConfig(**adapter_settings),
            "failed_task_queue_name": f"{queue}.failed",
            "unprocessable_task_queue_name": f"{queue}.unprocessable",
            "max_retries": 1,
            "retry_backoff_s": 0.05,
            "retry_jitter": False,
            "lease_s": 2.0,
            **settings,
        }
    )


@pytest.fixture
def make_adapter() -> Iterator[Callable[..., RQAdapter]]:
    """Adapters on fresh queues, shut down and cleaned up after the test."""
    made: list[RQAdapter] = []

    def make(config: TaskProcessorConfig | None = None, **settings: Any) -> RQAdapter:
        adapter = instantiate_adapter_from_config(config or _config(**settings))
        assert isinstance(adapter, RQAdapter)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.shutdown()
    for config in {id(a.config): a.config for a in made}.values():
        RQHarness().cleanup(config)


def _consumer(
    producer: RQAdapter, handlers: dict[str, Callable[..., Any]], concurrency: int = 1
) -> TaskProcessorAdapter:
    consumer = instantiate_adapter_from_config(producer.config)
    consumer.initialize(consumer_concurrency=concurrency)
    for name, handler in handlers.items():
        consumer.register_task_handle(handler, name)
    consumer.start_consumer()
    return consumer


def _wait_for(adapter: TaskProcessorAdapter, task: TaskResult, *states: TaskState) -> TaskResult:
    deadline = time.monotonic() + WAIT_S
    while True:
        status = adapter.get_task_status_sync(task.id)
        if status.status in states or time.monotonic() > deadline:
            assert status.status in states, f"task stayed {status.status}"
            return status
        time.sleep(0.02)


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# -- configuration and discovery ---------------------------------------------------
def test_typed_config_selects_the_adapter_and_rejects_unknown_keys() -> None:
    config = TaskProcessorConfig(queue_name="q", adapter_config=RQAdapterConfig())
    assert config.adapter == "rq" and resolve_adapter("rq") is RQAdapter
    with pytest.raises(ConfigError, match=r"adapter_config\.broker_url"):
        TaskProcessorConfig.from_dict(
            {"queue_name": "q", "adapter": "rq", "adapter_config": {"broker_url": "redis://x"}}
        )


@pytest.mark.parametrize(
    ("option", "instead"),
    [
        ("retry", "TaskProcessorConfig.max_retries"),
        ("result_ttl", "job_result_ttl_s"),
        ("failure_ttl", "job_result_ttl_s"),
        ("timeout", "job_timeout_s"),
        ("serializer", "JSONSerializer, never pickle"),
        ("worker_ttl", "dequeue_timeout_s"),
        ("exception_handlers", "taskserve.hooks"),
    ],
)
def test_rqs_own_options_are_refused_saying_what_takes_their_place(
    option: str, instead: str
) -> None:
    with pytest.raises(ConfigError, match=rf"{option}: RQ's option is not taken .*{instead}"):
        TaskProcessorConfig.from_dict(
            {"queue_name": "q", "adapter": "rq", "adapter_config": {option: 1}}
        )


def test_dequeue_timeout_sets_how_long_rq_keeps_an_idle_workers_record(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    """RQ's record of each embedded worker (``rq info``) expires
    ``dequeue_timeout_s`` + 15 s (its worker TTL) + 60 s after its last beat."""
    producer = make_adapter(adapter_config={"dequeue_timeout_s": 5})
    consumer = _consumer(producer, {"ok": lambda: "done"}, concurrency=2)
    try:
        running = consumer.running_consumer
        assert isinstance(running, RQConsumer)
        client = producer.store.client
        _until(lambda: all(client.exists(w.key) for w in running._workers), "workers registered")
        for worker in running._workers:
            assert 1 + 15 + 60 < client.ttl(worker.key) <= 5 + 15 + 60
    finally:
        consumer.shutdown()


def test_password_never_shows() -> None:
    settings = RQAdapterConfig(redis_url="redis://:s3cret@127.0.0.1:1/0")
    adapter = RQAdapter(TaskProcessorConfig(queue_name="q", adapter_config=settings))
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(adapter)
    report = adapter.health_check_sync()
    assert not report.healthy and "s3cret" not in report.detail
    with pytest.raises(Exception) as caught:
        adapter.enqueue_task_sync("t")
    assert "s3cret" not in str(caught.value)
    adapter.shutdown()


def test_capabilities_are_readable_without_a_broker() -> None:
    assert RQAdapter.supports(Capability.CANCEL_RUNNING)
    assert RQAdapter.capabilities == frozenset(Capability)


# -- the wire ------------------------------------------------------------------------
def test_a_task_is_a_json_rq_job_named_after_the_generic_function(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter()
    task = producer.enqueue_task_sync("index", ["doc", 1], {"deep": {"x": [True, None]}})
    raw = producer.store.client.hget(Job.key_for(task.id), "data")
    func_name, instance, args, kwargs = SERIALIZER.loads(zlib.decompress(raw))  # type: ignore[no-untyped-call]
    assert (func_name, instance, kwargs) == (RUN_TASK, None, {})
    assert args[0]["id"] == task.id and args[0]["name"] == "index"
    assert args[0]["args"] == ["doc", 1] and args[0]["kwargs"] == {"deep": {"x": [True, None]}}
    queue = Queue(producer.config.queue_name, connection=producer.store.client)
    assert queue.job_ids == [task.id]


def test_job_data_that_is_not_a_task_is_passed_on_as_bytes() -> None:
    message = TaskMessage(id="i", name="n", args=[1], kwargs={"k": "v"}, queue_name="q")
    wire = SERIALIZER.dumps([RUN_TASK, None, [json.loads(message.to_json())], {}])  # type: ignore[no-untyped-call]
    assert decode_job_data(wire) == message
    for data in (b"\x80\x04pickle", b'["other.func", null, [1], {}]', message.to_bytes()):
        assert decode_job_data(data) == data


# -- the embedded worker ----------------------------------------------------------------
def test_tasks_run_in_this_process_on_worker_threads(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter()
    seen: list[tuple[int, int, bool]] = []

    def where() -> str:
        seen.append(
            (os.getpid(), id(LOADED_MODEL), threading.current_thread() is threading.main_thread())
        )
        return "ok"

    consumer = _consumer(producer, {"where": where})
    try:
        for _ in range(3):
            _wait_for(producer, producer.enqueue_task_sync("where"), TaskState.SUCCESS)
    finally:
        consumer.shutdown()
    assert seen == [(os.getpid(), id(LOADED_MODEL), False)] * 3


def test_concurrency_n_runs_n_tasks_at_once(make_adapter: Callable[..., RQAdapter]) -> None:
    producer = make_adapter()
    barrier = threading.Barrier(3, timeout=WAIT_S)

    def meet() -> int:
        return barrier.wait()

    consumer = _consumer(producer, {"meet": meet}, concurrency=3)
    try:
        tasks = [producer.enqueue_task_sync("meet") for _ in range(3)]
        results = {_wait_for(producer, t, TaskState.SUCCESS).result for t in tasks}
    finally:
        consumer.shutdown()
    assert results == {0, 1, 2}


def test_job_timeout_stops_sync_and_async_handlers_off_the_main_thread(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter(max_retries=0, adapter_config={"job_timeout_s": 1})

    def spin() -> str:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            pass
        return "not stopped"

    async def nap() -> str:
        await asyncio.sleep(WAIT_S)
        return "not stopped"

    consumer = _consumer(producer, {"spin": spin, "nap": nap}, concurrency=2)
    try:
        tasks = [producer.enqueue_task_sync("spin"), producer.enqueue_task_sync("nap")]
        for task in tasks:
            failed = _wait_for(producer, task, TaskState.FAILURE)
            assert failed.error is not None
            assert failed.error.type == f"rq.timeouts.{JobTimeoutException.__name__}"
            assert "job timeout of 1 seconds" in failed.error.message
    finally:
        consumer.shutdown()


def test_thread_death_penalty_never_fires_after_its_block() -> None:
    class Late(JobTimeoutException):
        pass

    for _ in range(50):
        with ThreadDeathPenalty(0.001, Late):
            pass
    time.sleep(0.05)  # a stray timer would raise Late here
    with pytest.raises(Late), ThreadDeathPenalty(0.05, Late):
        while True:
            pass


# -- RQ's records ------------------------------------------------------------------------
def test_rq_keeps_its_job_record_for_job_result_ttl(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter(max_retries=0, adapter_config={"job_result_ttl_s": 60})
    consumer = _consumer(producer, {"ok": lambda: "done", "fail": lambda: 1 / 0})
    try:
        done, failed = producer.enqueue_task_sync("ok"), producer.enqueue_task_sync("fail")
        _wait_for(producer, done, TaskState.SUCCESS)
        _wait_for(producer, failed, TaskState.FAILURE)
        client, queue = producer.store.client, producer.config.queue_name
        for task, status, registry in (
            (done, b"finished", FinishedJobRegistry(queue, connection=client)),
            (failed, b"failed", FailedJobRegistry(queue, connection=client)),
        ):
            key = Job.key_for(task.id)
            _until(lambda key=key, status=status: client.hget(key, "status") == status, "status")
            assert task.id in registry.get_job_ids()
            assert 0 < client.ttl(key) <= 60
    finally:
        consumer.shutdown()


def test_finished_jobs_leave_nothing_in_rq_by_default(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter()
    consumer = _consumer(producer, {"ok": lambda: "done"})
    try:
        task = producer.enqueue_task_sync("ok")
        _wait_for(producer, task, TaskState.SUCCESS)
        client = producer.store.client
        _until(lambda: not client.exists(Job.key_for(task.id)), "the RQ job was kept")
        assert client.llen(producer.broker.intermediate_key) == 0
        assert client.zcard(producer.broker.started_key) == 0
    finally:
        consumer.shutdown()


def test_a_job_deleted_the_rq_way_is_published_again(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    """Deleting a queued job with RQ's own API (as rq-dashboard does) removes RQ's
    copy only: the task stays PENDING in taskserve's store, whose ledger
    publishes it again once the queue is empty for its claim bound."""
    producer = make_adapter()
    task = producer.enqueue_task_sync("ok")
    client = producer.store.client
    Job.fetch(task.id, connection=client, serializer=SERIALIZER).delete()
    assert producer.get_task_status_sync(task.id).status is TaskState.PENDING
    consumer = _consumer(producer, {"ok": lambda: "done"})
    try:
        assert _wait_for(producer, task, TaskState.SUCCESS).result == "done"
    finally:
        consumer.shutdown()


def test_a_finished_job_requeued_the_rq_way_does_not_run_again(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    """Requeueing a failed job from RQ's failed registry (as rq-dashboard does)
    delivers it again, and the consumer settles it without running it: the task
    stays FAILURE. Redrive goes through taskserve's dead letters instead."""
    producer = make_adapter(max_retries=0, adapter_config={"job_result_ttl_s": 60})
    runs: list[int] = []

    def fail() -> None:
        runs.append(1)
        raise ValueError("no")

    consumer = _consumer(producer, {"fail": fail})
    try:
        task = producer.enqueue_task_sync("fail")
        _wait_for(producer, task, TaskState.FAILURE)
        client, key = producer.store.client, Job.key_for(task.id)
        _until(lambda: client.hget(key, "status") == b"failed", "the job was not failed in RQ")
        registry = FailedJobRegistry(producer.config.queue_name, connection=client)
        registry.requeue(task.id)
        _until(
            lambda: client.hget(key, "status") == b"canceled", "the requeued job was not settled"
        )
        assert runs == [1]
        assert producer.get_task_status_sync(task.id).status is TaskState.FAILURE
    finally:
        consumer.shutdown()


def test_cancel_of_a_queued_task_takes_it_off_the_rq_queue(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter()
    kept, cancelled = producer.enqueue_task_sync("t"), producer.enqueue_task_sync("t")
    assert producer.get_metrics_sync().queue_depth == 2
    assert producer.cancel_task_sync(cancelled.id).status is TaskState.CANCELLED
    assert producer.get_metrics_sync().queue_depth == 1
    queue = Queue(producer.config.queue_name, connection=producer.store.client)
    assert queue.job_ids == [kept.id]


def test_a_retry_waits_in_the_ledger_and_reads_scheduled_in_rq(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter(max_retries=1, retry_backoff_s=30.0)
    consumer = _consumer(producer, {"fail": lambda: 1 / 0})
    try:
        task = producer.enqueue_task_sync("fail")
        _wait_for(producer, task, TaskState.RETRY)
        client = producer.store.client
        _until(
            lambda: client.hget(Job.key_for(task.id), "status") == b"scheduled",
            "RQ's job hash did not read 'scheduled' during the backoff",
        )
        assert client.llen(producer.broker.queue_key) == 0  # not enqueued before it is due
        assert producer.get_metrics_sync().queue_depth == 1
    finally:
        consumer.shutdown()


# -- priorities -------------------------------------------------------------------------
def test_a_queue_name_like_a_priority_level_is_refused() -> None:
    with pytest.raises(ConfigError, match="priority levels"):
        TaskProcessorConfig(queue_name="q@priority-3", adapter_config=RQAdapterConfig())
    TaskProcessorConfig(
        queue_name="q@priority-0",
        adapter_config=RQAdapterConfig(),
        failed_task_queue_name="q@priority-3",  # a record in the store, not an RQ queue
    )


def test_each_priority_waits_in_the_rq_queue_of_its_level(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter()
    client, name = producer.store.client, producer.config.queue_name
    low, high = producer.enqueue_task_sync("t"), producer.enqueue_task_sync("t", priority=7)
    assert Queue(name, connection=client).job_ids == [low.id]
    assert Queue(f"{name}@priority-7", connection=client).job_ids == [high.id]
    assert producer.broker.queued() == 2
    assert producer.cancel_task_sync(high.id).status is TaskState.CANCELLED
    assert producer.broker.queued() == 1


def test_a_fetch_takes_the_highest_level_first_and_wakes_on_a_publish(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter()
    broker = producer.broker
    tasks = [producer.enqueue_task_sync("t", priority=p) for p in (None, 3, 9, 3)]
    fetched = [f for f in (broker.fetch(1) for _ in tasks) if f is not None]
    assert [job_id for _, job_id in fetched] == [tasks[i].id for i in (2, 1, 3, 0)]
    levels = [f"{broker.name}@priority-{p}" for p in (9, 3, 3)] + [broker.name]
    assert [queue.name for queue, _ in fetched] == levels
    assert broker.queued() == 0
    late: list[TaskResult] = []
    timer = threading.Timer(0.3, lambda: late.append(producer.enqueue_task_sync("t", priority=5)))
    started = time.monotonic()
    timer.start()
    woken = broker.fetch(10)
    assert time.monotonic() - started < 5.0, "an idle fetch slept through a publish"
    timer.join(10)  # the fetch may return before the enqueue call does
    assert woken is not None and woken[1] == late[0].id


def test_the_reaper_hands_a_job_back_to_its_own_level(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter()
    broker, client = producer.broker, producer.store.client
    task = producer.enqueue_task_sync("t", priority=4)
    fetched = broker.fetch(1)
    assert fetched is not None and fetched[1] == task.id
    client.zadd(broker.leases_key, {f"{task.id}:exec": time.time() - 1})
    assert broker.reap(grace_s=60) == [task.id]
    level = Queue(f"{broker.name}@priority-4", connection=client)
    assert level.job_ids == [task.id] and broker.queue.job_ids == []


# -- crash recovery -----------------------------------------------------------------------
def test_reaper_hands_back_jobs_of_dead_consumers(make_adapter: Callable[..., RQAdapter]) -> None:
    producer = make_adapter()
    broker, client = producer.broker, producer.store.client
    leased, unleased, gone = (producer.enqueue_task_sync("t") for _ in range(3))
    # Three fetches by a consumer that then died: one leased (lease now over),
    # one never leased, one whose job hash was deleted meanwhile.
    for _ in range(3):
        client.lmove(broker.queue_key, broker.intermediate_key)
    client.zadd(broker.leases_key, {f"{leased.id}:exec": time.time() - 1})
    client.delete(Job.key_for(gone.id))
    assert broker.reap(grace_s=60) == [leased.id]
    assert broker.reap(grace_s=0) == [unleased.id]
    assert client.lrange(broker.intermediate_key, 0, -1) == []
    assert [i.decode() for i in client.lrange(broker.queue_key, 0, -1)] == [
        unleased.id,
        leased.id,
    ]


def test_a_live_lease_is_never_reaped(make_adapter: Callable[..., RQAdapter]) -> None:
    producer = make_adapter()
    broker, client = producer.broker, producer.store.client
    task = producer.enqueue_task_sync("t")
    client.lmove(broker.queue_key, broker.intermediate_key)
    client.zadd(broker.leases_key, {f"{task.id}:exec": time.time() + 60})
    assert broker.reap(grace_s=0) == []
    pipe = client.pipeline()
    broker.settle(f"{task.id}:exec", task.id, pipe)
    assert pipe.execute() == [1]
    assert client.llen(broker.intermediate_key) == 0


def test_a_stopping_consumer_hands_fetched_jobs_back(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter()
    release = threading.Event()

    def hold() -> str:
        release.wait(WAIT_S)
        return "held"

    consumer = _consumer(producer, {"hold": hold})
    running = producer.enqueue_task_sync("hold")
    waiting = producer.enqueue_task_sync("hold")
    _wait_for(producer, running, TaskState.STARTED)
    consumer.stop_consumer(timeout=0.0)  # the running task goes back too, to the ledger
    queue = Queue(producer.config.queue_name, connection=producer.store.client)
    assert waiting.id in queue.job_ids  # the running one is queued too, or due in the ledger
    for task in (running, waiting):
        assert producer.get_task_status_sync(task.id).status is TaskState.PENDING
    assert producer.get_metrics_sync().queue_depth == 2
    consumer.shutdown()
    successor = _consumer(producer, {"hold": lambda: "held"})  # its ledger publishes it
    try:
        for task in (running, waiting):
            assert _wait_for(producer, task, TaskState.SUCCESS).result == "held"
    finally:
        release.set()
        successor.shutdown()


def test_a_worker_whose_loop_ends_restarts(
    make_adapter: Callable[..., RQAdapter], monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = make_adapter()
    failures = iter([redis.ConnectionError("Redis went away")])
    original = EmbeddedWorker.check_for_suspension

    def flaky(self: EmbeddedWorker, burst: bool) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        original(self, burst)

    monkeypatch.setattr(EmbeddedWorker, "check_for_suspension", flaky)
    consumer = _consumer(producer, {"ok": lambda: "ok"})
    try:
        _until(lambda: not consumer.health_check_sync().healthy, "the stop went unnoticed")
        _wait_for(producer, producer.enqueue_task_sync("ok"), TaskState.SUCCESS)
        assert consumer.health_check_sync().healthy
    finally:
        consumer.shutdown()


def test_a_job_hash_rq_cannot_parse_is_dead_lettered_not_fatal(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter()
    client, broker = producer.store.client, producer.broker
    bad = {"no-data": {"origin": "x"}, "bad-date": {"data": b"abc", "created_at": "yesterday"}}
    for job_id, fields in bad.items():
        client.hset(Job.key_for(job_id), mapping=fields)
        client.rpush(broker.queue_key, job_id)
    consumer = _consumer(producer, {"ok": lambda: "ok"})
    try:
        _until(
            lambda: len(producer.list_dead_letters_sync("unprocessable")) == 2,
            "unparsable jobs were not dead-lettered",
        )
        raws = sorted(r.raw or b"" for r in producer.list_dead_letters_sync("unprocessable"))
        assert raws == [b"", b"abc"]
        _wait_for(producer, producer.enqueue_task_sync("ok"), TaskState.SUCCESS)
        assert consumer.health_check_sync().healthy
    finally:
        consumer.shutdown()


def test_a_task_id_rq_refuses_is_refused_before_anything_is_stored(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter()
    with pytest.raises(ConfigError, match="RQ job id"):
        producer.enqueue_task_sync("t", task_id="has:colon")
    assert producer.get_metrics_sync().queue_depth == 0


def test_a_long_task_keeps_its_lease_and_rq_started_entry(
    make_adapter: Callable[..., RQAdapter],
) -> None:
    producer = make_adapter(lease_s=1.0)
    release, runs = threading.Event(), []

    def long() -> int:
        runs.append(1)
        release.wait(WAIT_S)
        return len(runs)

    consumer = _consumer(producer, {"long": long})
    try:
        task = producer.enqueue_task_sync("long")
        _wait_for(producer, task, TaskState.STARTED)
        _until(lambda: runs == [1], "the handler did not start")
        started = StartedJobRegistry(producer.config.queue_name, connection=producer.store.client)
        watch_until = time.monotonic() + 3.0  # three leases: one not renewed would be reaped
        while time.monotonic() < watch_until:
            assert runs == [1] and producer.get_metrics_sync().in_flight == 1
            assert started.get_job_ids(cleanup=True) == [task.id]  # RQ's cleanup keeps it
            time.sleep(0.1)
        release.set()
        assert _wait_for(producer, task, TaskState.SUCCESS).result == 1
    finally:
        release.set()
        consumer.shutdown()
