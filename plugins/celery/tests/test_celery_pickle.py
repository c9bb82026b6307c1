"""No pickle where the consumer reads, on both brokers: a Celery message in
Celery's own pickle format (``application/x-python-serialize``, task headers
of protocol 2), published with kombu as a Celery client would, is never
unpickled - the file its pickle would create never appears - and lands in
the unprocessable dead letters with its raw bytes."""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskserve import DeadLetterKind, TaskProcessorConfig
from taskserve_celery import CeleryAdapter, CeleryAdapterConfig
from taskserve_celery.testing import CeleryHarness, _broker, _queue
from taskserve_conformance import wait_until

REDIS_URL = os.environ.get("TASKSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("TASKSERVE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

ran: list[object] = []


class CreatesAFile:
    """Unpickling this opens (creates) a file: proof that something unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.path, "w"))


def evil(*args: object, **kwargs: object) -> None:
    ran.append((args, kwargs))


@pytest.fixture(params=["redis", "rabbitmq"])
def adapter(request: pytest.FixtureRequest) -> Iterator[CeleryAdapter]:
    prefix = f"tsc-celery-pickle-{uuid.uuid4().hex[:12]}"
    if request.param == "redis":
        settings = CeleryAdapterConfig(broker_url=REDIS_URL, key_prefix=prefix)
    else:
        settings = CeleryAdapterConfig(
            broker_url=AMQP_URL, backend_url=REDIS_URL, key_prefix=prefix
        )
    queue = f"tsc-pickle-{uuid.uuid4().hex[:12]}"
    config = TaskProcessorConfig(
        queue_name=queue,
        adapter_config=settings,
        max_retries=0,
        lease_s=2,
        failed_task_queue_name=f"{queue}-failed",
        unprocessable_task_queue_name=f"{queue}-unprocessable",
    )
    made = CeleryAdapter(config)
    made.register_task_handle(evil)
    made.initialize()
    made.start_consumer()
    yield made
    made.shutdown()
    CeleryHarness().cleanup(config)


def test_a_pickled_celery_message_is_never_unpickled(
    adapter: CeleryAdapter, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    body = pickle.dumps(((CreatesAFile(str(marker)),), {}, {}), protocol=2)
    task_id = str(uuid.uuid4())
    config = adapter.config
    queue = _queue(config.queue_name)
    assert isinstance(config.adapter_config, CeleryAdapterConfig)
    with _broker(config.adapter_config) as connection:
        connection.Producer().publish(
            body,
            exchange=queue.exchange,
            routing_key=config.queue_name,
            declare=[queue],
            serializer=None,
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"lang": "py", "task": "evil", "id": task_id, "root_id": task_id},
            delivery_mode=2,
            retry=True,
        )
    records = wait_until(
        lambda: adapter.list_dead_letters_sync(DeadLetterKind.UNPROCESSABLE),
        timeout=30,
        message="the pickle message reached the unprocessable dead letters",
    )
    assert [record.raw for record in records] == [body]
    assert records[0].args is None and records[0].kwargs is None
    assert not marker.exists() and ran == []
