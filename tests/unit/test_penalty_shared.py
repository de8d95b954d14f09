"""The shared penalty table: one brain for every worker process (forked after it is created),
bounded, with the same escalation, window and success reset as the in-process tables."""

from __future__ import annotations

import os
import time

import pytest

from idsvc.auth.penalty import (
    ACCOUNTS,
    NETWORKS,
    PROBE,
    PenaltyTracker,
    SharedFailureTable,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table() -> SharedFailureTable:
    return SharedFailureTable(slots=1024)


def shared_tracker(table: SharedFailureTable, clock: Clock, **kw: float) -> PenaltyTracker:
    tracker = PenaltyTracker(clock=clock, **kw)  # type: ignore[arg-type]
    tracker.share(table)
    return tracker


def test_two_trackers_on_one_table_escalate_as_one(table: SharedFailureTable) -> None:
    clock = Clock()
    a, b = shared_tracker(table, clock), shared_tracker(table, clock)
    assert a.shared
    assert b.shared
    delays = []
    for n in range(6):  # an attacker alternating between two workers
        tracker = (a, b)[n % 2]
        delays.append(tracker.record_failure("192.0.2.7", ("bob@example.org",)))
    assert delays == [0.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert a.delay("192.0.2.7") == b.delay("192.0.2.7") == 15.0
    assert b.delay(None, ("bob@example.org",)) == 15.0
    assert a.sizes() == b.sizes() == (1, 1)


def test_success_clears_the_account_for_every_tracker(table: SharedFailureTable) -> None:
    clock = Clock()
    a, b = shared_tracker(table, clock), shared_tracker(table, clock)
    for _ in range(3):
        a.record_failure("192.0.2.7", ("bob@example.org",))
    b.record_success(("bob@example.org",))
    assert a.delay(None, ("bob@example.org",)) == 0.0
    assert a.delay("192.0.2.7") == 4.0  # the network keeps its record


def test_records_expire_after_the_window(table: SharedFailureTable) -> None:
    clock = Clock()
    tracker = shared_tracker(table, clock, window=60.0)
    for _ in range(3):
        tracker.record_failure("192.0.2.7")
    clock.now += 59
    assert tracker.delay("192.0.2.7") == 4.0
    clock.now += 1
    assert tracker.delay("192.0.2.7") == 0.0
    assert tracker.record_failure("192.0.2.7") == 0.0  # counting starts again


def test_kinds_do_not_collide(table: SharedFailureTable) -> None:
    clock = Clock()
    tracker = shared_tracker(table, clock)
    for _ in range(3):
        tracker.record_failure("same-name")  # a network key "?same-name"
        tracker.record_failure(None, ("same-name",))
    assert table.used(NETWORKS) == 1
    assert table.used(ACCOUNTS) == 1


def test_a_spray_stays_within_the_table(table: SharedFailureTable) -> None:
    clock = Clock()
    tracker = shared_tracker(table, clock)
    for n in range(20_000):
        clock.now += 0.001
        tracker.record_failure(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
    nets, accounts = tracker.sizes()
    assert nets <= table.slots
    assert accounts == 0
    # the newest keys are still counted: eviction takes the oldest record of a probe window
    assert tracker.record_failure("10.0.78.31") == 2.0


def test_table_size_is_bounded_and_a_power_of_two() -> None:
    table = SharedFailureTable(slots=1000)
    assert table.slots == 1024
    with pytest.raises(ValueError, match="at least"):
        SharedFailureTable(slots=PROBE - 1)
    with pytest.raises(ValueError, match="kind"):
        table.view(0)


def test_a_forked_process_sees_and_feeds_the_same_counts(table: SharedFailureTable) -> None:
    tracker = PenaltyTracker()  # the real monotonic clock: one clock for every process
    tracker.share(table)
    tracker.record_failure("198.51.100.9", ("eve@example.org",))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: another worker
        try:
            os.close(read)
            child = PenaltyTracker()
            child.share(table)
            seen = child.delay("198.51.100.9")
            got = child.record_failure("198.51.100.9", ("eve@example.org",))
            os.write(write, f"{seen} {got}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        reply = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert reply == "0.0 2.0"  # the child saw the parent's failure and escalated on it
    assert tracker.delay("198.51.100.9") == 2.0  # and the parent sees the child's


def test_shared_table_cost_per_failure_is_microseconds(table: SharedFailureTable) -> None:
    tracker = PenaltyTracker()
    tracker.share(table)
    started = time.perf_counter()
    for n in range(2000):
        tracker.record_failure(f"192.0.2.{n & 255}", (f"u{n}@example.org",))
    per_call = (time.perf_counter() - started) / 2000
    assert per_call < 0.001  # generous bound for a loaded machine; measured ~10 µs
