"""Escalating failure penalties per remote address and per canonical account.

What it does: counts recent definite failures under two kinds of key — the client's network
(an IPv4 address, or the /64 an IPv6 address sits in, since one host usually owns a whole /64) and
the canonical account name — and turns a count into an extra delay the way Dovecot's auth penalty
does: no extra delay for the first failure, then 2 → 4 → 8 → 15 s (doubling, capped at
``penalty_max``). A key's count is forgotten ``window`` seconds after its last failure, and a
success clears the account's count, so nobody is ever locked out for good: the worst case is a
bounded delay.

What it does not do: sleep (the engine awaits the delay per request, so concurrent requests never
stall one another), persist across restarts, or share state between processes.

How it fails: it cannot. Tables are bounded LRUs (``max_entries`` per kind of key); when an
attacker sprays more keys than that, the least recently failed keys are forgotten first, which only
ever shortens a delay. Time comes from an injected monotonic clock.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

PENALTY_INITIAL = 2.0  # seconds after the second failure (Dovecot AUTH_PENALTY_INIT_SECS)
MAX_KEY_LENGTH = 256  # unparsable addresses are keyed by at most this many characters
DEFAULT_MAX_ENTRIES = 100_000


def network_key(remote_ip: str | None) -> str | None:
    """The penalty key of a client address: the IPv4 address, or the IPv6 /64 it belongs to.

    IPv4-mapped IPv6 addresses count as their IPv4 address. An unparsable value (a UNIX socket
    peer name …) is keyed by its first ``MAX_KEY_LENGTH`` characters; None/empty gives None.
    """
    if not remote_ip:
        return None
    try:
        addr = ipaddress.ip_address(remote_ip.split("%", 1)[0])
    except ValueError:
        return "?" + remote_ip[:MAX_KEY_LENGTH]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def delay_for(failures: int, maximum: float) -> float:
    """Extra delay after ``failures`` recent failures: 0, 0, 2, 4, 8, 16… capped at ``maximum``."""
    if failures < 2 or maximum <= 0:
        return 0.0
    exponent = min(failures - 2, 16)  # 2 s * 2**16 is far above any sane cap
    return min(PENALTY_INITIAL * (1 << exponent), maximum)


@dataclass(slots=True)
class _Record:
    failures: int
    last: float


class _Table:
    """A bounded LRU of failure records, oldest failure first."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._data: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def count(self, key: str, now: float, window: float) -> int:
        record = self._data.get(key)
        if record is None:
            return 0
        if now - record.last >= window:
            del self._data[key]
            return 0
        return record.failures

    def add(self, key: str, now: float, window: float) -> int:
        record = self._data.get(key)
        if record is None or now - record.last >= window:
            record = _Record(0, now)
            self._data[key] = record
        record.failures += 1
        record.last = now
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)
        return record.failures

    def clear(self, key: str) -> None:
        self._data.pop(key, None)

    def prune(self, now: float, window: float) -> None:
        """Drop expired records from the old end (records are ordered by last failure)."""
        while self._data:
            key, record = next(iter(self._data.items()))
            if now - record.last < window:
                break
            del self._data[key]


class PenaltyTracker:
    """Failure counts per network and per account, and the delay they earn.

    ``enabled=False`` makes every delay 0 and records nothing (benchmarks, trusted front ends).
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        maximum: float = 15.0,
        window: float = 900.0,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0:
            raise ValueError("penalty window must be positive")
        if max_entries < 1:
            raise ValueError("penalty table size must be at least 1")
        self._enabled = enabled
        self._max = maximum
        self._window = window
        self._clock = clock
        self._networks = _Table(max_entries)
        self._accounts = _Table(max_entries)

    @property
    def enabled(self) -> bool:
        return self._enabled

    def delay(self, remote_ip: str | None, accounts: tuple[str, ...] = ()) -> float:
        """The penalty earned so far by this network or any of these accounts (the larger one)."""
        if not self._enabled:
            return 0.0
        now = self._clock()
        failures = 0
        net = network_key(remote_ip)
        if net is not None:
            failures = self._networks.count(net, now, self._window)
        for account in accounts:
            failures = max(failures, self._accounts.count(account, now, self._window))
        return delay_for(failures, self._max)

    def record_failure(self, remote_ip: str | None, accounts: tuple[str, ...] = ()) -> float:
        """Count one failure and return the delay it earns (from the new counts)."""
        if not self._enabled:
            return 0.0
        now = self._clock()
        failures = 0
        net = network_key(remote_ip)
        if net is not None:
            failures = self._networks.add(net, now, self._window)
        for account in dict.fromkeys(accounts):  # de-duplicated, order kept
            failures = max(failures, self._accounts.add(account, now, self._window))
        self._networks.prune(now, self._window)
        self._accounts.prune(now, self._window)
        return delay_for(failures, self._max)

    def record_success(self, accounts: tuple[str, ...]) -> None:
        """A correct password clears the account's count (not the network's: one valid login
        from a network must not wipe out the record of a password spray from it)."""
        if not self._enabled:
            return
        for account in accounts:
            self._accounts.clear(account)

    def sizes(self) -> tuple[int, int]:
        """(network records, account records) currently held — for tests and metrics."""
        return len(self._networks), len(self._accounts)
