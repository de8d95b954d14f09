"""The saslauthd "mux" listener: libsasl2 clients (Postfix ``smtpd_sasl_type = cyrus``) ask it.

What it does: listens on ``settings.socket`` (a UNIX stream socket, see ``idsvc.wire.listen``),
driving each accepted socket straight from event-loop reader callbacks (no asyncio transport: see
:class:`_Connection`), reads exactly one request per connection (protocols.md §1), asks the
shared ``Authenticator`` and answers with one counted string, then ``shutdown(SHUT_WR)``, a short
bounded drain when bytes may still be unread, and close:

* admission is ``idsvc.wire.listen.ConnectionSlots``: at most ``max_connections`` open; when
  they are all taken, a newcomer evicts the oldest connection that has not sent its four
  mandatory fields, so idle or half-written connections can never lock real logins out; a
  connection whose request is in hand is never evicted, and a newcomer is closed without a byte
  only when every slot has a request in flight. One peer UID holds at most
  ``max_connections - reserved_connections`` slots;
* the 4 mandatory fields must arrive within ``settings.read_timeout``; after the 4th, a 5th
  (``client_addr``, cyrus-sasl master only) is awaited at most ``settings.fifth_field_grace``
  (stock 2.1.28 clients send 4 fields and wait for the reply, so a strict 5-field reader would
  deadlock against them). The grace is only spent when there is a reason to expect more: part of
  a 5th field is already buffered, or the first four came in several reads. libsasl writes its
  request with a single ``writev``, so a 4-field request read in one piece is answered at once;
  otherwise every stock client would pay the grace (measured: 18 auths/s at concurrency 1);
* the request goes to the auth core as ``AuthRequest(login, Secret(password), service,
  realm=realm or None, remote_ip=<field 5 IP>, secured=True, mechanism="PLAIN",
  protocol="saslauthd")``. ``secured=True`` because the peer is the local MTA (only processes
  allowed by the socket's mode/group can connect), which applies its own TLS policy
  (``smtpd_tls_auth_only``) before it passes a password on; the cleartext rule of the auth core
  is about the MTA's client, which this socket cannot see.

Outcome → reply (one table, :data:`REPLIES`): OK → ``OK``; every definite failure (wrong password,
unknown user, disabled, expired, rejected input) → the same ``NO authentication failed``, so a
client can never tell an unknown user from a bad password; TEMPFAIL → close *without a reply*
(libsasl reports SASL_FAIL and Postfix answers ``454 4.7.0``; a ``NO`` would be a permanent 535).
Empty login or password is answered ``NO`` before any directory call. A framing error (field over
256 bytes, NUL, not UTF-8) is answered ``NO malformed request``.

What it does not do: join ``login@realm`` or canonicalise (the auth core does), cache, or delay
failures (the auth core's failure delay and penalties apply).

How it fails: a client that is too slow (``read_timeout``), sends a truncated request or hangs up
gets its connection closed without a reply; the auth core raising (it should not) is treated as
TEMPFAIL. Nothing a client sends can stop the listener. Log lines carry the login, service, realm,
peer and outcome — never the password.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from enum import Enum
from pathlib import Path
from typing import Any

from idsvc.auth.inputs import sanitize
from idsvc.auth.request import Authenticating, AuthRequest, Outcome
from idsvc.config import SaslauthdSettings
from idsvc.model import Secret
from idsvc.wire.listen import (
    BoundSocket,
    ConnectionSlots,
    HasExtraInfo,
    Slot,
    bind_unix,
    peer_key,
    peer_of,
)
from idsvc.wire.saslauthd.protocol import (
    MIN_FIELDS,
    RequestDecoder,
    SaslauthdProtocolError,
    SaslauthdRequest,
    encode_reply,
)

log = logging.getLogger(__name__)

READ_SIZE = 4096  # a request is at most 5 x 258 bytes
ACCEPT_BATCH = 64  # connections accepted per wake-up of the listening socket
ACCEPT_PAUSE = 1.0  # out of descriptors or memory: stop accepting for this long
DRAIN_TIMEOUT = 1.0  # after replying, wait this long at most for the client to hang up
DRAIN_LIMIT = 65536  # and read at most this many bytes meanwhile
CLOSE_GRACE = 5.0  # close(): how long open connections may take to finish

NO_GENERIC = encode_reply("NO authentication failed")
NO_MALFORMED = encode_reply("NO malformed request")

# None: close without replying, which libsasl reports as SASL_FAIL (Postfix: 454 4.7.0).
REPLIES: dict[Outcome, bytes | None] = {
    Outcome.OK: encode_reply("OK"),
    Outcome.MISMATCH: NO_GENERIC,
    Outcome.UNKNOWN_USER: NO_GENERIC,
    Outcome.DISABLED: NO_GENERIC,
    Outcome.EXPIRED: NO_GENERIC,
    Outcome.REJECTED: NO_GENERIC,
    Outcome.TEMPFAIL: None,
}


class _LazyPeer:
    """Names the peer only if a log line is actually emitted (SO_PEERCRED is a syscall)."""

    __slots__ = ("_transport",)

    def __init__(self, transport: HasExtraInfo) -> None:
        self._transport = transport

    def __str__(self) -> str:
        return str(peer_of(self._transport))


class _Described:
    """The loggable part of a request, formatted only when a log line is emitted."""

    __slots__ = ("_peer", "_request")

    def __init__(self, request: SaslauthdRequest, peer: object) -> None:
        self._request = request
        self._peer = peer

    def __str__(self) -> str:
        r = self._request
        return (
            f"login={sanitize(r.login, 64)!r} service={sanitize(r.service, 32)!r} "
            f"realm={sanitize(r.realm, 64)!r} client={sanitize(r.client_addr, 64) or '-'} "
            f"peer={self._peer}"
        )


class _Phase(Enum):
    """Where one connection is: reading the request, deciding, draining after the reply."""

    READING = "reading"
    GRACE = "grace"  # four fields are in; a fifth may still come
    DECIDING = "deciding"  # reading paused; the auth core has the request
    DRAINING = "draining"  # reply sent and half-closed; discarding what the client still sends
    DONE = "done"


class _Connection:
    """One accepted connection, driven by event-loop reader callbacks on its own socket.

    No asyncio transport or protocol object: a saslauthd exchange is one small request and one
    reply of at most a few dozen bytes, so the connection reads with ``recv`` when the loop says
    the socket is readable, answers with one ``send`` (a reply that does not fit the socket
    buffer at once waits for writability) and closes. That leaves one object, at most two timers
    and one task (the auth core) per connection, which matters because the listener pays it on
    every SMTP AUTH. Every path ends in :meth:`_finish`, which unregisters the socket from the
    loop *before* closing it and gives the connection slot back exactly once.
    """

    __slots__ = (
        "_chunks",
        "_decoder",
        "_drain_after",
        "_drained",
        "_fd",
        "_loop",
        "_peer",
        "_pending",
        "_phase",
        "_reading",
        "_server",
        "_slot",
        "_sock",
        "_timer",
        "_writing",
        "task",
        "waiter",
    )

    def __init__(
        self, server: SaslauthdServer, sock: socket.socket, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._server = server
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._decoder = RequestDecoder()
        self._phase = _Phase.READING
        self._chunks = 0
        self._drained = 0
        self._timer: asyncio.TimerHandle | None = None
        self._reading = False
        self._writing = False
        self._pending = b""
        self._drain_after = False
        self._peer = _LazyPeer(self)
        self._slot: Slot | None = None  # set by the server when admitted
        self.task: asyncio.Task[None] | None = None
        self.waiter: asyncio.Future[None] | None = None  # set by close(), resolved by _finish

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """What ``peer_of`` asks a transport for."""
        if name == "socket":
            return self._sock
        if name == "peername":
            try:
                return self._sock.getpeername()
            except OSError:
                return default
        return default

    # -- events -----------------------------------------------------------------------------

    def start(self, slot: Slot) -> None:
        """Arm the read deadline and read at once: a libsasl client writes its request right
        after connecting, so it is usually there already."""
        self._slot = slot
        loop = self._loop
        self._timer = loop.call_at(loop.time() + self._server.settings.read_timeout, self._expire)
        self._on_readable()

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            self._want_read()
            return
        except OSError as exc:
            self._lost(exc)
            return
        try:
            if data:
                self._received(data)
            else:
                self._eof()
        except Exception:  # a bug here must not leave the connection (and its slot) open
            log.exception("%s: connection failed for %s", self._server.name, self._peer)
            self._finish()

    def _received(self, data: bytes) -> None:
        phase = self._phase
        if phase is _Phase.DRAINING:
            self._drained += len(data)
            if self._drained >= DRAIN_LIMIT:
                self._finish()
            return
        if phase is not _Phase.READING and phase is not _Phase.GRACE:
            return
        decoder = self._decoder
        try:
            decoder.feed(data)
        except SaslauthdProtocolError as exc:
            log.warning("%s: malformed request from %s: %s", self._server.name, self._peer, exc)
            self._reply(NO_MALFORMED, drain=True)
            return
        if phase is _Phase.READING:
            self._chunks += 1
            if decoder.fields >= MIN_FIELDS:
                self._four_fields_in()
        elif decoder.fields > MIN_FIELDS:
            self._start(clean=False)  # GRACE: the fifth field arrived
        if self._phase is _Phase.READING or self._phase is _Phase.GRACE:
            self._want_read()

    def _eof(self) -> None:
        phase = self._phase
        if phase is _Phase.READING:
            self._hangup(f"truncated request ({self._decoder.fields} fields)")
        elif phase is _Phase.GRACE:
            self._start(clean=False)  # no fifth field after all; the reply can still be sent
        else:
            self._finish()

    def _lost(self, exc: OSError) -> None:
        if self._phase is _Phase.READING or self._phase is _Phase.GRACE:
            log.info(
                "%s: connection lost (%s, %d fields) from %s; closed without reply",
                self._server.name,
                type(exc).__name__,
                self._decoder.fields,
                self._peer,
            )
        self._finish()

    def _want_read(self) -> None:
        if not self._reading and self._phase is not _Phase.DONE:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _stop_read(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    # -- steps ------------------------------------------------------------------------------

    def _four_fields_in(self) -> None:
        """Fields 1-4 are complete: decide now, or wait a short grace for a 5th field."""
        if self._slot is not None:
            self._slot.busy()  # a complete request: never evicted from here on
        decoder = self._decoder
        clean = self._chunks == 1 and not decoder.partial and not decoder.ignored
        grace = self._server.settings.fifth_field_grace
        if decoder.fields > MIN_FIELDS or grace <= 0 or clean:
            # libsasl writes the whole request with one writev(), and one read returns all that
            # had arrived: a 5th field would have come with the other four. Waiting anyway
            # would cap every 4-field client at 1/grace requests per second.
            self._start(clean=clean)
            return
        # fields 1-4 came in pieces, or part of a 5th is here: give the rest a short grace
        assert self._timer is not None
        deadline = self._timer.when()
        self._timer.cancel()
        loop = self._loop
        self._phase = _Phase.GRACE
        self._timer = loop.call_at(min(loop.time() + grace, deadline), self._grace_over)

    def _grace_over(self) -> None:
        if self._phase is _Phase.GRACE:
            self._start(clean=False)

    def _expire(self) -> None:
        if self._phase is _Phase.READING:
            self._hangup(f"read timeout ({self._decoder.fields} fields)")
        elif self._phase is _Phase.DRAINING:
            self._finish()

    def _hangup(self, why: str) -> None:
        log.info("%s: %s from %s; closed without reply", self._server.name, why, self._peer)
        self._finish()

    def _start(self, *, clean: bool) -> None:
        """The request is complete: stop reading and hand it to the auth core in a task."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            request = self._decoder.request()
        except SaslauthdProtocolError as exc:
            log.warning("%s: malformed request from %s: %s", self._server.name, self._peer, exc)
            self._reply(NO_MALFORMED, drain=True)
            return
        self._phase = _Phase.DECIDING
        self._stop_read()
        self.task = self._loop.create_task(self._decide(request, clean))

    async def _decide(self, request: SaslauthdRequest, clean: bool) -> None:
        try:
            reply = await self._server.decide(request, self._peer)
        except asyncio.CancelledError:
            self._finish()
            raise
        except Exception:  # a bug here must not leave the connection (and its slot) open
            log.exception("%s: request failed for %s", self._server.name, self._peer)
            reply = None
        if self._phase is not _Phase.DECIDING:
            return
        if reply is None:
            self._finish()  # TEMPFAIL: hang up so the client reports a temporary failure
            return
        self._reply(reply, drain=not clean)

    def _reply(self, reply: bytes, *, drain: bool) -> None:
        """Send the reply and half-close. With ``drain``, read (bounded) what the client may
        still send before closing: closing with unread bytes can reset the connection and lose
        the reply. A request read whole in one piece leaves nothing unread."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop_read()
        self._phase = _Phase.DRAINING  # from here on, only the reply and the drain remain
        self._pending = reply
        self._drain_after = drain
        loop = self._loop
        self._timer = loop.call_at(loop.time() + DRAIN_TIMEOUT, self._expire)
        self._on_writable()

    def _on_writable(self) -> None:
        try:
            sent = self._sock.send(self._pending)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._finish()  # the client went away: nobody to answer
            return
        self._pending = self._pending[sent:]
        if self._pending:
            if not self._writing:
                self._loop.add_writer(self._fd, self._on_writable)
                self._writing = True
            return
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._finish()
            return
        if not self._drain_after:
            self._finish()
            return
        self._want_read()

    def _finish(self) -> None:
        """Unregister and close the socket (once) and give back its slot."""
        if self._phase is _Phase.DONE:
            return
        self._phase = _Phase.DONE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop_read()
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        self._sock.close()
        if self._slot is not None:
            self._slot.release()
        self._server.connections.discard(self)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def evict(self) -> None:
        """The slot table needs room: this connection has not sent a complete request."""
        log.debug(  # counted and reported by the slot table, not logged one by one
            "%s: evicting %s connection from %s (%d fields) to admit a new one",
            self._server.name,
            self._phase.value,
            self._peer,
            self._decoder.fields,
        )
        self._finish()

    def abort(self) -> None:
        """Server shutdown: drop the connection now, cancelling a decision still running."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._finish()


class SaslauthdServer:
    """See the module docstring. ``start()`` binds and serves; ``close()`` stops and unlinks."""

    name = "saslauthd"

    def __init__(self, settings: SaslauthdSettings, authenticator: Authenticating) -> None:
        self.settings = settings
        self._auth = authenticator
        self._slots = ConnectionSlots(
            settings.max_connections,
            reserve=settings.reserved_connections,
            name=self.name,
        )
        self._bound: BoundSocket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accept_retry: asyncio.TimerHandle | None = None
        self.connections: set[_Connection] = set()

    @property
    def path(self) -> Path:
        return Path(self.settings.socket.path)

    @property
    def slots(self) -> ConnectionSlots:
        return self._slots

    async def start(self) -> None:
        if self._bound is not None:
            raise RuntimeError("saslauthd listener already started")
        bound = bind_unix(self.settings.socket)
        loop = asyncio.get_running_loop()
        try:
            loop.add_reader(bound.sock.fileno(), self._accept)
        except BaseException:
            bound.sock.close()
            bound.remove_path()
            raise
        self._bound, self._loop = bound, loop
        log.debug("%s: listening on %s", self.name, bound.describe())  # serve logs it

    def _accept(self) -> None:
        """Accept what is waiting (a bounded batch per wake-up) and start each connection."""
        bound, loop = self._bound, self._loop
        if bound is None or loop is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _addr = bound.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                # out of descriptors or memory: stop accepting for a moment instead of spinning
                log.error("%s: cannot accept (%s); pausing %.1f s", self.name, exc, ACCEPT_PAUSE)
                loop.remove_reader(bound.sock.fileno())
                self._accept_retry = loop.call_later(ACCEPT_PAUSE, self._resume_accepting)
                return
            sock.setblocking(False)
            conn = _Connection(self, sock, loop)
            slot = self._slots.admit(conn, peer_key(conn))
            if slot is None:
                log.debug(  # counted and reported by the slot table
                    "%s: all %d connections have a request in flight, closing %s",
                    self.name,
                    self._slots.limit,
                    conn._peer,
                )
                sock.close()
                continue
            self.connections.add(conn)
            conn.start(slot)

    def _resume_accepting(self) -> None:
        self._accept_retry = None
        if self._bound is not None and self._loop is not None:
            self._loop.add_reader(self._bound.sock.fileno(), self._accept)

    async def close(self) -> None:
        """Stop accepting, give open connections ``CLOSE_GRACE`` seconds, remove the socket."""
        bound, loop = self._bound, self._loop
        if self._accept_retry is not None:
            self._accept_retry.cancel()
            self._accept_retry = None
        if bound is not None and loop is not None:
            loop.remove_reader(bound.sock.fileno())
            bound.sock.close()
        if self.connections:
            running = asyncio.get_running_loop()
            open_now = list(self.connections)
            for conn in open_now:
                conn.waiter = running.create_future()
            waiters = {conn.waiter for conn in open_now if conn.waiter is not None}
            await asyncio.wait(waiters, timeout=CLOSE_GRACE)
            stuck = [conn for conn in open_now if conn in self.connections]
            tasks = [conn.task for conn in stuck if conn.task is not None]
            for conn in stuck:
                conn.abort()
            if tasks:
                await asyncio.wait(tasks)
        if bound is not None:
            bound.remove_path()
            self._bound = None
        self._loop = None

    async def decide(self, request: SaslauthdRequest, peer: object) -> bytes | None:
        """The reply to one complete request, or None to close without a reply."""
        what = _Described(request, peer)
        if not request.login or not request.password:
            # never reaches the directory (reliability.md #3)
            log.info("%s: empty login or password: %s", self.name, what)
            return NO_GENERIC
        started = time.perf_counter()
        auth_request = AuthRequest(
            login=request.login,
            password=Secret(request.password),
            service=request.service,
            realm=request.realm or None,
            remote_ip=request.remote_ip,
            secured=True,
            mechanism="PLAIN",
            protocol=self.name,
        )
        try:
            result = await self._auth.authenticate(auth_request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: authenticator raised; answering temporary failure", self.name)
            return None
        if log.isEnabledFor(logging.DEBUG):  # the audit trail is the per-auth record
            log.debug(
                "%s: %s outcome=%s%s detail=%r elapsed=%.3f",
                self.name,
                what,
                result.outcome.value,
                " (cached)" if result.cached else "",
                result.detail,
                time.perf_counter() - started,
            )
        return REPLIES[result.outcome]
