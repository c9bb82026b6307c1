"""Due times and priorities of enqueues: what ``delay_s``, ``eta`` and ``priority`` accept."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from taskserve import InvalidArgument
from taskserve.scheduling import MAX_DELAY_S, MAX_PRIORITY, MIN_PRIORITY, due_time, task_priority

NOW = 1_800_000_000.0


def test_no_delay_is_no_due_time() -> None:
    assert due_time(now=NOW) is None


def test_a_delay_counts_from_now_and_an_eta_is_its_own_time() -> None:
    assert due_time(2.5, now=NOW) == NOW + 2.5
    assert due_time(0, now=NOW) == NOW
    assert due_time(MAX_DELAY_S, now=NOW) == NOW + MAX_DELAY_S
    eta = datetime.fromtimestamp(NOW + 10, tz=timezone(timedelta(hours=-5)))
    assert due_time(eta=eta, now=NOW) == pytest.approx(NOW + 10)


def test_an_eta_in_the_past_is_due_at_once() -> None:
    assert due_time(eta=datetime.fromtimestamp(NOW - 60, tz=UTC), now=NOW) == NOW


@pytest.mark.parametrize(
    ("delay_s", "eta", "message"),
    [
        (-0.1, None, "delay_s must be between 0"),
        (MAX_DELAY_S + 1, None, "delay_s must be between 0"),
        (math.nan, None, "delay_s must be between 0"),
        (False, None, "delay_s must be a number"),
        ("1", None, "delay_s must be a number"),
        (None, "2030-01-01T00:00:00Z", "eta must be a datetime"),
        (None, datetime(2030, 1, 1), "aware datetime"),
        (None, datetime.fromtimestamp(NOW + MAX_DELAY_S + 60, tz=UTC), "ahead"),
        (1.0, datetime.fromtimestamp(NOW, tz=UTC), "not both"),
    ],
)
def test_bad_delays_are_refused_naming_the_argument(
    delay_s: object, eta: object, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        due_time(delay_s, eta, now=NOW)


def test_a_priority_is_an_integer_from_0_to_9_and_none_is_the_lowest() -> None:
    assert task_priority(None) is None
    assert [task_priority(p) for p in range(MIN_PRIORITY, MAX_PRIORITY + 1)] == list(range(10))


@pytest.mark.parametrize(
    ("priority", "message"),
    [
        (10, "from 0 .lowest. to 9 .highest., got 10"),
        (-1, "got -1"),
        (True, "must be an integer from 0 to 9, got bool"),
        ("5", "got str"),
        (2.0, "got float"),
    ],
)
def test_a_bad_priority_is_refused_naming_it(priority: object, message: str) -> None:
    with pytest.raises(
        InvalidArgument, match=f"priority {message}" if "must" in message else message
    ):
        task_priority(priority)
