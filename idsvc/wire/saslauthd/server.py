"""The saslauthd "mux" listener: libsasl2 clients (Postfix ``smtpd_sasl_type = cyrus``) ask it.

What it does: listens on ``settings.socket`` (a UNIX stream socket, see ``idsvc.wire.listen``)
with an ``asyncio.Protocol`` per connection (at most ``max_connections`` open; more are closed at
once without a byte), reads exactly one request per connection (protocols.md §1), asks the shared
``Authenticator`` and answers with one counted string, then ``shutdown(SHUT_WR)``, a short bounded
drain when bytes may still be unread, and close:

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
import functools
import logging
import time
from enum import Enum
from pathlib import Path
from typing import Protocol

from idsvc.auth.request import AuthRequest, AuthResult, Outcome
from idsvc.config import SaslauthdSettings
from idsvc.model import Secret
from idsvc.wire.listen import BoundSocket, ConnectionLimiter, bind_unix, peer_of
from idsvc.wire.saslauthd.protocol import (
    MIN_FIELDS,
    RequestDecoder,
    SaslauthdProtocolError,
    SaslauthdRequest,
    encode_reply,
)

log = logging.getLogger(__name__)

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


class Authenticating(Protocol):
    """What the listener needs from ``idsvc.auth.engine.Authenticator``."""

    async def authenticate(self, request: AuthRequest) -> AuthResult: ...


def _safe(text: str, limit: int = 64) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text[:limit])


class _LazyPeer:
    """Names the peer only if a log line is actually emitted (SO_PEERCRED is a syscall)."""

    __slots__ = ("_transport",)

    def __init__(self, transport: asyncio.BaseTransport) -> None:
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
            f"login={_safe(r.login)!r} service={_safe(r.service, 32)!r} realm={_safe(r.realm)!r} "
            f"client={_safe(r.client_addr or '-')} peer={self._peer}"
        )


class _Phase(Enum):
    """Where one connection is: reading the request, deciding, draining after the reply."""

    READING = "reading"
    GRACE = "grace"  # four fields are in; a fifth may still come
    DECIDING = "deciding"  # reading paused; the auth core has the request
    DRAINING = "draining"  # reply sent and half-closed; discarding what the client still sends
    DONE = "done"


class _Connection(asyncio.Protocol):
    """One saslauthd connection: at most one request, one reply, then close.

    An ``asyncio.Protocol`` rather than streams: the request costs one ``data_received`` call
    (libsasl writes it with one ``writev``) and one task for the auth core, with no reader/writer
    objects and no ``asyncio.timeout`` blocks; deadlines are plain loop timers.
    """

    __slots__ = (
        "_chunks",
        "_decoder",
        "_drained",
        "_peer",
        "_phase",
        "_server",
        "_timer",
        "_transport",
        "admitted",
        "task",
        "waiter",
    )

    def __init__(self, server: SaslauthdServer) -> None:
        self._server = server
        self._decoder = RequestDecoder()
        self._phase = _Phase.READING
        self._chunks = 0
        self._drained = 0
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._peer: _LazyPeer | None = None
        self.admitted = False
        self.task: asyncio.Task[None] | None = None
        self.waiter: asyncio.Future[None] | None = None  # set by close(), resolved by _finish

    # -- transport callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._peer = _LazyPeer(transport)
        server = self._server
        if not server.limiter.try_acquire():
            log.warning(
                "%s: connection limit %d reached, closing %s",
                server.name,
                server.limiter.limit,
                self._peer,
            )
            self._phase = _Phase.DONE
            transport.close()
            return
        self.admitted = True
        server.connections.add(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + server.settings.read_timeout, self._read_timeout)

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase is _Phase.DRAINING:
            self._drained += len(data)
            if self._drained >= DRAIN_LIMIT:
                self._finish()
            return
        if phase is not _Phase.READING and phase is not _Phase.GRACE:
            return  # reading is paused while deciding; nothing can arrive after DONE
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

    def eof_received(self) -> bool:
        phase = self._phase
        if phase is _Phase.READING:
            self._hangup(f"truncated request ({self._decoder.fields} fields)")
        elif phase is _Phase.GRACE:
            self._start(clean=False)  # no fifth field after all; the reply can still be sent
        elif phase is _Phase.DRAINING:
            self._finish()
        return True  # keep our side open: a reply may still be written

    def connection_lost(self, exc: Exception | None) -> None:
        if self._phase is _Phase.READING or self._phase is _Phase.GRACE:
            why = "connection lost" if exc is None else f"connection lost ({type(exc).__name__})"
            log.info(
                "%s: %s (%d fields) from %s; closed without reply",
                self._server.name,
                why,
                self._decoder.fields,
                self._peer,
            )
        if self.task is None or self.task.done():
            self._finish()
        # else: the decision runs to its end (penalties and audit included), then finishes

    # -- steps ------------------------------------------------------------------------------

    def _four_fields_in(self) -> None:
        """Fields 1-4 are complete: decide now, or wait a short grace for a 5th field."""
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
        loop = asyncio.get_running_loop()
        self._phase = _Phase.GRACE
        self._timer = loop.call_at(min(loop.time() + grace, deadline), self._grace_over)

    def _grace_over(self) -> None:
        if self._phase is _Phase.GRACE:
            self._start(clean=False)

    def _read_timeout(self) -> None:
        if self._phase is _Phase.READING:
            self._hangup(f"read timeout ({self._decoder.fields} fields)")

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
        assert self._transport is not None
        if not self._transport.is_closing():
            self._transport.pause_reading()
        self.task = asyncio.get_running_loop().create_task(self._decide(request, clean))

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
        transport = self._transport
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if transport is None or transport.is_closing():
            self._finish()
            return
        transport.write(reply)
        if transport.can_write_eof():
            transport.write_eof()
        if not drain:
            self._finish()
            return
        self._phase = _Phase.DRAINING
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + DRAIN_TIMEOUT, self._finish)
        transport.resume_reading()

    def _finish(self) -> None:
        """Close the connection (once) and give back its slot."""
        if self._phase is _Phase.DONE:
            return
        self._phase = _Phase.DONE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
        if self.admitted:
            self.admitted = False
            self._server.limiter.release()
            self._server.connections.discard(self)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def abort(self) -> None:
        """Server shutdown: drop the connection now, cancelling a decision still running."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self._transport is not None:
            self._transport.abort()
        self._finish()


class SaslauthdServer:
    """See the module docstring. ``start()`` binds and serves; ``close()`` stops and unlinks."""

    name = "saslauthd"

    def __init__(self, settings: SaslauthdSettings, authenticator: Authenticating) -> None:
        self.settings = settings
        self._auth = authenticator
        self._limiter = ConnectionLimiter(settings.max_connections)
        self._bound: BoundSocket | None = None
        self._server: asyncio.Server | None = None
        self.connections: set[_Connection] = set()

    @property
    def path(self) -> Path:
        return Path(self.settings.socket.path)

    @property
    def limiter(self) -> ConnectionLimiter:
        return self._limiter

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("saslauthd listener already started")
        self._bound = bind_unix(self.settings.socket)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_unix_server(
                functools.partial(_Connection, self), sock=self._bound.sock
            )
        except BaseException:
            self._bound.sock.close()
            self._bound.remove_path()
            self._bound = None
            raise
        log.info("%s: listening on %s", self.name, self._bound.describe())

    async def close(self) -> None:
        """Stop accepting, give open connections ``CLOSE_GRACE`` seconds, remove the socket."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self.connections:
            loop = asyncio.get_running_loop()
            open_now = list(self.connections)
            for conn in open_now:
                conn.waiter = loop.create_future()
            waiters = {conn.waiter for conn in open_now if conn.waiter is not None}
            await asyncio.wait(waiters, timeout=CLOSE_GRACE)
            stuck = [conn for conn in open_now if conn in self.connections]
            tasks = [conn.task for conn in stuck if conn.task is not None]
            for conn in stuck:
                conn.abort()
            if tasks:
                await asyncio.wait(tasks)
        if server is not None:
            await server.wait_closed()
        if self._bound is not None:
            self._bound.remove_path()
            self._bound = None

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
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s: %s outcome=%s%s detail=%r elapsed=%.3f",
                self.name,
                what,
                result.outcome.value,
                " (cached)" if result.cached else "",
                result.detail,
                time.perf_counter() - started,
            )
        return REPLIES[result.outcome]
