"""The authentication cache: a bounded LRU of recent decisions, and a small domain cache.

What it does: remembers the outcome of a credential check for a short time so repeated logins
(IMAP clients reconnect constantly) skip the directory and the hash. An entry is keyed by an
HMAC-SHA256, under a random per-process key, of (service, canonical login, password): the password
itself is never stored and the key is useless outside this process. Positive results (OK) live
``ttl`` seconds, negative ones (MISMATCH, UNKNOWN_USER) ``negative_ttl`` seconds; at most
``max_entries`` entries are kept, least recently used evicted first. Each entry also records the
account names it concerns (the canonical login and the account it resolved to, e.g. through an
alias domain), so ``invalidate(user)`` drops every entry about that user at once, whatever login
produced it, and ``invalidate_domain`` drops every entry touching a domain.

What it does not do: cache TEMPFAIL, REJECTED, DISABLED or EXPIRED (those must take effect, or
recover, at once), share entries between processes, or decide anything: the engine still applies
penalties and failure delays to cached failures.

How it fails: it cannot; a TTL or size of 0 disables it. Time comes from an injected clock.
"""

from __future__ import annotations

import hmac
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, NamedTuple, TypeVar

from idsvc.auth.request import Outcome

CACHEABLE = frozenset({Outcome.OK, Outcome.MISMATCH, Outcome.UNKNOWN_USER})
_LENGTH = struct.Struct(">I").pack  # 4-byte big-endian length prefix of each key field

V = TypeVar("V")


class CachedDecision(NamedTuple):
    """What the cache gives back: the outcome and the canonical account it concerned, if any.
    (A named tuple: one is built per cache hit.)"""

    outcome: Outcome
    user: str | None


class _Entry:
    """One cached decision (kept small: there may be ``cache_size`` of them)."""

    __slots__ = ("expires", "names", "outcome", "user")

    def __init__(
        self, outcome: Outcome, user: str | None, names: tuple[str, ...], expires: float
    ) -> None:
        self.outcome = outcome
        self.user = user
        self.names = names  # canonical account names this entry is about (for invalidation)
        self.expires = expires


def _domain_of(name: str) -> str:
    return name.rpartition("@")[2]


class AuthCache:
    """Bounded LRU + TTL cache of authentication decisions (see the module docstring)."""

    def __init__(
        self,
        *,
        max_entries: int,
        ttl: float,
        negative_ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max(0, max_entries)
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._clock = clock
        self._key = secrets.token_bytes(32)  # per process: cache keys are useless elsewhere
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        # name -> the key of its one entry, or a set of keys when it has several (rare: one
        # entry per user is the common case, and a set costs ~200 bytes)
        self._by_name: dict[str, bytes | set[bytes]] = {}
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self._max > 0 and (self._ttl > 0 or self._negative_ttl > 0)

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, login: str, service: str, password: str) -> bytes:
        """The keyed digest identifying (service, canonical login, password). Length-prefixed
        fields, so no two different triples share a message."""
        s = service.encode("utf-8", "surrogatepass")
        u = login.encode("utf-8", "surrogatepass")
        p = password.encode("utf-8", "surrogatepass")
        message = b"".join((_LENGTH(len(s)), s, _LENGTH(len(u)), u, _LENGTH(len(p)), p))
        return hmac.digest(self._key, message, "sha256")  # one-shot C implementation

    def get(self, key: bytes) -> CachedDecision | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if self._clock() >= entry.expires:
            self._remove(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return CachedDecision(entry.outcome, entry.user)

    def put(self, key: bytes, decision: CachedDecision, names: Iterable[str]) -> None:
        """Remember ``decision``; ``names`` are the canonical accounts it concerns. Outcomes
        other than OK / MISMATCH / UNKNOWN_USER are ignored (never cached)."""
        if decision.outcome not in CACHEABLE or self._max == 0:
            return
        ttl = self._ttl if decision.outcome is Outcome.OK else self._negative_ttl
        if ttl <= 0:
            return
        if key in self._entries:
            self._remove(key)
        unique = tuple(dict.fromkeys(names))
        user = decision.user
        if user is not None and unique and user == unique[-1]:
            user = unique[-1]  # share one string object between user and names
        self._entries[key] = _Entry(decision.outcome, user, unique, self._clock() + ttl)
        for name in unique:
            held = self._by_name.get(name)
            if held is None:
                self._by_name[name] = key
            elif isinstance(held, set):
                held.add(key)
            elif held != key:
                self._by_name[name] = {held, key}
        while len(self._entries) > self._max:
            self._remove(next(iter(self._entries)))

    def invalidate(self, user: str | None = None) -> int:
        """Drop every entry about canonical ``user`` (or everything). Returns how many."""
        if user is None:
            dropped = len(self._entries)
            self._entries.clear()
            self._by_name.clear()
            return dropped
        held = self._by_name.pop(user, None)
        keys = [] if held is None else [held] if isinstance(held, bytes) else list(held)
        for key in keys:
            self._remove(key)
        return len(keys)

    def invalidate_domain(self, domain: str) -> int:
        """Drop every entry concerning an account in ``domain`` (canonical name). This walks the
        whole cache once; it runs only when an administrator changes a domain."""
        doomed = [
            key
            for key, entry in self._entries.items()
            if any(_domain_of(name) == domain for name in entry.names)
        ]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for name in entry.names:
            held = self._by_name.get(name)
            if held is None:
                continue
            if isinstance(held, set):
                held.discard(key)
                if len(held) == 1:
                    self._by_name[name] = next(iter(held))
                elif not held:
                    del self._by_name[name]
            elif held == key:
                del self._by_name[name]


class TtlCache(Generic[V]):
    """A small bounded LRU with one TTL, for lookups that change rarely (domains).

    ``get`` returns ``(True, value)`` on a fresh hit — the value may itself be None, meaning "the
    directory said there is none" — and ``(False, None)`` on a miss.
    """

    def __init__(
        self, *, max_entries: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max(0, max_entries)
        self._ttl = ttl
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, V | None]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._max > 0 and self._ttl > 0

    def get(self, key: str) -> tuple[bool, V | None]:
        item = self._data.get(key)
        if item is None:
            return False, None
        if self._clock() >= item[0]:
            del self._data[key]
            return False, None
        self._data.move_to_end(key)
        return True, item[1]

    def put(self, key: str, value: V | None) -> None:
        if not self.enabled:
            return
        self._data[key] = (self._clock() + self._ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def discard(self, key: str | None = None) -> None:
        """Forget ``key`` (or everything)."""
        if key is None:
            self._data.clear()
        else:
            self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)
