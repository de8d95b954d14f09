"""Asynchronous LDAP operations on the event loop: point searches and simple binds, no threads.

How it works. python-ldap's asynchronous calls (``search_ext``, ``simple_bind``) send a request
and return its message id without waiting. Each connection's socket is registered with
``loop.add_reader``; when it is readable, ``_drain`` calls ``result4(RES_ANY, all=0, timeout=0)``
until it returns nothing (at most ``MAX_DRAIN`` messages, then it reschedules itself: libldap may
still hold decoded data, e.g. a TLS record with several messages) and hands every message to the
request with that message id. ``all=0`` matters: with ``all=1`` a poll that read only a search
entry returns "nothing yet" although more is buffered, so "nothing" would not mean "drained".
Several requests share one connection (LDAP multiplexes by message id): ``per_conn`` in flight on
a reader connection, exactly one on a binder connection (RFC 4511 §4.2.1: nothing else may be in
flight during a bind). Up to ``size`` connections are opened lazily; a new one is started in the
background as soon as every existing one is busy.

Why this is safe on the event loop: with a zero timeout libldap's ``wait4msg`` checks its queue,
then polls the socket with a zero timeout and reads at most what is there; sockets are switched to
non-blocking mode after connecting, so a partial message makes libldap return "nothing yet" rather
than wait (measured: an empty poll costs ~1.3 µs). The request is sent from the loop thread too;
on a non-blocking socket a full send buffer cannot block the loop (libldap keeps the rest queued).
Each connection is used by the loop thread only; connecting (TCP, TLS, service bind) runs in an
executor with a thread per connection being opened, since it may block for ``connect_timeout``.

Failure handling (same rules as the thread pools in ``pool.py``):

* every request has a deadline (``timeout`` seconds, or the caller's, which is never later); on
  expiry its message id is abandoned, the server is marked down, the connection retired (no new
  requests; closed once its last request ends) and the request fails with ``ConnectionLost``
  whose ``timed_out`` is True;
* a connection error (EOF, reset, TLS failure) fails every request in flight on it with
  ``ConnectionLost``, marks the server down if requests were in flight, closes the connection,
  and the next request connects again. A connection idle for more than ``IDLE_RECHECK`` is
  polled before reuse, so one the server closed while idle (restart, idle timeout) is replaced
  without marking the server down;
* BUSY / UNAVAILABLE answers count as connection failures (failover);
* any other LDAP result error is raised as the python-ldap exception for the caller to map.

``ConnectionLost`` (with the server's ``uri``) is the caller's cue to retry once where that can
help: after a lost connection, or after a timeout when another server is up (``avoid`` then
keeps the retry off every connection to the slow server). The raw
``_ldap.LDAP`` object (``ldo._l``) is used on the hot path: python-ldap's wrappers add a lock and
control decoding that cost more than the call itself (3-5 µs per poll); connections are never
shared between threads, so the lock protects nothing here. Never logged: passwords, bind DNs'
credentials.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import select
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import ldap

from idsvc.config import LdapSettings
from idsvc.directory.filters import Filter
from idsvc.directory.ldap.errors import FAILOVER, ReferralSeen, describe
from idsvc.directory.ldap.pool import Identity, Servers, connect, open_connection
from idsvc.directory.ldap.search import NO_ATTRS, SCOPE_BASE, SCOPE_SUBTREE
from idsvc.directory.mapping import Entry
from idsvc.errors import AmbiguousEntry, TemporaryFailure

log = logging.getLogger("idsvc.directory.ldap")
T = TypeVar("T")

MAX_DRAIN = 256  # messages handled per readiness callback before yielding to the loop
# An idle connection is polled for EOF before reuse once it has been idle this long (seconds).
# Sooner than that the loop has just run, and its add_reader callback would have seen the EOF.
IDLE_RECHECK = 0.05
_RES_ANY = ldap.RES_ANY
_RES_SEARCH_ENTRY = ldap.RES_SEARCH_ENTRY
_RES_SEARCH_REFERENCE = ldap.RES_SEARCH_REFERENCE
_SLOW_DOWN = (ldap.BUSY, ldap.UNAVAILABLE)


class ConnectionLost(Exception):
    """The request's connection failed or timed out: nothing is known about the result and
    the read may be retried on a fresh connection. ``timed_out``: the server did not answer in
    time (its other connections are probably as slow); ``uri``: the server."""

    def __init__(self, message: str, *, uri: str = "", timed_out: bool = False) -> None:
        super().__init__(message)
        self.uri = uri
        self.timed_out = timed_out


class _Request:
    """One request in flight: its future, deadline and the search entries received so far."""

    __slots__ = ("deadline", "entries", "future", "limit", "overflow", "referral")

    def __init__(self, future: asyncio.Future[_Request], deadline: float, limit: int) -> None:
        self.future = future
        self.deadline = deadline
        self.limit = limit
        self.entries: list[Entry] = []
        self.overflow = False
        self.referral = False


class AioConn:
    """One connection driven by the loop: message id → request (deadlines may differ)."""

    __slots__ = (
        "abandon",
        "alive",
        "bind",
        "fd",
        "idle_since",
        "ldo",
        "loop",
        "pending",
        "result",
        "retired",
        "search",
        "timer",
        "uri",
    )

    def __init__(self, ldo: Any, uri: str, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        raw = ldo._l  # the C object; see the module docstring
        self.ldo = ldo
        self.uri = uri
        self.fd = fd
        self.loop = loop
        self.search: Callable[..., int] = raw.search_ext
        self.bind: Callable[..., int] = raw.simple_bind
        self.result: Callable[..., Any] = raw.result4
        self.abandon: Callable[..., Any] = raw.abandon_ext
        self.pending: dict[int, _Request] = {}
        self.alive = True
        self.retired = False
        self.idle_since = 0.0  # loop time when its last request ended (or it was opened)
        self.timer: asyncio.TimerHandle | None = None


def _open_nonblocking(uri: str, settings: LdapSettings, identity: Identity) -> Any:
    """``open_connection`` plus: the socket really open, and switched to non-blocking mode."""
    ldo = open_connection(uri, settings, identity)
    try:
        if not identity.dn:
            # libldap connects lazily; an anonymous connection has not talked to the server yet.
            # Read the root DSE (no attributes) so the socket exists before the loop sees it.
            try:
                ldo.search_ext_s("", SCOPE_BASE, "(objectClass=*)", NO_ATTRS)
            except FAILOVER:
                raise
            except ldap.LDAPError:
                pass  # refused or not found: the connection is open all the same
        fd = ldo.fileno()
        if not isinstance(fd, int) or fd < 0:
            raise ldap.SERVER_DOWN({"desc": "connection has no socket"})
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    except BaseException:
        with contextlib.suppress(ldap.LDAPError):
            ldo.unbind_ext_s()
        raise
    return ldo


def _msgid_of(exc: BaseException) -> int | None:
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    msgid = info.get("msgid")
    return msgid if isinstance(msgid, int) and msgid > 0 else None


def _readable(fd: int) -> bool:
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True  # let the drain find out what is wrong


class AioPool:
    """One identity's connections on the event loop (reader: many requests per connection;
    binder: ``per_conn=1``)."""

    def __init__(
        self,
        identity: Identity,
        settings: LdapSettings,
        servers: Servers,
        size: int,
        *,
        per_conn: int,
        controls: list[tuple[str, bool, bytes | None]] | None = None,
    ) -> None:
        """``controls``: server controls sent with every search, as the C layer's
        ``(oid, criticality, value)`` tuples (e.g. AD's domain-scope control)."""
        self.identity = identity
        self._controls = controls
        self._settings = settings
        self._servers = servers
        self._size = size
        self._per_conn = per_conn
        self._timeout = settings.timeout
        self._conns: set[AioConn] = set()
        self._connecting = 0
        self._growing: set[asyncio.Task[AioConn]] = set()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # a thread for every connection that may be opening (started on demand): a connect never
        # queues behind another, so connects hanging on a stopped server cannot hold up the
        # failover connect to the next one
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=size, thread_name_prefix=f"ldap-{identity.name}"
        )
        # a connect may try every server: TCP connect, StartTLS and the bind each
        self._connect_budget = (settings.connect_timeout + settings.timeout) * len(
            settings.uris
        ) + 1
        self._closed = False

    # -- public operations ----------------------------------------------------------------

    async def point(
        self,
        base: str,
        filt: Filter,
        attrs: list[str],
        *,
        deadline: float | None = None,
        avoid: str | None = None,
    ) -> Entry | None:
        """At most one entry for a key below ``base``: AmbiguousEntry for two (or a size
        limit), ReferralSeen for a continuation reference, python-ldap errors as raised.
        ``deadline`` (loop time) shortens the request's; ``avoid`` names a server whose
        connections must not carry it (a retry after that server timed out)."""
        timeout = self._timeout

        def send(conn: AioConn) -> int:
            return conn.search(
                base, SCOPE_SUBTREE, filt, attrs, 0, self._controls, None, timeout, 2
            )

        req = await self._submit(send, limit=2, deadline=deadline, avoid=avoid)
        if req.referral:
            raise ReferralSeen
        if len(req.entries) > 1 or req.overflow:
            raise AmbiguousEntry("more than one LDAP entry for one key")
        return req.entries[0] if req.entries else None

    async def read_base(
        self, base: str, *, deadline: float | None = None, avoid: str | None = None
    ) -> None:
        """Read the entry ``base`` (no attributes): raises unless it exists and is readable."""
        timeout = self._timeout

        def send(conn: AioConn) -> int:
            return conn.search(base, SCOPE_BASE, "(objectClass=*)", NO_ATTRS, 0, self._controls,
                               None, timeout, 1)  # fmt: skip

        req = await self._submit(send, limit=1, deadline=deadline, avoid=avoid)
        if req.referral:
            raise ReferralSeen

    async def simple_bind(
        self, dn: str, password: str, *, deadline: float | None = None, avoid: str | None = None
    ) -> None:
        """A simple bind as ``dn``; returns when the server said success, else raises the
        python-ldap error (INVALID_CREDENTIALS, …) or ConnectionLost."""

        def send(conn: AioConn) -> int:
            return conn.bind(dn, password, None, None)

        await self._submit(send, limit=0, deadline=deadline, avoid=avoid)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._growing):
            task.cancel()
        for conn in list(self._conns):
            self._close(conn, TemporaryFailure("LDAP directory is closed"))
        self._wake(everyone=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def connections(self) -> int:
        """Open connections (for tests and metrics)."""
        return len(self._conns)

    # -- sending and waiting --------------------------------------------------------------

    async def _submit(
        self,
        send: Callable[[AioConn], int],
        *,
        limit: int,
        deadline: float | None = None,
        avoid: str | None = None,
    ) -> _Request:
        conn = self._pick(avoid) or await self._acquire(avoid)
        try:
            msgid = send(conn)
        except ldap.LDAPError as exc:
            if _msgid_of(exc) is not None or not isinstance(exc, FAILOVER):
                raise
            # an idle connection found dead (closed while idle) says nothing about the server
            self._lost(conn, exc, mark=bool(conn.pending))
            raise ConnectionLost(describe(exc), uri=conn.uri) from exc
        loop = conn.loop
        future: asyncio.Future[_Request] = loop.create_future()
        own = loop.time() + self._timeout
        req = _Request(future, own if deadline is None else min(own, deadline), limit)
        conn.pending[msgid] = req
        if conn.timer is None or req.deadline < conn.timer.when():
            if conn.timer is not None:
                conn.timer.cancel()
            conn.timer = loop.call_at(req.deadline, self._expire, conn)
        try:
            return await future
        finally:
            if conn.pending.get(msgid) is req:  # cancelled by the caller: not wanted any more
                del conn.pending[msgid]
                if conn.alive:
                    with contextlib.suppress(ldap.LDAPError):
                        conn.abandon(msgid, None, None)
                self._settle(conn)

    def _pick(self, avoid: str | None = None) -> AioConn | None:
        """The least busy usable connection, not to server ``avoid`` nor to a server marked
        down while another is up (None if all are at ``per_conn``); starts another connection
        in the background when every one is busy and there is room."""
        best: AioConn | None = None
        shunned = self._servers.shunned()
        for conn in self._conns:
            n = len(conn.pending)
            if conn.uri == avoid or (shunned and conn.uri in shunned):
                continue
            if n < self._per_conn and (best is None or n < len(best.pending)):
                best = conn
                if n == 0:
                    break
        if (
            best is not None
            and not best.pending
            and best.idle_since
            and best.loop.time() - best.idle_since > IDLE_RECHECK
            and _readable(best.fd)
        ):
            self._drain(best)  # an idle socket with data: EOF (server closed it) or stray bytes
            if not best.alive:
                return self._pick(avoid)
        if (
            best is not None
            and best.pending
            and not self._closed
            and len(self._conns) + self._connecting < self._size
        ):
            self._grow()  # every connection is busy: open another for the next requests
        # a connection made on a loop that has since stopped (no get_running_loop() here: on
        # Python 3.11 it is a getpid() system call, and this runs once per request)
        if best is not None and not best.loop.is_running():
            self._close(best, TemporaryFailure("LDAP connection belongs to another event loop"))
            return self._pick(avoid)
        return best

    async def _acquire(self, avoid: str | None = None) -> AioConn:
        """A connection with room for one more request (not to server ``avoid``): a new one if
        allowed, else the first that frees up (bounded by ``timeout``). A new connection goes
        to the first server not marked down; ``avoid`` was marked down when it timed out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_budget + self._timeout
        while True:
            if self._closed:
                raise TemporaryFailure("LDAP directory is closed")
            conn = self._pick(avoid)
            if conn is not None:
                return conn
            if len(self._conns) + self._connecting < self._size:
                self._connecting += 1
                made = await self._connect()
                if made.uri == avoid:  # it came back up meanwhile; a retry must go elsewhere
                    raise ConnectionLost("no other LDAP server for the retry", uri=made.uri)
                return made
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TemporaryFailure("no LDAP connection free in time")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError as exc:
                raise TemporaryFailure("no LDAP connection free in time") from exc
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def _wake(self, *, everyone: bool = False) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return

    def _grow(self) -> None:
        self._connecting += 1  # counted now, so _acquire in the same tick sees it
        task = asyncio.get_running_loop().create_task(self._connect())
        self._growing.add(task)
        task.add_done_callback(self._grown)

    def _grown(self, task: asyncio.Task[AioConn]) -> None:
        self._growing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("background LDAP %s connect failed: %s", self.identity.name, task.exception())

    async def _connect(self) -> AioConn:
        """Open one connection in the executor and register it (the caller has counted it in
        ``_connecting``; this uncounts it)."""
        loop = asyncio.get_running_loop()
        try:
            job = loop.run_in_executor(
                self._executor, connect, self._servers, self._settings, self.identity,
                _open_nonblocking,
            )  # fmt: skip
            try:
                made = await asyncio.wait_for(job, self._connect_budget)
            except TimeoutError as exc:
                raise TemporaryFailure("LDAP connect timed out") from exc
            except RuntimeError as exc:  # executor shut down by close()
                raise TemporaryFailure("LDAP directory is closed") from exc
            fd = made.ldo.fileno()
            conn = AioConn(made.ldo, made.uri, fd, loop)
            conn.idle_since = loop.time()  # idle until used: polled for EOF like any idle one
            if self._closed:
                with contextlib.suppress(ldap.LDAPError):
                    made.ldo.unbind_ext()
                raise TemporaryFailure("LDAP directory is closed")
            loop.add_reader(fd, self._drain, conn)
            self._conns.add(conn)
            return conn
        finally:
            self._connecting -= 1
            self._wake(everyone=True)

    # -- receiving ------------------------------------------------------------------------

    def _drain(self, conn: AioConn) -> None:
        """Hand every complete message on ``conn`` to its request (the add_reader callback)."""
        result = conn.result
        pending = conn.pending
        for _ in range(MAX_DRAIN):
            if not conn.alive:
                return
            try:
                rtype, data, msgid, _ctrls = result(_RES_ANY, 0, 0, 0, 0, 0)
            except ldap.LDAPError as exc:
                if not self._answer_error(conn, exc):
                    return
                continue
            except Exception as exc:  # python-ldap could not decode a message: give up on it
                self._lost(conn, exc, mark=False)
                return
            if rtype is None:
                return  # nothing more: the socket is drained
            req = pending.get(msgid)
            if req is None:
                continue  # the answer to a request that timed out or was cancelled
            if rtype == _RES_SEARCH_ENTRY:
                for dn, attrs in data:
                    if len(req.entries) < req.limit:
                        req.entries.append(Entry(dn, attrs))
                    else:
                        req.overflow = True
            elif rtype == _RES_SEARCH_REFERENCE:
                req.referral = True
            else:  # the final response (search done, bind)
                del pending[msgid]
                if not req.future.done():
                    req.future.set_result(req)
                self._settle(conn)
                if not pending:
                    return  # nobody waits for anything else on this connection
        conn.loop.call_soon(self._drain, conn)  # more may be buffered inside libldap

    def _answer_error(self, conn: AioConn, exc: ldap.LDAPError) -> bool:
        """An error from ``result4``: a request's error result (True: keep draining) or the
        connection's failure (False: it is closed now)."""
        msgid = _msgid_of(exc)
        if msgid is None:
            self._lost(conn, exc, mark=bool(conn.pending))
            return False
        req = conn.pending.pop(msgid, None)
        if req is not None and not req.future.done():
            if isinstance(exc, _SLOW_DOWN):  # busy / unavailable: fail over like the pools
                self._servers.mark_down(conn.uri, describe(exc))
                self._retire(conn)
                req.future.set_exception(ConnectionLost(describe(exc), uri=conn.uri))
            else:
                req.future.set_exception(exc)
        self._settle(conn)
        return conn.alive

    def _settle(self, conn: AioConn) -> None:
        """After a request left ``conn``: close it if retired and empty, else wake a waiter."""
        if not conn.pending:
            conn.idle_since = conn.loop.time()
            if conn.retired:
                self._close(conn, None)
                return
        if self._waiters and len(conn.pending) < self._per_conn:
            self._wake()

    def _expire(self, conn: AioConn) -> None:
        """The per-connection timer: fail the requests whose deadline passed (deadlines differ
        when callers shorten them, so every request is looked at; at most ``per_conn``)."""
        conn.timer = None
        if not conn.alive:
            return
        now = conn.loop.time()
        expired = [msgid for msgid, req in conn.pending.items() if req.deadline <= now]
        for msgid in expired:
            req = conn.pending.pop(msgid)
            with contextlib.suppress(ldap.LDAPError):
                conn.abandon(msgid, None, None)
            if not req.future.done():
                req.future.set_exception(
                    ConnectionLost("LDAP request timed out", uri=conn.uri, timed_out=True)
                )
        if expired:
            self._servers.mark_down(conn.uri, "request timed out")
            self._retire(conn)
        if conn.alive and conn.pending:
            first = min(req.deadline for req in conn.pending.values())
            conn.timer = conn.loop.call_at(first, self._expire, conn)

    def _retire(self, conn: AioConn) -> None:
        """No new requests on ``conn``; it closes when its last request ends."""
        conn.retired = True
        self._conns.discard(conn)
        if not conn.pending:
            self._close(conn, None)

    def _lost(self, conn: AioConn, exc: BaseException, *, mark: bool) -> None:
        if mark:
            self._servers.mark_down(conn.uri, describe(exc))
        self._close(conn, ConnectionLost(describe(exc), uri=conn.uri))

    def _close(self, conn: AioConn, error: BaseException | None) -> None:
        """Unregister and unbind ``conn``; fail what is still in flight with ``error``."""
        if not conn.alive:
            return
        conn.alive = False
        self._conns.discard(conn)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if not conn.loop.is_closed():
            conn.loop.remove_reader(conn.fd)  # before libldap closes the descriptor
        pending = list(conn.pending.values())
        conn.pending.clear()
        with contextlib.suppress(ldap.LDAPError):
            conn.ldo.unbind_ext()
        for req in pending:
            if not req.future.done():
                req.future.set_exception(
                    error or ConnectionLost("LDAP connection closed", uri=conn.uri)
                )
        self._wake(everyone=True)


# one attempt of a read: (deadline in loop time, server to keep away from) -> result
Read = Callable[[float, str | None], Awaitable[T]]


async def read_with_retry(op: Read[T], servers: Servers, deadline: float) -> T:
    """Run ``op`` within ``deadline`` (loop time), retried once only where a retry can help:
    after a lost connection (a fresh one, or another server), or after a timeout when another
    server is up — then the first attempt gets half the time and the retry avoids the slow
    server. Never after a timeout with nowhere else to go: a slow directory costs one
    ``timeout``, not two. ``ConnectionLost`` at the end becomes ``TemporaryFailure``; other
    errors (python-ldap's) pass through for the caller to map."""
    first = deadline
    if len(servers.candidates()) > 1:
        now = asyncio.get_running_loop().time()
        first = now + (deadline - now) / 2  # leave time for failover
    try:
        return await op(first, None)
    except ConnectionLost as exc:
        lost = exc
    if lost.timed_out and not servers.others_up(lost.uri):
        raise TemporaryFailure(f"LDAP error: {lost}") from lost
    if deadline - asyncio.get_running_loop().time() <= 0:
        raise TemporaryFailure(f"LDAP error: {lost} (no time left to retry)") from lost
    try:
        return await op(deadline, lost.uri if lost.timed_out else None)
    except ConnectionLost as exc:
        raise TemporaryFailure(f"LDAP error: {exc}") from exc
