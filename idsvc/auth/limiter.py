"""Rate limiters of the auth core: at most N events per window per key, in bounded memory.

Two counters with one interface (``take(key)`` → None when allowed, else the seconds to wait;
``retry_after(key)``; ``hit(key)``; ``forget(key)``):

* :class:`SlidingLimiter` — exact: keeps the time of each of the last ``limit`` events per key.
  For small limits (API token failures, ``/auth/test`` calls).
* :class:`WindowCounter` — the sliding-window *estimate* (two fixed windows, the previous one
  weighted by how much of it still overlaps the sliding window): three numbers per key whatever
  the limit, so a limit of thousands per day costs the same memory as one of five. For send-rate
  limits (the Postfix policy service). It may allow up to one window's worth of rounding early
  or late at window edges, never unboundedly more.

Both keep at most ``max_keys`` keys, forgetting the least recently seen first (which can only
ever let a forgotten key start over, never block anyone longer). Time comes from an injected
monotonic clock. Not shared between processes (like ``penalty.py``).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_TRACKED_CLIENTS = 10_000


class SlidingLimiter:
    """At most ``limit`` events per ``window`` seconds per key; bounded number of keys (the
    least recently seen key is forgotten first). ``clock`` is injectable for tests."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._clock = clock

    def _recent(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            hits = deque()
            self._hits[key] = hits
            while len(self._hits) > self._max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def retry_after(self, key: str) -> int | None:
        """Seconds to wait when ``key`` is over its limit, else None."""
        now = self._clock()
        hits = self._recent(key, now)
        if len(hits) < self.limit:
            return None
        return max(1, math.ceil(hits[0] + self.window - now))

    def hit(self, key: str) -> None:
        now = self._clock()
        hits = self._recent(key, now)
        hits.append(now)
        if len(hits) > self.limit:
            hits.popleft()

    def take(self, key: str) -> int | None:
        """Count one event unless over the limit; returns the wait when refused."""
        wait = self.retry_after(key)
        if wait is None:
            self.hit(key)
        return wait

    def forget(self, key: str) -> None:
        self._hits.pop(key, None)


class _Windows:
    """Counts of one key: the current fixed window (start, count) and the previous one's count."""

    __slots__ = ("current", "previous", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.current = 0
        self.previous = 0


class WindowCounter:
    """At most about ``limit`` events per sliding ``window`` seconds per key (see the module
    docstring); ``max_keys`` keys at most."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("limit, window and max_keys must be positive")
        self.limit = limit
        self.window = window
        self._max_keys = max_keys
        self._clock = clock
        self._keys: OrderedDict[str, _Windows] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def _roll(self, key: str, now: float, create: bool) -> _Windows | None:
        counts = self._keys.get(key)
        if counts is None:
            if not create:
                return None
            counts = _Windows(now - (now % self.window))
            self._keys[key] = counts
            while len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
            return counts
        self._keys.move_to_end(key)
        elapsed = int((now - counts.start) // self.window)
        if elapsed >= 1:
            counts.previous = counts.current if elapsed == 1 else 0
            counts.current = 0
            counts.start += elapsed * self.window
        return counts

    def _estimate(self, counts: _Windows, now: float) -> float:
        overlap = 1.0 - (now - counts.start) / self.window
        return counts.previous * overlap + counts.current

    def retry_after(self, key: str) -> int | None:
        """Seconds to wait when one more event would exceed the limit, else None."""
        now = self._clock()
        counts = self._roll(key, now, create=False)
        if counts is None or self._estimate(counts, now) + 1 <= self.limit:
            return None
        if counts.previous and counts.current < self.limit:
            # the estimate falls as the previous window slides out of view
            needed = (counts.previous * (1.0 - (now - counts.start) / self.window) + counts.current
                      + 1 - self.limit) / counts.previous  # fmt: skip
            return max(1, math.ceil(needed * self.window))
        return max(1, math.ceil(counts.start + self.window - now))

    def hit(self, key: str) -> None:
        counts = self._roll(key, self._clock(), create=True)
        assert counts is not None
        counts.current += 1

    def take(self, key: str) -> int | None:
        """Count one event unless over the limit; returns the wait when refused."""
        wait = self.retry_after(key)
        if wait is None:
            self.hit(key)
        return wait

    def forget(self, key: str) -> None:
        self._keys.pop(key, None)
