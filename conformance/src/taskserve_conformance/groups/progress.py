"""Progress reports (SPEC §3.3, §3.4; adapters declaring ``progress``).

Promises checked: what a running handler reports with
``current_task().report_progress(fraction, message, data)`` - sync or
``async def`` - shows in the task's status (``TaskResult.progress``) while it
runs, exactly as reported, and the last report stays once the task has
succeeded. Reports are written at a bounded rate: a handler reporting 200
times in about two seconds leaves at most one stored report per
``PROGRESS_WRITE_INTERVAL_S`` (counted by the distinct ``updated_at`` values a
fast poll of the status sees), and the stored one is always the latest. A
report made after the task finished or was cancelled - from a thread the
handler left behind - never changes the terminal record.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from taskserve import Capability, TaskProcessorAdapter, TaskProgress, TaskResult, TaskState
from taskserve.engine.progress import PROGRESS_WRITE_INTERVAL_S
from taskserve_conformance.consumers import ConsumerPool
from taskserve_conformance.deadlines import Deadlines
from taskserve_conformance.gating import requires
from taskserve_conformance.journal import Journal
from taskserve_conformance.waiting import hold_for, wait_for_status, wait_until

BURST_REPORTS = 200
"""How many reports the burst handler makes."""

BURST_SPACING_S = 0.01
"""Pause between two reports of the burst (about two seconds in all)."""

LATE_REPORTS = 20
"""How many reports a handler's leftover thread makes after the task ended."""

DATA = {"pages": [1, 2, 3], "text": "caf\u00e9 \u2603", "ratio": 0.5, "none": None}


def _gate() -> str:
    return f"progress-{uuid.uuid4().hex[:12]}"


def _reported(adapter: TaskProcessorAdapter, task_id: str) -> TaskResult | None:
    record = adapter.get_task_status_sync(task_id)
    return record if record.progress is not None else None


def _unchanged_for(adapter: TaskProcessorAdapter, task_id: str, before: TaskResult) -> None:
    """The record stays ``before`` for a few write intervals."""
    hold_for(
        lambda: adapter.get_task_status_sync(task_id) == before,
        max(4 * PROGRESS_WRITE_INTERVAL_S, 1.0),
        f"the terminal record of task {task_id} changed after a late progress report",
    )


@requires(Capability.PROGRESS)
class ProgressTests:
    """Progress while running, kept after success, rate-bounded, final once terminal."""

    @pytest.mark.parametrize("handler", ["progress_and_wait", "async_progress_and_wait"])
    def test_a_running_task_shows_what_its_handler_reported(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
        handler: str,
    ) -> None:
        consumers.start()
        gate = _gate()
        task = producer.enqueue_task_sync(handler, [gate, 0.3, "reading", DATA, "done"])
        before = time.time()
        running = wait_until(
            lambda: _reported(producer, task.id),
            deadlines.pickup,
            "the reported progress did not show in the status",
            describe=lambda: f"journal: {[e.event for e in journal.events(task.id)]}",
        )
        assert running.status is TaskState.STARTED
        progress = running.progress
        assert isinstance(progress, TaskProgress)
        assert (progress.fraction, progress.message, progress.data) == (0.3, "reading", DATA)
        reported = journal.events(task.id, "reported")
        assert reported and abs(progress.updated_at - reported[0].time) < 5.0, (
            "updated_at is not the time of the report"
        )
        assert progress.updated_at <= time.time() + 5.0 and before - 60 < progress.updated_at
        journal.open_gate(gate)
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run())
        assert done.result == "done"
        assert done.progress == progress, "the last report was not kept after success"

    def test_reports_are_written_at_a_bounded_rate_and_the_last_one_stays(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        consumers.start()
        task = producer.enqueue_task_sync("progress_burst", [BURST_REPORTS, BURST_SPACING_S])
        deadline = time.monotonic() + deadlines.run(seconds=BURST_REPORTS * BURST_SPACING_S)
        stored: set[float] = set()
        while True:
            record = producer.get_task_status_sync(task.id)
            if record.progress is not None:
                stored.add(record.progress.updated_at)
            if record.status.is_terminal:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the burst did not finish; last status {record.status.value}")
            time.sleep(0.005)
        assert record.status is TaskState.SUCCESS
        last = record.progress
        assert last is not None
        assert (last.fraction, last.message, last.data) == (
            1.0,
            f"{BURST_REPORTS}/{BURST_REPORTS}",
            {"i": BURST_REPORTS},
        ), "the stored report is not the last one"
        start, end = journal.events(task.id, "burst_start"), journal.events(task.id, "burst_end")
        assert start and end
        reporting_s = end[0].time - start[0].time
        # One write per interval while reporting, the pending one when the handler
        # returned, and one interval of slack for the clocks of two processes.
        bound = reporting_s / PROGRESS_WRITE_INTERVAL_S + 3
        assert len(stored) <= bound, (
            f"{len(stored)} different reports were stored in {reporting_s:.2f}s of reporting; "
            f"at most {bound:.0f} may be (one per {PROGRESS_WRITE_INTERVAL_S}s)"
        )
        assert len(stored) >= 2, "no report was visible while the handler ran"

    def test_a_report_after_the_task_finished_changes_nothing(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        consumers.start()
        gate = _gate()
        task = producer.enqueue_task_sync("progress_outliving_the_run", [gate, LATE_REPORTS])
        done = wait_for_status(producer, task.id, TaskState.SUCCESS, deadlines.run())
        self._late_reports_change_nothing(producer, journal, deadlines, task.id, gate, done)

    @requires(Capability.CANCEL_RUNNING)
    def test_a_report_after_a_cancel_changes_nothing(
        self,
        producer: TaskProcessorAdapter,
        consumers: ConsumerPool,
        journal: Journal,
        deadlines: Deadlines,
    ) -> None:
        consumers.start()
        gate = _gate()
        task = producer.enqueue_task_sync("progress_outliving_the_run", [gate, LATE_REPORTS, True])
        wait_until(
            lambda: _reported(producer, task.id),
            deadlines.pickup,
            "the reported progress did not show in the status",
        )
        assert producer.cancel_task_sync(task.id).cancelled
        cancelled = wait_for_status(producer, task.id, TaskState.CANCELLED, deadlines.cancel)
        self._late_reports_change_nothing(producer, journal, deadlines, task.id, gate, cancelled)

    @staticmethod
    def _late_reports_change_nothing(
        producer: TaskProcessorAdapter,
        journal: Journal,
        deadlines: Deadlines,
        task_id: str,
        gate: str,
        ended: TaskResult,
    ) -> None:
        assert ended.progress is not None and ended.progress.message == "in the handler", (
            "the last report before the end was not kept"
        )
        journal.open_gate(gate)  # the handler's leftover thread reports now
        late: list[Any] = wait_until(
            lambda: (
                len(journal.events(task_id, "late_report")) >= LATE_REPORTS
                and journal.events(task_id, "late_report")
            ),
            deadlines.pickup,
            "the handler's leftover thread did not report",
        )
        assert late[0].time >= journal.events(task_id, "end")[0].time
        _unchanged_for(producer, task_id, ended)
