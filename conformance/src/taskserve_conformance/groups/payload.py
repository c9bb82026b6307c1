"""Payloads (SPEC §3.5).

Promises checked: arguments and results travel as JSON and come back as their
JSON round-trip; a value JSON cannot carry, or a payload over
``max_payload_bytes``, fails at enqueue with a clear error and nothing is
enqueued; a result JSON cannot carry fails the task without retries.
"""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any

import pytest

from taskserve import PayloadError, TaskProcessorAdapter, TaskState
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.journal import Journal
from taskserve_conformance.producers import ProducerFactory
from taskserve_conformance.waiting import run_barrier, wait_for_status

UNSERIALIZABLE: dict[str, Any] = {
    "object": object(),
    "bytes": b"raw bytes",
    "set": {1, 2},
    "nan": float("nan"),
    "infinity": float("inf"),
    "int-key": {1: "one"},
    "datetime": datetime.datetime(2024, 1, 1),
    "decimal": decimal.Decimal("1.5"),
    "nested": {"ok": [1, 2, {"deep": object()}]},
}

ROUND_TRIP_ARGS = [
    "unicode ✓ héllo 😀",
    2**40,
    -0.125,
    1e-7,
    None,
    True,
    [],
    {},
    ("a", "tuple"),
    [[[1]], {"k": [None, {"x": ""}]}],
]


class PayloadTests:
    """§3.5: JSON payloads, refused at enqueue when they cannot be carried."""

    @pytest.mark.parametrize("value", UNSERIALIZABLE.values(), ids=UNSERIALIZABLE.keys())
    def test_unserializable_argument_fails_at_enqueue(
        self, producer: TaskProcessorAdapter, value: Any
    ) -> None:
        with pytest.raises(PayloadError, match=r"args\[1\]"):
            producer.enqueue_task_sync("echo", ["fine", value])
        with pytest.raises(PayloadError, match=r"kwargs\['bad'\]"):
            producer.enqueue_task_sync("echo", kwargs={"good": 1, "bad": value})

    def test_oversize_payload_fails_at_enqueue(
        self, make_config: ConfigFactory, make_producer: ProducerFactory
    ) -> None:
        producer = make_producer(make_config(max_payload_bytes=4096))
        producer.enqueue_task_sync("echo", ["x" * 1024])
        with pytest.raises(PayloadError, match="max_payload_bytes") as raised:
            producer.enqueue_task_sync("echo", ["x" * 8192])
        assert "4096" in str(raised.value)

    def test_refused_payloads_leave_nothing_queued(
        self,
        make_config: ConfigFactory,
        make_producer: ProducerFactory,
        consumers: ConsumerPool,
        journal: Journal,
    ) -> None:
        config = make_config(max_payload_bytes=4096)
        producer = make_producer(config)
        for value in UNSERIALIZABLE.values():
            with pytest.raises(PayloadError):
                producer.enqueue_task_sync("echo", [value])
        with pytest.raises(PayloadError):
            producer.enqueue_task_sync("echo", ["x" * 8192])
        consumers.start(config, concurrency=1)
        barrier = run_barrier(producer, Deadlines(config).run())
        assert {e.task_id for e in journal.events(event="start")} == {barrier.id}

    def test_arguments_and_results_round_trip_as_json(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        kwargs = {"mapping": {"ünï": ROUND_TRIP_ARGS}, "zero": 0}
        expected_args = json.loads(json.dumps(ROUND_TRIP_ARGS))
        consumers.start()
        task = producer.enqueue_task_sync("echo", ROUND_TRIP_ARGS, kwargs)
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run())
        assert done.result == {"args": expected_args, "kwargs": json.loads(json.dumps(kwargs))}
        [run] = journal.runs(task.id)
        assert run.args == expected_args
        assert run.kwargs == json.loads(json.dumps(kwargs))

    def test_values_come_back_as_the_same_json_text(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        """Compared as JSON text, not with ``==`` (which calls ``-0.0 == 0`` and
        ignores key order): NUL characters inside strings, negative zero, huge
        floats and integers, and the order of object keys all survive."""
        args = ["nul \x00 inside", -0.0, 1e300, 2**70, -(2**64), 0.1, "\u2028\ufeff"]
        kwargs = {"z": 1, "a": {"y": [3, 2, 1], "b": None}, "m": "last"}
        consumers.start()
        task = producer.enqueue_task_sync("echo", args, kwargs)
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run())
        sent = json.dumps({"args": args, "kwargs": kwargs})
        assert json.dumps(done.result) == sent
        [run] = journal.runs(task.id)
        assert json.dumps({"args": run.args, "kwargs": run.kwargs}) == sent
        again = producer.retry_task_sync(task.id)
        redone = wait_for_status(producer, again.id, TaskState.SUCCESS, deadlines.run())
        assert json.dumps(redone.result) == sent

    def test_unserializable_result_fails_without_retry(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        consumers.start()
        task = producer.enqueue_task_sync("unserializable_result")
        failed = wait_for_status(producer, task.id, TaskState.FAILURE, deadlines.retries())
        assert failed.error is not None
        assert failed.error.type.endswith("PayloadError")
        assert failed.attempts == 1
        assert len(journal.runs(task.id)) == 1
