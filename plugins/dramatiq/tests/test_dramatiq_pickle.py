"""No pickle where the consumer reads, on both brokers: a message in Dramatiq's
own pickle encoding (``dramatiq.encoder.PickleEncoder``: the message dict,
pickled), put on the queue with the broker's own client, is never unpickled -
the file its pickle would create never appears - and lands in the
unprocessable dead letters with its raw bytes."""

from __future__ import annotations

import os
import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskserve import DeadLetterKind, TaskProcessorConfig
from taskserve_conformance import wait_until
from taskserve_dramatiq import DramatiqAdapter, DramatiqAdapterConfig
from taskserve_dramatiq.testing import DramatiqHarness

REDIS_URL = os.environ.get("TASKSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("TASKSERVE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

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
def adapter(request: pytest.FixtureRequest) -> Iterator[DramatiqAdapter]:
    prefix = f"tsc-dramatiq-pickle-{uuid.uuid4().hex[:12]}"
    if request.param == "redis":
        settings = DramatiqAdapterConfig(
            broker_url=REDIS_URL, key_prefix=prefix, broker_options={"namespace": prefix}
        )
    else:
        settings = DramatiqAdapterConfig(
            broker_url=AMQP_URL, state_url=REDIS_URL, key_prefix=prefix
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
    made = DramatiqAdapter(config)
    made.register_task_handle(evil)
    made.initialize()
    made.start_consumer()
    yield made
    made.shutdown()
    DramatiqHarness().cleanup(config)


def test_a_pickled_dramatiq_message_is_never_unpickled(
    adapter: DramatiqAdapter, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    message = {
        "queue_name": adapter.config.queue_name,
        "actor_name": "evil",
        "args": [CreatesAFile(str(marker))],
        "kwargs": {},
        "options": {},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
    body = pickle.dumps(message)  # what PickleEncoder.encode makes
    DramatiqHarness().publish_raw(adapter.config, body)
    records = wait_until(
        lambda: adapter.list_dead_letters_sync(DeadLetterKind.UNPROCESSABLE),
        timeout=30,
        message="the pickle message reached the unprocessable dead letters",
    )
    assert [record.raw for record in records] == [body]
    assert not marker.exists() and ran == []
