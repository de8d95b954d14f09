"""Listening sockets for the asyncio wire servers, a per-server connection limiter, peer names.

What it does:

* :func:`bind_unix` creates a UNIX stream socket at ``SocketSettings.path``: the parent directory
  is created (0755) when missing; an existing path is replaced only when it is a socket that
  nobody answers on (a stale leftover of a crashed daemon); the explicit ``mode``, ``owner`` and
  ``group`` are applied after ``bind()`` and *before* ``listen()``, so no client can connect
  through a socket with the wrong permissions.
* :func:`bind_tcp` binds ``host:port`` (``[v6]:port`` too; port 0 picks a free port, readable as
  ``BoundSocket.port`` for tests).
* :class:`ConnectionSlots` is every listener's admission control: at most ``limit``
  connections; when full, a newcomer *evicts* the cheapest connection to drop (the oldest
  that has not completed its request or handshake, then the least recently active idle one;
  never one with work in flight) instead of being refused, and no single peer holds more
  than ``limit - reserve`` slots. A listener reports each connection's :class:`Standing`
  through its :class:`Slot`. A refused newcomer is closed without a byte (every
  Postfix-facing protocol reads a close as "temporary failure").
* :func:`peer_of` names the peer for logs: ``pid/uid/gid`` from ``SO_PEERCRED`` on UNIX sockets,
  ``ip:port`` on TCP; :func:`peer_key` reduces it to the identity the per-peer share counts.
* :func:`stream_transport` checks a transport by behaviour (uvloop's are not
  ``asyncio.Transport`` subclasses). Back-pressure on a connection is the server's business:
  ``pause_reading()`` while its in-flight bound is reached (see the Dovecot server).

What it does not do: run the servers, read or write protocol bytes, apply timeouts (each server
does all three), or trust anything because of the peer's identity (rule 9; the per-peer share
is fairness, not trust).

How it fails: every start-up problem (address in use, live socket at the path, a non-socket file at
the path, unknown owner or group, path too long, permission denied) raises :class:`ListenError`
with the path or address in the message. Nothing here raises while serving.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import socket
import stat
import struct
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from idsvc.config import SocketSettings
from idsvc.errors import IdsvcError

log = logging.getLogger(__name__)

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH = 107
DEFAULT_BACKLOG = 128
# how long the stale-socket probe waits for a connect() on an existing path
_PROBE_TIMEOUT = 0.5


class ListenError(IdsvcError):
    """A listening socket could not be created; the message names the path or address."""


@dataclass(slots=True)
class BoundSocket:
    """A bound (and listening) socket, ready for ``loop.create_(unix_)server(sock=...)``.

    ``path`` is set for UNIX sockets, ``host``/``port`` for TCP. :meth:`remove_path` deletes the
    socket file only if the path still refers to the file this socket created (another process
    may have replaced it since).
    """

    sock: socket.socket
    path: Path | None = None
    host: str | None = None
    port: int | None = None
    _ident: tuple[int, int] | None = field(default=None, repr=False)

    def describe(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"

    def remove_path(self) -> None:
        if self.path is None or self._ident is None:
            return
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._ident:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _resolve_uid(owner: str | None) -> int:
    if owner is None:
        return -1
    if owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ListenError(f"unknown socket owner {owner!r}") from None


def _resolve_gid(group: str | None) -> int:
    if group is None:
        return -1
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ListenError(f"unknown socket group {group!r}") from None


def _ensure_parent(path: Path) -> None:
    parent = path.parent
    if parent.is_dir():
        return
    try:
        parent.mkdir(parents=True, mode=0o755)
        os.chmod(parent, 0o755)  # noqa: S103 - the brief's mode; mkdir's is filtered by umask
    except FileExistsError:
        if not parent.is_dir():
            raise ListenError(f"{parent} exists and is not a directory") from None
    except OSError as exc:
        raise ListenError(f"cannot create directory {parent}: {exc.strerror}") from exc


def _clear_stale(path: Path) -> None:
    """Remove ``path`` if it is a socket nobody listens on; refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_PROBE_TIMEOUT)
    try:
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # stale: nothing answers
    except TimeoutError:
        # a full backlog or a hung owner: someone is there, leave it alone
        raise ListenError(f"{path} is a live socket (connect timed out)") from None
    except OSError as exc:
        raise ListenError(f"cannot probe existing socket {path}: {exc.strerror}") from exc
    else:
        raise ListenError(f"{path} is in use by another server")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    log.info("removed stale socket %s", path)


def bind_unix(settings: SocketSettings, *, backlog: int = DEFAULT_BACKLOG) -> BoundSocket:
    """Create, secure and listen on the UNIX stream socket described by ``settings``."""
    path = Path(settings.path)
    if not path.is_absolute():
        raise ListenError(f"socket path must be absolute: {path}")
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise ListenError(f"socket path longer than {MAX_UNIX_PATH} bytes: {path}")
    uid, gid = _resolve_uid(settings.owner), _resolve_gid(settings.group)
    _ensure_parent(path)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(os.fspath(path))
        except OSError as exc:
            raise ListenError(f"cannot bind {path}: {exc.strerror}") from exc
        st = os.lstat(path)
        bound = BoundSocket(sock, path=path, _ident=(st.st_dev, st.st_ino))
        try:
            if uid != -1 or gid != -1:
                os.chown(path, uid, gid, follow_symlinks=False)
            os.chmod(path, settings.mode)
        except OSError as exc:
            bound.remove_path()
            raise ListenError(f"cannot set owner/mode of {path}: {exc.strerror}") from exc
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return bound


def parse_host_port(text: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``; raises ListenError on anything else."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or len(port_text) > 5:
        raise ListenError(f"expected host:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ListenError(f"IPv6 addresses need brackets: {text!r}")
    port = int(port_text)
    if port > 65535:
        raise ListenError(f"port out of range in {text!r}")
    return host, port


def bind_tcp(address: str, *, backlog: int = DEFAULT_BACKLOG) -> BoundSocket:
    """Bind and listen on ``host:port`` (port 0: the kernel picks; read it from ``.port``)."""
    host, port = parse_host_port(address)
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
        )
    except socket.gaierror as exc:
        raise ListenError(f"cannot resolve {address!r}: {exc.strerror}") from exc
    family, socktype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            why = "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ListenError(f"cannot bind {address}: {why}") from exc
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    return BoundSocket(sock, host=bound_host, port=bound_port)


class Standing(Enum):
    """What a connection is doing, as far as eviction is concerned."""

    UNPROVEN = "unproven"  # no complete request (saslauthd) / handshake (Dovecot) yet
    IDLE = "idle"  # proven, nothing in flight: legitimately idle, evictable
    BUSY = "busy"  # work in flight (a request being decided): never evicted


class Evictable(Protocol):
    """A connection the slot table may close to make room for a newcomer."""

    def evict(self) -> None:
        """Close now, without a reply (every Postfix-facing socket reads that as "temporary
        failure"). The slot is already released when this is called; releasing it again from
        the connection's own close path is a no-op."""


class Slot:
    """One connection's place in a :class:`ConnectionSlots`; the connection reports its
    standing through :meth:`busy` / :meth:`idle` and gives the slot back with :meth:`release`
    (idempotent). All O(1)."""

    __slots__ = ("_bucket", "_table", "conn", "since", "standing")

    def __init__(
        self, table: ConnectionSlots, conn: Evictable, bucket: _Bucket, now: float
    ) -> None:
        self._table = table
        self._bucket = bucket
        self.conn = conn
        self.standing: Standing | None = Standing.UNPROVEN
        self.since = now  # admission time; for IDLE: the last activity

    def busy(self) -> None:
        """Work is in flight: not evictable until :meth:`idle`."""
        if self.standing is not None and self.standing is not Standing.BUSY:
            self._table._move(self, Standing.BUSY)

    def idle(self) -> None:
        """Proven and nothing in flight; also call it on activity (refreshes recency)."""
        if self.standing is not None:
            self._table._move(self, Standing.IDLE)

    def release(self) -> None:
        """The connection is closed: give the slot back (only the first call counts)."""
        if self.standing is not None:
            self._table._drop(self)


class _Bucket:
    """The slots of one peer (or of the whole table): evictable ones in eviction order."""

    __slots__ = ("count", "idle", "key", "unproven")

    def __init__(self, key: Hashable = None) -> None:
        self.key = key
        self.count = 0
        self.unproven: dict[Slot, None] = {}  # insertion order = admission order
        self.idle: dict[Slot, None] = {}  # insertion order = least recently active first

    def victim(self) -> Slot | None:
        """The oldest unproven connection, else the least recently active idle one; never a
        busy one."""
        return next(iter(self.unproven), None) or next(iter(self.idle), None)


class ConnectionSlots:
    """Admission for one listener: at most ``limit`` connections, eviction instead of refusal.

    Usage, from a server: ``slot = slots.admit(conn, peer_key(conn_socket_or_transport))``;
    ``None`` means close the newcomer at once without a byte. Otherwise the connection calls
    ``slot.busy()`` while it has work in flight, ``slot.idle()`` when it is proven and has
    nothing in flight (and on activity while idle), and ``slot.release()`` when it closes.
    A connection starts UNPROVEN; what "proven" means is the protocol's business (saslauthd:
    the mandatory request fields are in; Dovecot: the VERSION/CPID handshake is done).

    The rule, when a newcomer cannot get a free slot (all O(1)):

    * **Eviction, cheapest first**: the oldest unproven connection (it has had the longest to
      finish its request or handshake and has not), else the least recently active idle one.
      A busy connection (request in flight) is never evicted. So a flood of silent or
      half-written connections churns among itself: a real client is evicted only if
      ``limit - reserve`` newer connections arrive before its first request or handshake is
      in (a local client writes it right after connecting), and proven idle connections
      (Postfix's, Dovecot's) are not touched while unproven ones remain. Only when every slot
      is busy is the newcomer refused.
    * **Reserve**: no single peer (a UID on a UNIX socket, an IP address on TCP; see
      :func:`peer_key`) holds more than ``limit - reserve`` slots. A peer at its share gets a
      slot only by evicting one of its *own* connections (same order), so one peer's flood
      leaves ``reserve`` slots that other peers get without evicting anything.

    Counters: ``active``, ``refused`` (newcomers closed), ``evicted`` (connections closed to
    make room). Under a flood, evictions and refusals are logged as one WARNING per
    ``REPORT_INTERVAL`` with the counts (``name`` says which listener), never one line per
    connection: a flood must not turn into a log flood.
    """

    __slots__ = (
        "_all",
        "_clock",
        "_peers",
        "_reported",
        "_since_report",
        "evicted",
        "limit",
        "name",
        "refused",
        "reserve",
    )

    REPORT_INTERVAL = 10.0

    def __init__(
        self,
        limit: int,
        *,
        reserve: int = 0,
        name: str = "listener",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("connection limit must be at least 1")
        if not 0 <= reserve < limit:
            raise ValueError("the connection reserve must be at least 0 and below the limit")
        self.limit = limit
        self.reserve = reserve
        self.name = name
        self.refused = 0
        self.evicted = 0
        self._clock = clock
        self._reported = -self.REPORT_INTERVAL  # the first eviction or refusal is logged at once
        self._since_report = (0, 0)  # (evicted, refused) counts at the last report
        self._all = _Bucket()
        self._peers: dict[Hashable, _Bucket] = {}

    @property
    def active(self) -> int:
        return self._all.count

    def standing_counts(self) -> dict[Standing, int]:
        """How many connections are in each standing (for tests and diagnostics)."""
        unproven, idle = len(self._all.unproven), len(self._all.idle)
        busy = self._all.count - unproven - idle
        return {Standing.UNPROVEN: unproven, Standing.IDLE: idle, Standing.BUSY: busy}

    def admit(self, conn: Evictable, peer: Hashable = None) -> Slot | None:
        """A slot for ``conn`` (UNPROVEN), evicting one connection if needed; None: refuse."""
        now = self._clock()
        bucket = self._peers.get(peer)
        if bucket is not None and bucket.count >= self.limit - self.reserve:
            if not self._evict(bucket.victim()):
                return None
        elif self._all.count >= self.limit and not self._evict(self._all.victim()):
            return None
        bucket = self._peers.get(peer)  # the eviction may have emptied (and dropped) it
        if bucket is None:
            bucket = self._peers[peer] = _Bucket(peer)
        slot = Slot(self, conn, bucket, now)
        for b in (self._all, bucket):
            b.count += 1
            b.unproven[slot] = None
        return slot

    def _evict(self, victim: Slot | None) -> bool:
        if victim is None:
            self.refused += 1
        else:
            self._drop(victim)
            self.evicted += 1
            try:
                victim.conn.evict()
            except Exception:  # a bug in one connection's close must not block admission
                log.exception("%s: evicting a connection failed", self.name)
        self._report()
        return victim is not None

    def _report(self) -> None:
        now = self._clock()
        if now - self._reported < self.REPORT_INTERVAL:
            return
        evicted = self.evicted - self._since_report[0]
        refused = self.refused - self._since_report[1]
        log.warning(
            "%s: all %d connection slots taken (reserve %d per other peer): %d idle or "
            "incomplete connection(s) evicted, %d newcomer(s) refused (every slot busy) "
            "since the last report",
            self.name,
            self.limit,
            self.reserve,
            evicted,
            refused,
        )
        self._reported = now
        self._since_report = (self.evicted, self.refused)

    def _unlink(self, slot: Slot) -> None:
        standing = slot.standing
        for b in (self._all, slot._bucket):
            if standing is Standing.UNPROVEN:
                del b.unproven[slot]
            elif standing is Standing.IDLE:
                del b.idle[slot]

    def _move(self, slot: Slot, standing: Standing) -> None:
        self._unlink(slot)
        slot.standing = standing
        if standing is Standing.IDLE:
            slot.since = self._clock()
            self._all.idle[slot] = None
            slot._bucket.idle[slot] = None

    def _drop(self, slot: Slot) -> None:
        self._unlink(slot)
        slot.standing = None
        bucket = slot._bucket
        self._all.count -= 1
        bucket.count -= 1
        if bucket.count == 0:
            self._peers.pop(bucket.key, None)


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end, for logs only."""

    ip: str | None = None
    port: int | None = None
    pid: int | None = None
    uid: int | None = None
    gid: int | None = None

    @property
    def key(self) -> Hashable:
        """The identity :class:`ConnectionSlots` counts per peer: UID (UNIX), IP (TCP)."""
        if self.uid is not None:
            return ("uid", self.uid)
        if self.ip is not None:
            return ("ip", self.ip)
        return None

    def __str__(self) -> str:
        if self.ip is not None:
            return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"
        if self.pid is not None:
            return f"pid={self.pid} uid={self.uid} gid={self.gid}"
        return "unknown"


_UCRED = struct.Struct("3i")


class HasExtraInfo(Protocol):
    """A transport or a stream writer: anything that answers ``get_extra_info``."""

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


def peer_of(conn: HasExtraInfo) -> Peer:
    """Peer credentials (UNIX, via SO_PEERCRED) or address (TCP) of a connection."""
    sock = conn.get_extra_info("socket")
    if sock is None:
        return Peer()
    try:
        if sock.family == socket.AF_UNIX:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            pid, uid, gid = _UCRED.unpack(raw)
            return Peer(pid=pid, uid=uid, gid=gid)
        peer = conn.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            return Peer(ip=str(peer[0]), port=int(peer[1]))
    except (OSError, struct.error):
        pass
    return Peer()


def peer_key(conn: HasExtraInfo) -> Hashable:
    """Who holds a connection, for :class:`ConnectionSlots`' per-peer share: ``("uid", n)`` on
    a UNIX socket (SO_PEERCRED), ``("ip", address)`` on TCP, None when unknown. Fairness
    only: nothing is trusted or refused because of it (rule 9)."""
    return peer_of(conn).key


@runtime_checkable
class StreamTransport(Protocol):
    """What the protocol servers use of a stream transport. A behaviour check, not a class
    check: uvloop's transports do all this but are not ``asyncio.Transport`` subclasses."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def is_closing(self) -> bool: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


def stream_transport(transport: object) -> StreamTransport:
    """``transport`` as a :class:`StreamTransport`; TypeError if it lacks one of its methods."""
    if not isinstance(transport, StreamTransport):
        raise TypeError(f"{type(transport).__name__} is not a stream transport")
    return transport
