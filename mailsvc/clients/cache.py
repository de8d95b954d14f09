"""A bounded TTL cache of definite lookup answers (socketmap ``OK <data>`` and ``NOTFOUND``).

What it does: remembers the answer to ``(map, key)`` for ``ttl`` seconds, "not found" too (so a
flood of unknown recipients costs one round trip per address and TTL, as in idsvc's own lookup
caches); keeps at most ``max_entries`` answers, evicting the least recently stored first.

What it does not do: cache a failure (``TEMP``, a timeout, a lost connection: those must recover
at once and are never an answer), hear about changes (mailsvc is another process: a change made
through idsvc reaches mailsvc at most ``ttl`` seconds later; idsvc drops its own caches at once),
or share anything between processes.

How it fails: it cannot; a ``ttl`` or ``max_entries`` of 0 disables it. Time comes from an
injected clock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

MISS: Final = object()  # what :meth:`LookupCache.get` gives when nothing fresh is cached


class LookupCache:
    """``(map, key)`` → ``str`` (found) or ``None`` (not found), for ``ttl`` seconds."""

    def __init__(
        self, *, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = max(0.0, ttl)
        self.max_entries = max(0, max_entries)
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, str | None]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, mapname: str, key: str) -> str | object | None:
        """The cached answer, or :data:`MISS` when there is none or it is older than ``ttl``."""
        entry = self._entries.get((mapname, key))
        if entry is None:
            return MISS
        if self._clock() >= entry[0]:
            del self._entries[(mapname, key)]
            return MISS
        return entry[1]

    def put(self, mapname: str, key: str, value: str | None) -> None:
        if not self.enabled:
            return
        entries = self._entries
        entries.pop((mapname, key), None)
        entries[(mapname, key)] = (self._clock() + self.ttl, value)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
