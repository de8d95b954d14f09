"""Escalating failure penalties per remote address and per canonical account.

What it does: counts recent definite failures under two kinds of key — the client's network
(an IPv4 address, or the /64 an IPv6 address sits in, since one host usually owns a whole /64) and
the canonical account name — and turns a count into an extra delay the way Dovecot's auth penalty
does: no extra delay for the first failure, then 2 → 4 → 8 → 15 s (doubling, capped at
``penalty_max``). A key's count is forgotten ``window`` seconds after its last failure, and a
success clears the account's count, so nobody is ever locked out for good: the worst case is a
bounded delay.

One brain across worker processes: ``idsvc serve --workers N`` creates one
:class:`SharedFailureTable` (a fixed-size hash table in shared memory, ``memfd`` + ``mmap``) before
it forks, and each worker's tracker switches to it (:meth:`PenaltyTracker.share`), so an attacker
who reconnects until another worker answers meets the same counts and the same escalating delay.
Keys are stored as 64-bit keyed BLAKE2b fingerprints (the key is random per run, so nobody can
aim collisions); each slot is 24 bytes; a key probes ``PROBE`` slots from its bucket, and when all
are taken by live records the one with the oldest failure is overwritten (which, as with the LRU,
only ever shortens a delay). Updates hold a POSIX record lock (``fcntl.lockf``) on the table, which
the kernel releases when a worker dies holding it, so a crash never wedges the others.

What it does not do: sleep (the engine awaits the delay per request, so concurrent requests never
stall one another) or persist across restarts.

How it fails: it cannot. Tables are bounded (``max_entries`` per kind of key); when an attacker
sprays more keys than that, the least recently failed keys are forgotten first, which only ever
shortens a delay. Time comes from an injected monotonic clock (CLOCK_MONOTONIC is one clock for
every process of the host, so shared records compare across workers).
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import mmap
import os
import secrets
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

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


class FailureTable(Protocol):
    """What the tracker needs from a table of failure records (local LRU or shared memory)."""

    def __len__(self) -> int: ...

    def count(self, key: str, now: float, window: float) -> int: ...

    def add(self, key: str, now: float, window: float) -> int: ...

    def clear(self, key: str) -> None: ...

    def prune(self, now: float, window: float) -> None: ...


_SLOT = struct.Struct("<QdIB3x")  # fingerprint (0 = empty), last failure, failures, kind
PROBE = 16  # slots a key may occupy, from its bucket on
NETWORKS, ACCOUNTS = 1, 2  # kinds of key in a shared table


class SharedFailureTable:
    """A fixed-size table of failure records in shared memory, for processes forked after it is
    created. Two kinds of key (networks, accounts) share it, told apart inside the fingerprint.

    ``slots`` is rounded up to a power of two; memory is ``24 * slots`` bytes.
    """

    def __init__(self, slots: int = 2 * DEFAULT_MAX_ENTRIES) -> None:
        if slots < PROBE:
            raise ValueError(f"a shared penalty table needs at least {PROBE} slots")
        size = 1 << (slots - 1).bit_length()
        self.slots = size
        self._mask = size - 1
        self._key = secrets.token_bytes(16)
        self._fd = os.memfd_create("idsvc-penalty")
        try:
            os.ftruncate(self._fd, size * _SLOT.size)
            self._map = mmap.mmap(self._fd, size * _SLOT.size, mmap.MAP_SHARED)
        except BaseException:
            os.close(self._fd)
            raise
        self._thread_lock = threading.Lock()  # lockf does not exclude threads of one process

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    def view(self, kind: int) -> SharedTableView:
        """The records of one kind of key (1..255)."""
        if not 0 < kind < 256:
            raise ValueError("kind must be 1..255")
        return SharedTableView(self, kind)

    # -- one record, under the lock ------------------------------------------------------------

    def _fingerprint(self, kind: int, key: str) -> int:
        digest = hashlib.blake2b(
            key.encode("utf-8", "surrogateescape"),
            digest_size=8,
            key=self._key,
            person=kind.to_bytes(1, "little"),
        ).digest()
        return int.from_bytes(digest, "little") or 1

    def _lock(self) -> None:
        self._thread_lock.acquire()
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def _unlock(self) -> None:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _find(self, fp: int) -> int:
        """Offset of ``fp``'s slot, or -1 (a C-speed search of the probe window)."""
        size, mm = _SLOT.size, self._map
        needle = fp.to_bytes(8, "little")
        start = (fp & self._mask) * size
        end = start + PROBE * size
        ranges = [(start, min(end, len(mm)))]
        if end > len(mm):  # the window wraps around the end of the table
            ranges.append((0, end - len(mm)))
        for low, high in ranges:
            at = mm.find(needle, low, high)
            while at >= 0:
                if at % size == 0:
                    return at
                at = mm.find(needle, at + 1, high)
        return -1

    def count(self, kind: int, key: str, now: float, window: float) -> int:
        fp = self._fingerprint(kind, key)
        self._lock()
        try:
            offset = self._find(fp)
            if offset < 0:
                return 0
            _fp, last, failures, _kind = _SLOT.unpack_from(self._map, offset)
            if now - last >= window:
                _SLOT.pack_into(self._map, offset, 0, 0.0, 0, 0)
                return 0
            return int(failures)
        finally:
            self._unlock()

    def add(self, kind: int, key: str, now: float, window: float) -> int:
        fp = self._fingerprint(kind, key)
        mm, size, base = self._map, _SLOT.size, fp & self._mask
        self._lock()
        try:
            target, victim, oldest = -1, -1, float("inf")
            for i in range(PROBE):
                offset = ((base + i) & self._mask) * size
                found, last, failures, _kind = _SLOT.unpack_from(mm, offset)
                if found == fp:
                    count = 1 if now - last >= window else failures + 1
                    _SLOT.pack_into(mm, offset, fp, now, count, kind)
                    return int(count)
                if target < 0 and (found == 0 or now - last >= window):
                    target = offset  # free or expired: usable unless the key sits further on
                elif found != 0 and last < oldest:
                    victim, oldest = offset, last
            _SLOT.pack_into(mm, target if target >= 0 else victim, fp, now, 1, kind)
            return 1
        finally:
            self._unlock()

    def clear(self, kind: int, key: str) -> None:
        fp = self._fingerprint(kind, key)
        if self._find(fp) < 0:
            return  # the common case (a success with no failure on record): no lock taken
        self._lock()
        try:
            offset = self._find(fp)
            if offset >= 0:
                _SLOT.pack_into(self._map, offset, 0, 0.0, 0, 0)
        finally:
            self._unlock()

    def used(self, kind: int) -> int:
        """Slots holding a record of ``kind``, expired or not (a full scan: for tests)."""
        return sum(
            1 for fp, _last, _failures, k in _SLOT.iter_unpack(self._map) if fp and k == kind
        )


class SharedTableView:
    """One kind of key of a :class:`SharedFailureTable`, as a :class:`FailureTable`."""

    def __init__(self, table: SharedFailureTable, kind: int) -> None:
        self._table = table
        self._kind = kind

    def __len__(self) -> int:
        return self._table.used(self._kind)

    def count(self, key: str, now: float, window: float) -> int:
        return self._table.count(self._kind, key, now, window)

    def add(self, key: str, now: float, window: float) -> int:
        return self._table.add(self._kind, key, now, window)

    def clear(self, key: str) -> None:
        self._table.clear(self._kind, key)

    def prune(self, now: float, window: float) -> None:
        """Nothing to do: expired slots are reused in place."""


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
        self._networks: FailureTable = _Table(max_entries)
        self._accounts: FailureTable = _Table(max_entries)
        self.shared = False

    @property
    def enabled(self) -> bool:
        return self._enabled

    def share(self, table: SharedFailureTable) -> None:
        """Keep the counts in ``table`` from now on (one brain for every worker process).
        Counts already held in this process are not carried over (call it before serving)."""
        self._networks = table.view(NETWORKS)
        self._accounts = table.view(ACCOUNTS)
        self.shared = True

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
