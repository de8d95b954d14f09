"""The auth core's rate limiters: the exact SlidingLimiter and the bounded WindowCounter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.auth.limiter import SlidingLimiter, WindowCounter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_counter_allows_the_limit_then_refuses() -> None:
    clock = Clock()
    counter = WindowCounter(3, 60.0, clock=clock)
    assert [counter.take("a") for _ in range(3)] == [None, None, None]
    wait = counter.take("a")
    assert wait is not None
    assert 1 <= wait <= 60
    assert counter.take("b") is None  # per key


def test_window_counter_slides() -> None:
    clock = Clock()
    clock.now = 1200.0  # a window boundary
    counter = WindowCounter(10, 100.0, clock=clock)
    for _ in range(10):
        assert counter.take("a") is None
    assert counter.take("a") is not None
    clock.now += 100.0  # next window: the previous one still weighs fully at its start
    assert counter.take("a") is not None
    clock.now += 50.0  # half of it has slid out: about 5 more are allowed
    allowed = 0
    while counter.take("a") is None:
        allowed += 1
    assert allowed == 5
    clock.now += 300.0  # long idle: everything forgotten
    assert counter.take("a") is None


def test_window_counter_wait_is_honest() -> None:
    clock = Clock()
    clock.now = 0.0
    counter = WindowCounter(4, 10.0, clock=clock)
    for _ in range(4):
        counter.take("a")
    clock.now = 12.0
    wait = counter.take("a")
    assert wait is not None
    clock.now += wait
    assert counter.take("a") is None


def test_window_counter_memory_is_bounded() -> None:
    counter = WindowCounter(1000, 3600.0, max_keys=50, clock=Clock())
    for i in range(10_000):
        counter.take(f"user{i}")
    assert len(counter) == 50


def test_window_counter_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        WindowCounter(0, 10.0)
    with pytest.raises(ValueError, match="positive"):
        WindowCounter(1, 0.0)


@given(
    st.integers(min_value=1, max_value=50),
    st.lists(st.floats(min_value=0.0, max_value=30.0), min_size=1, max_size=200),
)
def test_window_counter_never_allows_more_than_twice_the_limit_per_window(
    limit: int, gaps: list[float]
) -> None:
    clock = Clock()
    clock.now = 0.0
    counter = WindowCounter(limit, 10.0, clock=clock)
    allowed: list[float] = []
    for gap in gaps:
        clock.now += gap
        if counter.take("k") is None:
            allowed.append(clock.now)
    for t in allowed:  # any 10 s span holds at most 2x the limit (the estimate's worst case)
        assert sum(1 for u in allowed if t <= u < t + 10.0) <= 2 * limit


def test_sliding_limiter_still_serves_the_api() -> None:
    clock = Clock()
    limiter = SlidingLimiter(2, 10.0, clock=clock)
    assert limiter.take("k") is None
    assert limiter.take("k") is None
    assert limiter.take("k") is not None
    clock.now += 10.0
    assert limiter.take("k") is None
