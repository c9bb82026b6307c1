"""Due times of delayed enqueues: what ``delay_s`` and ``eta`` accept."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from taskserve import InvalidArgument
from taskserve.scheduling import MAX_DELAY_S, due_time

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
