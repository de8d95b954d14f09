"""AuthCache and TtlCache: TTLs, LRU bound, keyed digests, invalidation (injected clock)."""

from __future__ import annotations

import pytest

from idsvc.auth.cache import AuthCache, CachedDecision, TtlCache
from idsvc.auth.request import Outcome


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


OK = CachedDecision(Outcome.OK, "bob@example.org")
BAD = CachedDecision(Outcome.MISMATCH, "bob@example.org")


def make(clock: Clock, size: int = 100, ttl: float = 300.0, neg: float = 60.0) -> AuthCache:
    return AuthCache(max_entries=size, ttl=ttl, negative_ttl=neg, clock=clock)


def test_key_is_keyed_digest_not_password() -> None:
    clock = Clock()
    a, b = make(clock), make(clock)
    key = a.key("bob@example.org", "imap", "s3cret")
    assert len(key) == 32
    assert b"s3cret" not in key
    assert key == a.key("bob@example.org", "imap", "s3cret")
    assert key != b.key("bob@example.org", "imap", "s3cret")  # per-instance random key
    assert key != a.key("bob@example.org", "smtp", "s3cret")
    assert key != a.key("bob@example.org", "imap", "s3cret ")
    assert key != a.key("alice@example.org", "imap", "s3cret")
    # length-prefixed fields: shifting a boundary changes the key
    assert a.key("ab", "c", "d") != a.key("a", "bc", "d")


def test_positive_and_negative_ttls() -> None:
    clock = Clock()
    cache = make(clock)
    cache.put(b"ok", OK, ["bob@example.org"])
    cache.put(b"bad", BAD, ["bob@example.org"])
    assert cache.get(b"ok") == OK
    assert cache.get(b"bad") == BAD
    clock.now += 60.0
    assert cache.get(b"bad") is None
    assert cache.get(b"ok") == OK
    clock.now += 240.0
    assert cache.get(b"ok") is None
    assert len(cache) == 0
    assert cache.hits == 3
    assert cache.misses == 2


@pytest.mark.parametrize(
    "outcome", [Outcome.TEMPFAIL, Outcome.REJECTED, Outcome.DISABLED, Outcome.EXPIRED]
)
def test_never_cached(outcome: Outcome) -> None:
    cache = make(Clock())
    cache.put(b"k", CachedDecision(outcome, "bob@example.org"), ["bob@example.org"])
    assert cache.get(b"k") is None
    assert len(cache) == 0


def test_unknown_user_is_negative() -> None:
    clock = Clock()
    cache = make(clock, neg=5.0)
    cache.put(b"k", CachedDecision(Outcome.UNKNOWN_USER, None), ["ghost@example.org"])
    assert cache.get(b"k") == CachedDecision(Outcome.UNKNOWN_USER, None)
    clock.now += 5.0
    assert cache.get(b"k") is None


def test_zero_ttl_or_size_disables() -> None:
    clock = Clock()
    assert not make(clock, size=0).enabled
    assert not make(clock, ttl=0, neg=0).enabled
    only_negative = make(clock, ttl=0, neg=10)
    assert only_negative.enabled
    only_negative.put(b"ok", OK, ["bob@example.org"])
    only_negative.put(b"bad", BAD, ["bob@example.org"])
    assert only_negative.get(b"ok") is None
    assert only_negative.get(b"bad") == BAD


def test_lru_bound_evicts_least_recently_used() -> None:
    cache = make(Clock(), size=3)
    for i in range(3):
        cache.put(bytes([i]), OK, [f"u{i}@example.org"])
    assert cache.get(b"\x00") == OK  # touch 0: now 1 is the oldest
    cache.put(b"\x03", OK, ["u3@example.org"])
    assert len(cache) == 3
    assert cache.get(b"\x01") is None
    assert cache.get(b"\x00") == OK
    # eviction also cleaned the name index
    assert cache.invalidate("u1@example.org") == 0


def test_invalidate_user_drops_every_entry_naming_it() -> None:
    cache = make(Clock())
    cache.put(b"a", OK, ["bob@example.org"])
    cache.put(b"b", BAD, ["bob@example.org"])
    cache.put(b"c", OK, ["bob@alias.org", "bob@example.org"])  # alias-domain login
    cache.put(b"d", OK, ["alice@example.org"])
    assert cache.invalidate("bob@example.org") == 3
    assert cache.get(b"a") is None
    assert cache.get(b"b") is None
    assert cache.get(b"c") is None
    assert cache.get(b"d") == OK
    # the alias name's index no longer points at the removed entry
    assert cache.invalidate("bob@alias.org") == 0


def test_invalidate_domain_covers_login_and_resolved_domains() -> None:
    cache = make(Clock())
    cache.put(b"a", OK, ["bob@example.org"])
    cache.put(b"b", OK, ["bob@alias.org", "bob@example.org"])
    cache.put(b"c", OK, ["carol@other.org"])
    assert cache.invalidate_domain("alias.org") == 1
    assert cache.get(b"a") == OK
    assert cache.invalidate_domain("example.org") == 1
    assert cache.get(b"c") == OK
    assert len(cache) == 1


def test_invalidate_all() -> None:
    cache = make(Clock())
    for i in range(10):
        cache.put(bytes([i]), OK, [f"u{i}@example.org"])
    assert cache.invalidate() == 10
    assert len(cache) == 0
    assert cache.invalidate("u1@example.org") == 0


def test_put_replaces_existing_entry() -> None:
    clock = Clock()
    cache = make(clock)
    cache.put(b"k", BAD, ["bob@example.org"])
    cache.put(b"k", OK, ["bob@example.org"])
    assert cache.get(b"k") == OK
    assert len(cache) == 1
    clock.now += 100  # beyond the negative TTL: the replacement carries the positive one
    assert cache.get(b"k") == OK


def test_ttl_cache_hits_misses_and_none_values() -> None:
    clock = Clock()
    cache: TtlCache[str] = TtlCache(max_entries=2, ttl=10.0, clock=clock)
    assert cache.get("a") == (False, None)
    cache.put("a", "A")
    cache.put("none", None)
    assert cache.get("a") == (True, "A")
    assert cache.get("none") == (True, None)  # "the directory said there is none"
    cache.put("b", "B")  # evicts the least recently used one: "a" (read before "none")
    assert len(cache) == 2
    assert cache.get("a") == (False, None)
    assert cache.get("none") == (True, None)
    clock.now += 10.0
    assert cache.get("a") == (False, None)
    assert cache.get("b") == (False, None)
    cache.put("c", "C")
    cache.discard("c")
    assert cache.get("c") == (False, None)
    cache.put("d", "D")
    cache.discard()
    assert len(cache) == 0


def test_ttl_cache_disabled() -> None:
    cache: TtlCache[str] = TtlCache(max_entries=0, ttl=10.0, clock=Clock())
    assert not cache.enabled
    cache.put("a", "A")
    assert cache.get("a") == (False, None)


def test_index_survives_eviction_of_one_of_several_entries() -> None:
    cache = make(Clock(), size=2)
    cache.put(b"a", OK, ["bob@example.org"])
    cache.put(b"b", BAD, ["bob@example.org"])
    cache.put(b"c", OK, ["carol@example.org"])  # evicts "a", bob keeps "b"
    assert cache.get(b"a") is None
    assert cache.invalidate("bob@example.org") == 1
    assert cache.get(b"b") is None
    assert cache.get(b"c") == OK


def test_memory_per_entry_is_small() -> None:
    """100k entries must fit comfortably in the service's memory budget (< 600 bytes each,
    counting the key, the entry, the LRU link and the user index)."""
    import tracemalloc

    cache = make(Clock(), size=20_000)
    names = [f"user{i}@d{i % 100}.example" for i in range(20_000)]
    keys = [cache.key(n, "imap", "pw") for n in names]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for name, key in zip(names, keys, strict=True):
        cache.put(key, CachedDecision(Outcome.OK, name), (name,))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(cache) == 20_000
    assert used / 20_000 < 600, used / 20_000
