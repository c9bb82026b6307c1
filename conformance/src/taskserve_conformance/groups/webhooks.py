"""Completion webhooks (SPEC §12.1; adapters declaring ``webhooks``).

Promises checked, with real consumer processes POSTing to a real HTTP
receiver on 127.0.0.1 (the test config allows private targets):

* a task that gives a ``webhook_url`` gets one signed event per step it asked
  for, and only those (by default succeeded, failed, cancelled): headers
  ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` verified
  with the ``standardwebhooks`` package, body ``{"type": "task.<event>",
  "timestamp", "data"}`` with the task's id, name, queue, status and attempt,
  its result on success, the error's type and message on failure, the
  dead-letter queue of a dead letter; event ids are stable
  (``evt_<task>_succeeded``, ``evt_<task>_started_<attempt>``...);
* a cancel of a queued task sent while no consumer runs is announced once a
  consumer runs, and a delivery the receiver refuses (500, twice) is tried
  again, with the same id and body, until it is accepted, and then no more;
* progress events come at most once per ``progress_interval_s`` (plus one),
  and the last report is always sent;
* a consumer killed (SIGKILL) in the middle of a task and of a delivery loses
  no event: another consumer runs the task again and sends every event -
  the dead consumer's leased one too - at least once; repeats carry the same
  id and body, so the receiver can drop them.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import pytest
from standardwebhooks import Webhook

from taskserve import Capability, TaskProcessorAdapter, TaskProcessorConfig, TaskState
from taskserve_conformance.configs import ConfigFactory
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.journal import Journal
from taskserve_conformance.waiting import hold_for, wait_for_status, wait_until
from taskserve_conformance.webhook_receiver import Received, WebhookReceiver

_T = TypeVar("_T")

SECRET = "whsec_" + base64.b64encode(b"taskserve conformance webhooks!!").decode()
"""The signing secret of every webhook test config."""

SETTINGS: dict[str, Any] = {
    "signing_secret": SECRET,
    "allow_private_targets": True,  # the receiver is on 127.0.0.1
    "timeout_s": 1.0,
    "retry_backoff_s": 0.2,
    "retry_backoff_max_s": 0.4,
    "poll_interval_s": 0.05,
    "progress_interval_s": 0.5,
}
"""``webhooks`` of the test configs: short timings."""

BURST_REPORTS, BURST_SPACING_S = 40, 0.05
"""The progress burst: 40 reports in about two seconds."""


def _verified(request: Received) -> Any:
    """The request's event, its signature verified with ``standardwebhooks``."""
    event = Webhook(SECRET).verify(request.body, request.headers)
    assert request.headers["content-type"].startswith("application/json")
    return event


def _wait_received(
    receiver: WebhookReceiver,
    condition: Callable[[], _T | Literal[False] | None],
    timeout: float,
    message: str,
) -> _T:
    """:func:`wait_until` ``condition``, naming the event ids received if it times out."""
    return wait_until(
        condition, timeout, message, describe=lambda: f"received: {sorted(receiver.ids())}"
    )


def _event(receiver: WebhookReceiver, event_id: str, timeout: float) -> Any:
    """The verified event ``event_id`` once it has been received."""
    first = _wait_received(
        receiver,
        lambda: receiver.received(event_id),
        timeout,
        f"webhook event {event_id} was not received",
    )
    return _verified(first[0])


def _task_ids(receiver: WebhookReceiver, task_id: str) -> set[str]:
    return {i for i in receiver.ids() if i.startswith(f"evt_{task_id}_")}


@requires(Capability.WEBHOOKS)
class WebhookTests:
    """§12.1: signed, complete, retried, rate-bounded, at least once across crashes."""

    @pytest.fixture
    def config(self, make_config: ConfigFactory) -> TaskProcessorConfig:
        """The test's default config, with :data:`SETTINGS` as its ``webhooks``
        (the producer, deadlines and consumers of the test are on it)."""
        return make_config(webhooks=SETTINGS)

    @pytest.fixture
    def receiver(self) -> Iterator[WebhookReceiver]:
        """A webhook receiver on 127.0.0.1, stopped at the end of the test."""
        made = WebhookReceiver()
        yield made
        made.close()

    def test_a_succeeded_task_sends_one_signed_event(
        self,
        config: TaskProcessorConfig,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        deadlines: Deadlines,
        receiver: WebhookReceiver,
    ) -> None:
        consumers.start(concurrency=1)
        task = producer.enqueue_task_sync("echo", ["hello"], webhook_url=receiver.url)
        event = _event(receiver, f"evt_{task.id}_succeeded", deadlines.run())
        assert event["type"] == "task.succeeded"
        assert event["timestamp"].endswith("Z")
        assert event["data"] == {
            "task_id": task.id,
            "task_name": "echo",
            "queue": config.queue_name,
            "status": "SUCCESS",
            "attempt": 1,
            "result": {"args": ["hello"], "kwargs": {}},
        }
        [request] = receiver.received(f"evt_{task.id}_succeeded")
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
        # Due events are claimed oldest first: once a later task's event arrived, any
        # other event of the first task has been sent too.
        later = producer.enqueue_task_sync("echo", ["later"], webhook_url=receiver.url)
        _event(receiver, f"evt_{later.id}_succeeded", deadlines.run())
        hold_for(
            lambda: _task_ids(receiver, task.id) == {f"evt_{task.id}_succeeded"},
            4 * SETTINGS["poll_interval_s"],
            "a task asking for the default events got another one",
        )

    def test_a_failed_task_sends_its_attempts_failure_and_dead_letter(
        self,
        config: TaskProcessorConfig,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        deadlines: Deadlines,
        receiver: WebhookReceiver,
    ) -> None:
        consumers.start(concurrency=1)
        task = producer.enqueue_task_sync(
            "always_fail",
            webhook_url=receiver.url,
            webhook_events=["started", "failed", "dead_lettered"],
        )
        attempts = config.max_attempts
        started = [f"evt_{task.id}_started_{n}" for n in range(1, attempts + 1)]
        wanted = {*started, f"evt_{task.id}_failed", f"evt_{task.id}_dead_lettered"}
        _wait_received(
            receiver,
            lambda: wanted <= receiver.ids(),
            deadlines.retries() + deadlines.pickup,
            "the failed task's events were not all received",
        )
        for number, event_id in enumerate(started, 1):
            event = _verified(receiver.received(event_id)[0])
            assert (event["type"], event["data"]["status"]) == ("task.started", "STARTED")
            assert event["data"]["attempt"] == number
        failed = _verified(receiver.received(f"evt_{task.id}_failed")[0])
        assert failed["type"] == "task.failed"
        assert failed["data"]["status"] == "FAILURE"
        assert failed["data"]["attempt"] == attempts
        error = failed["data"]["error"]
        assert error["type"].endswith("HandlerFailure") and "told to fail" in error["message"]
        assert set(error) == {"type", "message"}, "the traceback left the server"
        lettered = _verified(receiver.received(f"evt_{task.id}_dead_lettered")[0])
        assert lettered["type"] == "task.dead_lettered"
        assert lettered["data"]["dead_letter_queue"] == config.failed_task_queue_name
        assert lettered["data"]["error"] == error
        assert _task_ids(receiver, task.id) == wanted

    @requires(Capability.CANCEL_PENDING)
    def test_a_refused_delivery_is_tried_again_until_it_is_accepted(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        deadlines: Deadlines,
        receiver: WebhookReceiver,
    ) -> None:
        receiver.answers = [500, 500]
        # Cancelled by the producer while no consumer runs: the event waits in the store.
        task = producer.enqueue_task_sync("echo", webhook_url=receiver.url)
        assert producer.cancel_task_sync(task.id).status is TaskState.CANCELLED
        consumers.start(concurrency=1)
        event_id = f"evt_{task.id}_cancelled"
        tries = wait_until(
            lambda: len(receiver.received(event_id)) >= 3 and receiver.received(event_id),
            deadlines.pickup + 10 * SETTINGS["retry_backoff_max_s"],
            "the refused delivery was not tried until accepted",
            describe=lambda: f"statuses: {[r.status for r in receiver.received(event_id)]}",
        )
        assert [r.status for r in tries] == [500, 500, 200]
        assert len({r.body for r in tries}) == 1, "a try carried another body"
        for request in tries:
            assert _verified(request)["type"] == "task.cancelled"
        assert tries[0].payload["data"]["status"] == "CANCELLED"
        hold_for(
            lambda: len(receiver.received(event_id)) == 3,
            3 * SETTINGS["retry_backoff_max_s"] + 4 * SETTINGS["poll_interval_s"],
            "an accepted event was sent again",
        )

    @requires(Capability.PROGRESS)
    def test_progress_events_are_rate_bounded_and_the_last_report_is_sent(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        deadlines: Deadlines,
        journal: Journal,
        receiver: WebhookReceiver,
    ) -> None:
        consumers.start(concurrency=1)
        task = producer.enqueue_task_sync(
            "progress_burst",
            [BURST_REPORTS, BURST_SPACING_S],
            webhook_url=receiver.url,
            webhook_events=["progress", "succeeded"],
        )

        def last_report_sent() -> list[Any]:
            events = [_verified(r) for r in receiver.received() if "_progress_" in r.event_id]
            done = any(e["data"]["progress"]["fraction"] == 1.0 for e in events)
            return events if done else []

        events = _wait_received(
            receiver,
            last_report_sent,
            deadlines.run(seconds=BURST_REPORTS * BURST_SPACING_S),
            "the last progress report was not sent",
        )
        _event(receiver, f"evt_{task.id}_succeeded", deadlines.run())
        numbers = sorted(
            int(r.event_id.rsplit("_", 1)[1])
            for r in receiver.received()
            if "_progress_" in r.event_id
        )
        assert numbers == list(range(1, len(numbers) + 1)), numbers
        start = journal.events(task.id, "burst_start")[0].time
        end = journal.events(task.id, "burst_end")[0].time
        # One per interval while reporting, the last report, and one interval of
        # slack for the clocks of two processes.
        bound = (end - start) / SETTINGS["progress_interval_s"] + 3
        assert 2 <= len(numbers) <= bound, (
            f"{len(numbers)} progress events for {end - start:.2f}s of reports; at most "
            f"{bound:.0f} may be (one per {SETTINGS['progress_interval_s']}s, and the last)"
        )
        last = max(events, key=lambda e: e["data"]["progress"]["fraction"])["data"]
        assert last["progress"]["message"] == f"{BURST_REPORTS}/{BURST_REPORTS}"
        assert last["status"] == "STARTED" and last["attempt"] == 1

    @requires(Capability.CRASH_REDELIVERY)
    def test_no_event_is_lost_when_a_consumer_dies_mid_task_and_mid_delivery(
        self,
        config: TaskProcessorConfig,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        deadlines: Deadlines,
        journal: Journal,
        receiver: WebhookReceiver,
    ) -> None:
        receiver.hold()  # the first consumer's deliveries hang
        victim = consumers.start(concurrency=1)
        gate = f"webhooks-{uuid.uuid4().hex[:12]}"
        task = producer.enqueue_task_sync(
            "wait_for_gate",
            [gate, "done"],
            webhook_url=receiver.url,
            webhook_events=["started", "succeeded"],
        )
        first = f"evt_{task.id}_started_1"
        wait_until(
            lambda: receiver.received(first),
            deadlines.pickup,
            "the first consumer did not send the started event",
        )
        victim.kill()  # in the middle of the task and of that delivery
        receiver.release()
        journal.open_gate(gate)
        consumers.start(concurrency=1)
        wanted = {first, f"evt_{task.id}_started_2", f"evt_{task.id}_succeeded"}
        wait_until(
            lambda: wanted <= receiver.ids() and len(receiver.received(first)) >= 2,
            deadlines.redelivery + 2 * config.webhooks.lease_s + deadlines.pickup,
            "an event was lost with the consumer",
            describe=lambda: f"received: {sorted(r.event_id for r in receiver.received())}",
        )
        wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run())
        assert _task_ids(receiver, task.id) == wanted
        for event_id in wanted:
            copies = receiver.received(event_id)
            assert len({r.body for r in copies}) == 1, f"the copies of {event_id} differ"
            for request in copies:
                _verified(request)
        assert _verified(receiver.received(f"evt_{task.id}_succeeded")[0])["data"]["attempt"] == 2
