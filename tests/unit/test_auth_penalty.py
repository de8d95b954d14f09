"""PenaltyTracker: Dovecot-like escalation, windows, success reset, bounds (injected clock)."""

from __future__ import annotations

import pytest

from idsvc.auth.penalty import PenaltyTracker, delay_for, network_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0.0), (1, 0.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 15.0), (6, 15.0), (10_000, 15.0)],
)
def test_escalation_matches_dovecot(failures: int, expected: float) -> None:
    assert delay_for(failures, 15.0) == expected


def test_cap_and_zero_cap() -> None:
    assert delay_for(4, 5.0) == 5.0
    assert delay_for(50, 0.0) == 0.0


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        (None, None),
        ("", None),
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-ip", "?not-an-ip"),
    ],
)
def test_network_key(remote: str | None, key: str | None) -> None:
    assert network_key(remote) == key


def test_unparsable_key_is_bounded() -> None:
    key = network_key("x" * 10_000)
    assert key is not None
    assert len(key) == 257


def test_per_ip_escalation_and_window() -> None:
    clock = Clock()
    tracker = PenaltyTracker(maximum=15.0, window=900.0, clock=clock)
    delays = [tracker.record_failure("192.0.2.1") for _ in range(6)]
    assert delays == [0.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert tracker.delay("192.0.2.1") == 15.0
    assert tracker.delay("192.0.2.2") == 0.0
    clock.now += 899.0
    assert tracker.delay("192.0.2.1") == 15.0
    clock.now += 1.0  # the window is counted from the last failure
    assert tracker.delay("192.0.2.1") == 0.0
    assert tracker.record_failure("192.0.2.1") == 0.0  # starts over


def test_ipv6_neighbours_share_a_counter() -> None:
    tracker = PenaltyTracker(clock=Clock())
    tracker.record_failure("2001:db8::1")
    assert tracker.record_failure("2001:db8::2") == 2.0
    assert tracker.record_failure("2001:db8:0:1::1") == 0.0


def test_account_counter_spans_networks_and_success_clears_it() -> None:
    tracker = PenaltyTracker(clock=Clock())
    for i in range(3):
        tracker.record_failure(f"198.51.100.{i}", ("bob@example.org",))
    assert tracker.delay(None, ("bob@example.org",)) == 4.0
    assert tracker.record_failure("203.0.113.9", ("bob@example.org",)) == 8.0
    tracker.record_success(("bob@example.org",))
    assert tracker.delay(None, ("bob@example.org",)) == 0.0
    # the network record is kept: one valid login does not wipe out a spray from there
    tracker.record_failure("198.51.100.0")
    assert tracker.delay("198.51.100.0") == 2.0


def test_larger_of_network_and_account() -> None:
    tracker = PenaltyTracker(clock=Clock())
    for _ in range(4):
        tracker.record_failure("192.0.2.1", ("a@example.org",))
    assert tracker.delay("192.0.2.99", ("a@example.org",)) == 8.0
    assert tracker.delay("192.0.2.1", ("other@example.org",)) == 8.0
    assert tracker.delay("192.0.2.99", ("other@example.org",)) == 0.0


def test_duplicate_account_names_count_once() -> None:
    tracker = PenaltyTracker(clock=Clock())
    assert tracker.record_failure(None, ("a@example.org", "a@example.org")) == 0.0
    assert tracker.record_failure(None, ("a@example.org",)) == 2.0


def test_disabled_tracker_records_nothing() -> None:
    tracker = PenaltyTracker(enabled=False, clock=Clock())
    for _ in range(10):
        assert tracker.record_failure("192.0.2.1", ("a@example.org",)) == 0.0
    assert tracker.delay("192.0.2.1", ("a@example.org",)) == 0.0
    assert tracker.sizes() == (0, 0)


def test_tables_are_bounded_lru() -> None:
    clock = Clock()
    tracker = PenaltyTracker(max_entries=100, clock=clock)
    tracker.record_failure("10.0.0.1")
    tracker.record_failure("10.0.0.1")
    for i in range(1000):
        clock.now += 0.001
        tracker.record_failure(f"10.1.{i // 256}.{i % 256}", (f"u{i}@example.org",))
    assert tracker.sizes() == (100, 100)
    # the oldest key was evicted: eviction only ever forgets (shortens a delay), never adds
    assert tracker.delay("10.0.0.1") == 0.0


def test_expired_records_are_pruned() -> None:
    clock = Clock()
    tracker = PenaltyTracker(window=10.0, clock=clock)
    for i in range(50):
        tracker.record_failure(f"10.0.0.{i}", (f"u{i}@example.org",))
    clock.now += 11.0
    tracker.record_failure("10.9.9.9")
    assert tracker.sizes() == (1, 0)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="window"):
        PenaltyTracker(window=0)
    with pytest.raises(ValueError, match="size"):
        PenaltyTracker(max_entries=0)
