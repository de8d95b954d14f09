"""LDAP servers, connections and the thread-pool path (writes, listings, connects).

* ``Servers``: the configured URIs in priority order with a "skip until" mark per server that
  failed (failover); thread-safe.
* ``open_connection`` / ``connect``: make one bound python-ldap connection (TLS options, StartTLS,
  service bind) to the first server not marked down. Blocking: call them from a worker thread.
  A refused service bind is ``TemporaryFailure`` (logged, no retry on other servers); any other
  LDAP error marks that server down and tries the next one.
* ``ThreadPool``: one identity's blocking operations in a bounded executor whose threads each own
  one connection (thread-local). A read that fails with a failover error is retried once on a
  fresh connection; an idle connection the server closed is noticed before use and replaced.

The asynchronous read path (``aio.py``) uses ``Servers`` and ``connect`` but no thread here
except for connecting. Never logged: passwords and bind credentials.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ldap

from idsvc.config import LdapSettings
from idsvc.directory.ldap.errors import FAILOVER, describe
from idsvc.errors import TemporaryFailure

log = logging.getLogger("idsvc.directory.ldap")

T = TypeVar("T")
_NONE: frozenset[str] = frozenset()


class Servers:
    """The configured URIs in priority order, with a 'skip until' mark per failed server."""

    def __init__(self, uris: tuple[str, ...], retry_after: float) -> None:
        self._uris = uris
        self._retry_after = retry_after
        self._down: dict[str, float] = {}
        self._until = 0.0  # the latest "skip until" mark: nothing is down after it
        self._lock = threading.Lock()

    def candidates(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            return [u for u in self._uris if self._down.get(u, 0.0) <= now]

    def shunned(self) -> frozenset[str]:
        """The servers marked down now, when another server is up (their open connections
        should not get new requests: another server can take them); else empty. O(1) when
        nothing is marked down (the usual case, asked once per request)."""
        now = time.monotonic()
        if now >= self._until or len(self._uris) < 2:
            return _NONE
        with self._lock:
            down = frozenset(u for u in self._uris if self._down.get(u, 0.0) > now)
        return down if len(down) < len(self._uris) else _NONE

    def others_up(self, uri: str) -> bool:
        """True when a server other than ``uri`` is not marked down (a retry can go there)."""
        now = time.monotonic()
        with self._lock:
            return any(u != uri and self._down.get(u, 0.0) <= now for u in self._uris)

    def mark_down(self, uri: str, why: str) -> None:
        with self._lock:
            first = self._down.get(uri, 0.0) <= time.monotonic()
            self._down[uri] = time.monotonic() + self._retry_after
            self._until = max(self._until, self._down[uri])
        if first:
            log.warning("LDAP server %s marked down for %.1fs: %s", uri, self._retry_after, why)

    def mark_up(self, uri: str) -> None:
        with self._lock:
            self._down.pop(uri, None)


@dataclass(eq=False)
class Conn:
    """One python-ldap connection and the server it goes to."""

    ldo: Any
    uri: str
    uses: int = 0


@dataclass(frozen=True)
class Identity:
    """Who a pool's connections bind as (an empty DN: anonymous until a user binds)."""

    name: str
    dn: str
    password: str | None = field(repr=False)


def open_connection(uri: str, settings: LdapSettings, identity: Identity) -> Any:
    """A new connection to ``uri``: options, TLS, StartTLS and the identity's bind (blocking)."""
    s = settings
    ldo = ldap.initialize(uri)
    try:
        ldo.set_option(ldap.OPT_PROTOCOL_VERSION, ldap.VERSION3)
        ldo.set_option(ldap.OPT_REFERRALS, 0)
        ldo.set_option(ldap.OPT_NETWORK_TIMEOUT, s.connect_timeout)
        ldo.set_option(ldap.OPT_TIMEOUT, s.timeout)
        ldo.timeout = s.timeout  # python-ldap's *_s methods pass it to result()
        if s.starttls or uri.startswith("ldaps://"):
            require = ldap.OPT_X_TLS_DEMAND if s.verify_tls else ldap.OPT_X_TLS_NEVER
            ldo.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, require)
            ldo.set_option(ldap.OPT_X_TLS_PROTOCOL_MIN, 0x303)  # TLS 1.2
            if s.ca_file is not None:
                ldo.set_option(ldap.OPT_X_TLS_CACERTFILE, str(s.ca_file))
            ldo.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # must come after the TLS options
        if s.starttls and uri.startswith("ldap://"):
            ldo.start_tls_s()
        if identity.dn:  # never with an empty password (checked by LdapDirectory)
            ldo.simple_bind_s(identity.dn, identity.password)
        # without a DN the connection stays anonymous (the binder: its first operation is
        # a user's bind, and a failure there is handled like any other)
    except BaseException:
        with contextlib.suppress(ldap.LDAPError):
            ldo.unbind_ext_s()
        raise
    return ldo


def connect(
    servers: Servers,
    settings: LdapSettings,
    identity: Identity,
    opener: Callable[[str, LdapSettings, Identity], Any] = open_connection,
) -> Conn:
    """A connection to the first server not marked down (blocking); TemporaryFailure if none."""
    candidates = servers.candidates()
    if not candidates:
        raise TemporaryFailure("no LDAP server available (all marked down)")
    last = "no server tried"
    for uri in candidates:
        try:
            conn = Conn(opener(uri, settings, identity), uri)
        except ldap.INVALID_CREDENTIALS as exc:
            log.error("LDAP %s identity was refused by %s", identity.name, uri)
            raise TemporaryFailure(f"LDAP {identity.name} bind refused") from exc
        except ldap.LDAPError as exc:
            last = describe(exc)
            servers.mark_down(uri, last)
            continue
        servers.mark_up(uri)
        return conn
    raise TemporaryFailure(f"no LDAP server reachable: {last}")


def closed_by_peer(ldo: Any) -> bool:
    """True when an idle connection's socket shows EOF/reset (the server closed it)."""
    try:
        fd = ldo.get_option(ldap.OPT_DESC)
    except ldap.LDAPError:
        return True
    if not isinstance(fd, int) or fd < 0:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], 0)
        if not readable:
            return False
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class ThreadPool:
    """One identity's connections: a bounded executor whose threads each own one connection."""

    def __init__(
        self, identity: Identity, settings: LdapSettings, servers: Servers, size: int
    ) -> None:
        self.identity = identity
        self._settings = settings
        self._servers = servers
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=size, thread_name_prefix=f"ldap-{identity.name}"
        )
        self._local = threading.local()
        self._conns: set[Conn] = set()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[[Any], T], *, retry: bool) -> concurrent.futures.Future[T]:
        return self._executor.submit(self._call, fn, retry)

    def _call(self, fn: Callable[[Any], T], retry: bool) -> T:
        for attempt in (1, 2):
            conn = self._get()
            try:
                result = fn(conn.ldo)
            except FAILOVER as exc:
                self._drop(conn)
                self._servers.mark_down(conn.uri, describe(exc))
                if not retry or attempt == 2:
                    raise
                continue
            conn.uses += 1
            return result
        raise AssertionError("unreachable")

    def _get(self) -> Conn:
        if self._closed:
            raise TemporaryFailure("LDAP directory is closed")
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is not None and conn.uses and closed_by_peer(conn.ldo):
            self._drop(conn)
            conn = None
        if conn is None:
            conn = connect(self._servers, self._settings, self.identity)
            self._local.conn = conn
            with self._lock:
                self._conns.add(conn)
        return conn

    def _drop(self, conn: Conn) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            self._conns.discard(conn)
        with contextlib.suppress(ldap.LDAPError):
            conn.ldo.unbind_ext_s()

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            with contextlib.suppress(ldap.LDAPError):
                conn.ldo.unbind_ext_s()
