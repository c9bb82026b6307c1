"""The embedded worker on both brokers: no process-wide Celery state is touched,
two adapters in one process stay apart, and prefetch never exceeds concurrency."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import celery
import pytest
from celery import _state as celery_state
from celery import signals
from kombu.asynchronous import get_event_loop

from taskserve import BrokerUnavailable, DeadLetterKind, TaskProcessorConfig, TaskState
from taskserve_celery import CeleryAdapter, CeleryAdapterConfig
from taskserve_celery.consumer import START_TIMEOUT_S
from taskserve_celery.testing import CeleryHarness
from taskserve_conformance import hold_for, wait_for_status, wait_until

REDIS_URL = os.environ.get("TASKSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("TASKSERVE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
WAIT_S = 30.0

Factory = Callable[..., CeleryAdapter]


@pytest.fixture(params=["redis", "rabbitmq"])
def make_adapter(request: pytest.FixtureRequest) -> Iterator[Factory]:
    prefix = f"tsc-celery-embed-{uuid.uuid4().hex[:12]}"
    if request.param == "redis":
        settings = CeleryAdapterConfig(broker_url=REDIS_URL, key_prefix=prefix)
    else:
        settings = CeleryAdapterConfig(
            broker_url=AMQP_URL, backend_url=REDIS_URL, key_prefix=prefix
        )
    made: list[CeleryAdapter] = []

    def make(**fields: object) -> CeleryAdapter:
        queue = f"tsc-embed-{uuid.uuid4().hex[:12]}"
        config = TaskProcessorConfig(
            queue_name=queue,
            adapter_config=settings,
            lease_s=2,
            max_retries=0,
            failed_task_queue_name=f"{queue}-failed",
            **fields,  # type: ignore[arg-type]
        )
        adapter = CeleryAdapter(config)
        adapter.initialize()
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.shutdown()
        CeleryHarness().cleanup(adapter.config)


def _process_state() -> dict[str, object]:
    return {
        "current_app": celery.current_app._get_current_object(),
        "join_will_block": celery_state.task_join_will_block(),
        "event_loop": get_event_loop(),
        "socket_timeout": socket.getdefaulttimeout(),
        "receivers": {
            name: len(getattr(signals, name).receivers or [])
            for name in ("task_failure", "task_unknown", "task_prerun", "worker_init")
        },
    }


def test_two_adapters_in_one_process_keep_to_themselves(make_adapter: Factory) -> None:
    before = _process_state()
    first, second = make_adapter(), make_adapter()
    for adapter in (first, second):
        queue = adapter.config.queue_name

        def fail(queue: str = queue) -> None:
            raise RuntimeError(f"failed on {queue}")

        adapter.register_task_handle(fail, "fail")
        adapter.register_task_handle(lambda queue=queue: queue, "where")
        adapter.start_consumer()
    assert first.app is not second.app
    tasks = {
        a: (a.enqueue_task_sync("where"), a.enqueue_task_sync("fail")) for a in (first, second)
    }
    for adapter, (where, fail) in tasks.items():
        done = wait_for_status(adapter, where.id, TaskState.SUCCESS, WAIT_S)
        assert done.result == adapter.config.queue_name
        wait_for_status(adapter, fail.id, TaskState.FAILURE, WAIT_S)
        [record] = adapter.list_dead_letters_sync(DeadLetterKind.FAILED)
        assert record.task_id == fail.id
    for adapter in (first, second):
        adapter.stop_consumer(timeout=5)
    assert _process_state() == before


def test_prefetch_never_exceeds_concurrency(make_adapter: Factory) -> None:
    adapter = make_adapter(consumer_concurrency=2)
    release = threading.Event()
    adapter.register_task_handle(lambda: release.wait(WAIT_S), "block")
    adapter.start_consumer()
    try:
        ids = [adapter.enqueue_task_sync("block").id for _ in range(6)]
        wait_until(
            lambda: adapter.get_metrics_sync().in_flight == 2,
            WAIT_S,
            "two tasks did not start",
        )
        hold_for(
            lambda: (
                adapter.get_metrics_sync().queue_depth == 4
                and adapter.get_metrics_sync().local_in_flight == 2
            ),
            2 * adapter.config.lease_s,
            "the consumer fetched more tasks than its concurrency",
        )
    finally:
        release.set()
    for task_id in ids:
        wait_for_status(adapter, task_id, TaskState.SUCCESS, WAIT_S)


def test_a_consumer_told_not_to_retry_connecting_at_start_fails_at_once() -> None:
    """``broker_connection_retry_on_startup=False`` takes effect: with the broker
    down, start_consumer raises BrokerUnavailable once the first connection
    fails, not after the start timeout of a consumer that keeps retrying."""
    prefix = f"tsc-celery-embed-{uuid.uuid4().hex[:12]}"
    config = TaskProcessorConfig(
        queue_name=f"tsc-startup-{uuid.uuid4().hex[:12]}",
        adapter_config=CeleryAdapterConfig(
            broker_url="redis://127.0.0.1:1/0",
            backend_url=REDIS_URL,
            key_prefix=prefix,
            app_custom_config={"broker_connection_retry_on_startup": False},
        ),
    )
    adapter = CeleryAdapter(config)
    adapter.initialize(consumer_concurrency=1)
    adapter.register_task_handle(lambda: None, "noop")
    started = time.monotonic()
    try:
        with pytest.raises(BrokerUnavailable, match="stopped before it could consume"):
            adapter.start_consumer()
        assert time.monotonic() - started < START_TIMEOUT_S / 2
    finally:
        adapter.shutdown()
        reachable = CeleryAdapterConfig(broker_url=REDIS_URL, key_prefix=prefix)
        CeleryHarness().cleanup(config.model_copy(update={"adapter_config": reachable}))
