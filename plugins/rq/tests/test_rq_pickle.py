"""No pickle where the consumer reads: an RQ job in RQ's own format - a job
hash whose ``data`` is the zlib-compressed pickle of (function, instance,
args, kwargs), RQ's default serializer - is never unpickled (the file its
pickle would create never appears) and lands in the unprocessable dead
letters with its raw bytes."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskserve import DeadLetterKind, TaskProcessorConfig
from taskserve_conformance import wait_until
from taskserve_rq import RQAdapter, RQAdapterConfig
from taskserve_rq.testing import RQHarness

ran: list[object] = []


class CreatesAFile:
    """Unpickling this opens (creates) a file: proof that something unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.path, "w"))


def evil(*args: object, **kwargs: object) -> None:
    ran.append((args, kwargs))


@pytest.fixture
def adapter() -> Iterator[RQAdapter]:
    queue = f"tsc-pickle-{uuid.uuid4().hex[:12]}"
    config = TaskProcessorConfig(
        queue_name=queue,
        adapter_config=RQAdapterConfig(key_prefix=f"tsc-rq-pickle-{uuid.uuid4().hex[:12]}"),
        max_retries=0,
        lease_s=2,
        failed_task_queue_name=f"{queue}-failed",
        unprocessable_task_queue_name=f"{queue}-unprocessable",
    )
    made = RQAdapter(config)
    made.register_task_handle(evil)
    made.initialize()
    made.start_consumer()
    yield made
    made.shutdown()
    RQHarness().cleanup(config)


def test_a_pickled_rq_job_is_never_unpickled(adapter: RQAdapter, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    data = pickle.dumps(("evil", None, (CreatesAFile(str(marker)),), {}))  # RQ's serializer
    RQHarness().publish_raw(adapter.config, data)
    records = wait_until(
        lambda: adapter.list_dead_letters_sync(DeadLetterKind.UNPROCESSABLE),
        timeout=30,
        message="the pickle message reached the unprocessable dead letters",
    )
    assert [record.raw for record in records] == [data]
    assert not marker.exists() and ran == []
