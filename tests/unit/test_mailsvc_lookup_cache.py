"""mailsvc's socketmap answer cache (:mod:`mailsvc.clients.cache`): TTL on an injected clock, "not
found" kept like "found", bounded with the oldest entry evicted first, off at 0."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsvc.clients.cache import MISS, LookupCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_found_and_not_found_live_ttl_seconds() -> None:
    clock = Clock()
    cache = LookupCache(ttl=2.0, max_entries=10, clock=clock)
    assert cache.get("mailbox", "bob@example.org") is MISS
    cache.put("mailbox", "bob@example.org", "example.org/bob/Maildir/")
    cache.put("mailbox", "nobody@example.org", None)
    clock.now += 1.9
    assert cache.get("mailbox", "bob@example.org") == "example.org/bob/Maildir/"
    assert cache.get("mailbox", "nobody@example.org") is None
    assert cache.get("alias", "bob@example.org") is MISS  # the map is part of the key
    clock.now += 0.1
    assert cache.get("mailbox", "bob@example.org") is MISS
    assert cache.get("mailbox", "nobody@example.org") is MISS
    assert len(cache) == 0  # expired entries are dropped when met


def test_a_new_answer_replaces_the_old_one_and_restarts_its_ttl() -> None:
    clock = Clock()
    cache = LookupCache(ttl=2.0, max_entries=10, clock=clock)
    cache.put("quota", "a@example.org", "100")
    clock.now += 1.5
    cache.put("quota", "a@example.org", "200")
    clock.now += 1.5
    assert cache.get("quota", "a@example.org") == "200"


def test_bounded_oldest_stored_evicted_first() -> None:
    cache = LookupCache(ttl=60.0, max_entries=3, clock=Clock())
    for key in ("a", "b", "c", "d"):
        cache.put("domain", key, key)
    assert len(cache) == 3
    assert cache.get("domain", "a") is MISS
    assert [cache.get("domain", k) for k in ("b", "c", "d")] == ["b", "c", "d"]


@pytest.mark.parametrize(("ttl", "size"), [(0.0, 100), (5.0, 0), (-1.0, 100)])
def test_zero_turns_it_off(ttl: float, size: int) -> None:
    cache = LookupCache(ttl=ttl, max_entries=size, clock=Clock())
    assert not cache.enabled
    cache.put("domain", "example.org", "OK")
    assert cache.get("domain", "example.org") is MISS
    assert len(cache) == 0


@given(
    st.lists(
        st.tuples(st.sampled_from(["put", "get", "tick"]), st.integers(0, 20), st.floats(0, 3)),
        max_size=200,
    ),
    st.integers(1, 8),
)
def test_never_over_its_bound_never_stale(ops: list[tuple[str, int, float]], size: int) -> None:
    clock = Clock()
    cache = LookupCache(ttl=2.0, max_entries=size, clock=clock)
    stored: dict[str, tuple[float, str]] = {}  # key → (when stored, value)
    for op, key_number, step in ops:
        key = f"k{key_number}"
        if op == "put":
            cache.put("alias", key, f"v{clock.now}")
            stored[key] = (clock.now, f"v{clock.now}")
        elif op == "tick":
            clock.now += step
        else:
            got = cache.get("alias", key)
            if got is not MISS:  # only ever the last value stored, and only within the TTL
                assert key in stored
                assert got == stored[key][1]
                assert clock.now - stored[key][0] < 2.0
        assert len(cache) <= size
