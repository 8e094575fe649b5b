from __future__ import annotations

import pytest

from pycomms import Retry


def test_delays_follow_the_documented_formula() -> None:
    retry = Retry(max_attempts=10, delay=1.0, backoff=2.0, max_delay=10.0, jitter=0.0)
    assert [retry.delay_for(n) for n in range(1, 8)] == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_jitter_stays_within_bounds() -> None:
    retry = Retry(delay=1.0, backoff=3.0, jitter=0.1)
    for attempt in range(2, 6):
        base = retry.base_delay(attempt)
        for _ in range(200):
            assert base * 0.9 <= retry.delay_for(attempt) <= base * 1.1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"delay": -1}, "delay"),
        ({"backoff": 0.5}, "backoff"),
        ({"jitter": 2}, "jitter"),
        ({"max_delay": -3}, "max_delay"),
    ],
)
def test_bad_values_are_rejected_by_name(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Retry(**kwargs)  # type: ignore[arg-type]
