"""The adaptive schedule: steps by the age of the latest burst of expectations, and a floor between ticks."""

from __future__ import annotations

import pytest

from smsrent.service.pollers import Schedule, burst_start

pytestmark = pytest.mark.anyio  # the folder's autouse time bound is an async fixture


async def test_default_schedule_is_fast_when_a_code_is_expected_and_slower_as_the_wait_grows() -> None:
    schedule = Schedule()
    intervals = [schedule.interval(age) for age in (0, 14.9, 15, 29.9, 30, 59.9, 60, 299, 300, 3600)]
    assert intervals == [1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, 10.0, 10.0]
    first_minute = sum(1 / schedule.interval(tenth / 10) for tenth in range(600)) / 10
    assert first_minute <= 31  # requests in the first minute after a code becomes expected


@pytest.mark.parametrize(
    ("expected", "start"),
    [
        ([100.0], 100.0),
        ([100.0, 100.4, 101.3], 100.0),  # waits starting together: one burst, from its first
        ([100.0, 105.0], 105.0),  # a later expectation starts a new burst
        ([50.0, 100.0, 101.0, 104.0], 104.0),  # only what lies within 2 s of the freshest counts
        ([104.0, 102.5, 103.0], 102.5),
    ],
)
async def test_burst_start(expected: list[float], start: float) -> None:
    assert burst_start(expected) == start
