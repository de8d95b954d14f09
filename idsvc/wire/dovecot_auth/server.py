"""The Dovecot auth-client listener: what Postfix ``smtpd_sasl_type = dovecot`` (and Dovecot's
own login processes, ``doveadm auth test``, mailsvc) connect to.

What it does: listens on a UNIX socket (``settings.socket``) and optionally on TCP
(``settings.tcp``, port 0 allowed), sends the whole handshake at connect, then serves any number
of requests per connection, up to ``max_requests_per_connection`` in flight at once, each
verified in its own task — so one request's failure delay never stalls another. With
``max_requests_per_connection`` in flight, the connection is simply not read from until one of
them completes (back-pressure: Dovecot's login processes multiplex many logins on one connection,
and a spray of failing logins must not cost the honest ones their answers); the input held
meanwhile is at most one read plus one line (:data:`MAX_BUFFERED`). Admission is
``idsvc.wire.listen.ConnectionSlots``: when ``max_connections`` are open, a newcomer evicts a
connection that has not finished its handshake (oldest first), else the least recently active
idle one; one with a request being verified is never evicted. Mechanisms come from
:mod:`idsvc.sasl`; credentials go to the one ``Authenticator``. Replies, by outcome:

======================  =========================================================================
``OK``                  ``OK <id> user=<canonical>`` (Postfix's ``sasl_username``)
``DISABLED``            ``FAIL <id> code=user_disabled reason=<generic>``
``EXPIRED``             ``FAIL <id> code=pass_expired reason=<generic>``
other definite "no"     ``FAIL <id> reason=<generic>`` (unknown user and bad password look alike)
``TEMPFAIL`` / error    the connection is closed: Postfix then answers ``454 4.7.0``
======================  =========================================================================

A malformed SASL message (empty password, extra NUL …) is handed to the Authenticator as an
empty-login request, which it refuses before any directory access; that way every definite
failure gets the same reply, the same failure delay and the same per-IP penalty.

What it does not do: decide anything about credentials, or log passwords or ``resp=`` data.

How it fails: a protocol violation (bad VERSION, no CPID, unknown command, duplicate id,
parameters after ``resp=``, a line over 16384 bytes, CONT for a request being verified), no
handshake within ``handshake_timeout`` or an idle connection (``idle_timeout`` with nothing in
flight) closes the connection with a log line; so does eviction, and a newcomer when every
connection has a request in flight (closed before the handshake). A client that stops reading
its replies is not read from until it does. The transport is used by behaviour
(``listen.stream_transport``), so uvloop's transports work too. Start-up problems raise
``ListenError`` / ``ConfigError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from idsvc.auth.request import Authenticating, AuthRequest, Outcome
from idsvc.config import DovecotAuthSettings
from idsvc.errors import ConfigError
from idsvc.model import Secret
from idsvc.sasl import MECHANISMS, Continue, Fail, Mechanism, Step, Verify
from idsvc.wire.dovecot_auth import protocol as proto
from idsvc.wire.listen import (
    BoundSocket,
    ConnectionSlots,
    Slot,
    StreamTransport,
    bind_tcp,
    bind_unix,
    peer_of,
    stream_transport,
)

log = logging.getLogger(__name__)

PROTOCOL_NAME = "dovecot"  # AuthRequest.protocol, for the audit trail
UNSUPPORTED_MECH_REASON = "Unsupported authentication mechanism"
UNKNOWN_ID_REASON = "Authentication request timed out"  # Dovecot's answer to CONT for no request
CLOSE_TIMEOUT = 5.0  # close() waits this long for connections to wind down
# Input held while reading is paused: at most what one read returned (asyncio and uvloop read
# at most 256 KiB at a time) plus one partial line. More than this is a transport that kept
# delivering after pause_reading(): treated as a protocol error rather than buffered.
MAX_BUFFERED = 256 * 1024 + proto.MAX_LINE + 1

FAIL_CODES: dict[Outcome, proto.FailCode | None] = {
    Outcome.MISMATCH: None,
    Outcome.UNKNOWN_USER: None,
    Outcome.REJECTED: None,
    Outcome.DISABLED: proto.FailCode.USER_DISABLED,
    Outcome.EXPIRED: proto.FailCode.PASS_EXPIRED,
}


class _State(Enum):
    """Handshake progress of one connection: VERSION, then CPID, then requests."""

    AWAIT_VERSION = "await-version"
    AWAIT_CPID = "await-cpid"
    READY = "ready"


@dataclass(slots=True)
class _Request:
    request_id: int
    mechanism: Mechanism
    auth: proto.Auth
    task: asyncio.Task[None] | None = None


class _Connection(asyncio.Protocol):
    """One client connection: line framing, handshake state, requests in flight, idle watchdog.

    An ``asyncio.Protocol`` rather than streams: one request costs one ``data_received`` call and
    one task, with no extra coroutine hop per line (this listener sits on every SMTP AUTH).
    """

    def __init__(self, server: DovecotAuthServer) -> None:
        self.server = server
        self.transport: StreamTransport | None = None
        self.peer = "unknown"
        self.requests: dict[int, _Request] = {}
        self.state = _State.AWAIT_VERSION
        self.last_input = time.monotonic()
        self.closing = False
        self.finished = asyncio.Event()
        self._buffer = bytearray()
        self._slot: Slot | None = None
        self._verifying = 0  # requests whose task runs (the auth core has them)
        self._held = False  # an AUTH line waits in the buffer: too many requests in flight
        self._write_paused = False  # the transport's buffer is full: the client does not read
        self._reading = True
        self._processing = False
        self._idle_handle: asyncio.TimerHandle | None = None
        # looked up once: asyncio.get_running_loop() makes a getpid() system call on Python 3.11
        self._loop = asyncio.get_running_loop()
        # the commands a READY connection accepts
        self._handlers: dict[type[proto.Message], Callable[[Any], None]] = {
            proto.Auth: self._on_auth,
            proto.Cont: self._on_cont,
            proto.Cancel: self._on_cancel,
        }

    @property
    def buffered(self) -> int:
        """Input bytes held (a partial line, or lines held back by back-pressure)."""
        return len(self._buffer)

    @property
    def reading(self) -> bool:
        """False while reading is paused (back-pressure or a client not reading its replies)."""
        return self._reading

    # --- transport callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = stream_transport(transport)
        peer = peer_of(self.transport)
        self.peer = str(peer)
        slot = self.server.slots.admit(self, peer.key)
        if slot is None:
            log.debug(  # counted and reported by the slot table
                "%s: all %d connections have requests in flight, closing %s",
                self.server.name,
                self.server.slots.limit,
                self.peer,
            )
            self.closing = True
            self.transport.abort()
            return
        self._slot = slot
        self.server.connections.add(self)
        self.transport.write(self.server.handshake())
        self._arm_idle(self.server.settings.handshake_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_input = time.monotonic()
        self._buffer += data
        if len(self._buffer) > MAX_BUFFERED:
            log.warning("%s: %s: input buffer overrun; disconnecting", self.server.name, self.peer)
            self.abort(None)
            return
        if self._verifying == 0 and self._slot is not None and self.state is _State.READY:
            self._slot.idle()  # activity: the least recently active idle connection goes first
        self._process()

    def _process(self) -> None:
        """Handle the complete lines in the buffer. An AUTH line while
        ``max_requests_per_connection`` requests are in flight stays in the buffer, and reading
        pauses, until one of them completes (back-pressure: no accepted request is dropped)."""
        if self._processing or self.closing:
            return
        self._processing = True
        buffer = self._buffer
        limit = self.server.settings.max_requests_per_connection
        start = 0
        self._held = False
        try:
            while not self.closing:
                end = buffer.find(b"\n", start)
                if end < 0:
                    if len(buffer) - start > proto.MAX_LINE:
                        raise proto.LineTooLong
                    break
                if len(self.requests) >= limit and buffer.startswith(b"AUTH\t", start):
                    self._held = True
                    break
                line = bytes(buffer[start:end])
                start = end + 1
                self._dispatch(proto.parse_line(line))
        except proto.ProtocolError as exc:
            log.warning(
                "%s: %s: protocol error: %s; disconnecting", self.server.name, self.peer, exc
            )
            self.abort(None)
        except Exception:
            log.exception("%s: %s: unexpected error; disconnecting", self.server.name, self.peer)
            self.abort(None)
        finally:
            del buffer[:start]
            self._processing = False
        self._update_reading()

    def _update_reading(self) -> None:
        """Read while neither the write buffer is full nor an AUTH line is held."""
        transport = self.transport
        if transport is None or self.closing:
            return
        want = not self._write_paused and not self._held
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _request_done(self) -> None:
        """A request left ``self.requests``: a held AUTH line may go now."""
        if self._held and not self._processing:
            self._process()

    def eof_received(self) -> bool:
        return False  # close our side too; replies still pending are dropped

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        tasks = [r.task for r in self.requests.values() if r.task is not None]
        self.requests.clear()
        for task in tasks:
            task.cancel()
        if self._slot is not None:
            self._slot.release()
            self._slot = None
            self.server.connections.discard(self)
        if tasks:
            done = asyncio.gather(*tasks, return_exceptions=True)
            done.add_done_callback(lambda _f: self.finished.set())
        else:
            self.finished.set()

    def pause_writing(self) -> None:
        # the client does not read its replies: stop reading its requests until it does
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # --- lifecycle -----------------------------------------------------------------------------

    def evict(self) -> None:
        """The slot table needs room: this connection is unproven or idle (never one with a
        request being verified)."""
        if not self.closing:
            log.debug(  # counted and reported by the slot table, not logged one by one
                "%s: %s: evicting %s connection to admit a new one",
                self.server.name,
                self.peer,
                "idle" if self.state is _State.READY else "unproven (no handshake yet)",
            )
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def abort(self, why: str | None) -> None:
        """Close without another byte (TEMPFAIL semantics for Postfix)."""
        if why is not None and not self.closing:
            log.info("%s: %s: closing connection: %s", self.server.name, self.peer, why)
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _arm_idle(self, delay: float) -> None:
        self._idle_handle = self._loop.call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        if self.closing:
            return
        if self.state is not _State.READY:
            self.abort("no handshake within handshake_timeout")
            return
        timeout = self.server.settings.idle_timeout
        busy = any(r.task is not None for r in self.requests.values())
        idle_for = time.monotonic() - self.last_input
        if not busy and idle_for >= timeout:
            self.abort(f"idle for {idle_for:.0f}s")
            return
        self._arm_idle(max(timeout - idle_for, 0.05) if not busy else timeout)

    # --- messages ------------------------------------------------------------------------------

    def _dispatch(self, msg: proto.Message) -> None:
        if self.state is _State.READY:
            handler = self._handlers.get(type(msg))
            if handler is None:
                raise proto.UnknownCommand(
                    f"unexpected {type(msg).__name__.upper()} after handshake"
                )
            handler(msg)
        elif self.state is _State.AWAIT_VERSION:
            if not isinstance(msg, proto.Version):
                raise proto.BadVersion("the client did not start with VERSION")
            self.state = _State.AWAIT_CPID
        elif isinstance(msg, proto.Cpid):
            self.state = _State.READY
            if self._idle_handle is not None:
                self._idle_handle.cancel()
            self._arm_idle(self.server.settings.idle_timeout)
            if self._slot is not None:
                self._slot.idle()  # proven: from now on only evicted when idle
        else:
            raise proto.MalformedLine("expected CPID after VERSION")

    def _on_auth(self, msg: proto.Auth) -> None:
        rid = msg.request_id
        if rid in self.requests:
            raise proto.DuplicateId(rid)
        if not msg.service:
            raise proto.MalformedLine("AUTH without service=")
        mech_cls = self.server.mechanisms.get(msg.mechanism.upper())
        if mech_cls is None:
            self._write(proto.fail_reply(rid, reason=UNSUPPORTED_MECH_REASON))
            return
        initial: bytes | None = None
        if msg.resp is not None:
            try:
                initial = proto.decode_base64(msg.resp)
            except proto.InvalidBase64:
                self._write(proto.fail_reply(rid, proto.FailCode.INVALID_BASE64))
                return
        req = _Request(rid, mech_cls(), msg)
        self.requests[rid] = req
        self._advance(req, req.mechanism.start(initial))

    def _on_cont(self, msg: proto.Cont) -> None:
        req = self.requests.get(msg.request_id)
        if req is None:
            self._write(proto.fail_reply(msg.request_id, reason=UNKNOWN_ID_REASON))
            return
        if req.task is not None:
            raise proto.ProtocolError("CONT for a request that is being verified")
        try:
            data = proto.decode_base64(msg.data)
        except proto.InvalidBase64:
            del self.requests[req.request_id]
            self._write(proto.fail_reply(req.request_id, proto.FailCode.INVALID_BASE64))
            return
        self._advance(req, req.mechanism.step(data))

    def _on_cancel(self, msg: proto.Cancel) -> None:
        req = self.requests.pop(msg.request_id, None)
        if req is not None and req.task is not None:
            req.task.cancel()  # its _verify ends the in-flight count

    def _advance(self, req: _Request, answer: Step) -> None:
        if isinstance(answer, Continue):
            self._write(proto.cont_reply(req.request_id, answer.challenge))
            return
        auth = req.auth
        if isinstance(answer, Verify):
            login, password, authzid = answer.authcid, answer.password, answer.authzid
        else:
            assert isinstance(answer, Fail)
            log.debug(
                "%s: %s: id=%d %s refused: %s",
                self.server.name,
                self.peer,
                req.request_id,
                req.mechanism.name,
                answer.reason.value,
            )
            login, password, authzid = "", Secret(""), None
        request = AuthRequest(
            login=login,
            password=password,
            service=auth.service or "",
            remote_ip=auth.remote_ip,
            local_ip=auth.local_ip,
            secured=auth.secured,
            mechanism=req.mechanism.name,
            authzid=authzid,
            protocol=PROTOCOL_NAME,
        )
        task = self._loop.create_task(self._verify(req, request))
        req.task = task
        self._verifying += 1
        if self._verifying == 1 and self._slot is not None:
            self._slot.busy()
        # a callback, not a finally: a task cancelled before it ran never runs its body
        task.add_done_callback(functools.partial(self._verified, req))

    def _verified(self, req: _Request, _task: asyncio.Task[None]) -> None:
        """A verification ended (answered, cancelled or failed): count it out of the in-flight
        requests and let a held AUTH line go."""
        self._verifying -= 1
        if self._verifying == 0 and self._slot is not None and not self.closing:
            self._slot.idle()
        if self.requests.get(req.request_id) is req:
            del self.requests[req.request_id]
        self._request_done()

    async def _verify(self, req: _Request, request: AuthRequest) -> None:
        try:
            result = await self.server.authenticator.authenticate(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "%s: %s: id=%d authenticator failed", self.server.name, self.peer, req.request_id
            )
            self.abort("internal error")
            return
        if self.requests.get(req.request_id) is not req:
            return  # cancelled meanwhile, or the connection is going away
        del self.requests[req.request_id]
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: %s: id=%d mech=%s service=%s rip=%s outcome=%s user=%s",
                self.server.name,
                self.peer,
                req.request_id,
                request.mechanism,
                request.service,
                request.remote_ip,
                result.outcome.value,
                result.user if result.ok else "-",
            )
        if result.outcome is Outcome.OK:
            if not result.user:
                self.abort("authenticator returned OK without a user")
                return
            self._write(proto.ok_reply(req.request_id, result.user))
        elif result.outcome is Outcome.TEMPFAIL:
            self.abort("temporary failure (directory unavailable?)")
        else:
            code = FAIL_CODES.get(result.outcome)
            if result.outcome is Outcome.REJECTED and request.authzid and result.user:
                code = proto.FailCode.AUTHZ_FAIL  # the password was right; the authzid is not
            self._write(proto.fail_reply(req.request_id, code))

    def _write(self, data: bytes) -> None:
        if not self.closing and self.transport is not None:
            self.transport.write(data)


class DovecotAuthServer:
    """Serve the Dovecot auth-client protocol on the configured UNIX socket and/or TCP address."""

    name = "dovecot-auth"

    def __init__(self, settings: DovecotAuthSettings, authenticator: Authenticating) -> None:
        if not settings.socket.enabled and settings.tcp is None:
            raise ConfigError("dovecot_auth: neither the socket nor tcp is enabled")
        mechanisms: dict[str, type[Mechanism]] = {}
        for mech_name in settings.mechanisms:
            cls = MECHANISMS.get(mech_name.upper())
            if cls is None:
                raise ConfigError(f"dovecot_auth.mechanisms: unknown mechanism {mech_name!r}")
            mechanisms[cls.name] = cls
        if not mechanisms:
            raise ConfigError("dovecot_auth.mechanisms: at least one mechanism is required")
        self.settings = settings
        self.authenticator = authenticator
        self.mechanisms = mechanisms
        self._mech_lines = [
            (name, ("plaintext",) if cls.plaintext else ()) for name, cls in mechanisms.items()
        ]
        self._spid = str(os.getpid())
        self._cuid = itertools.count(1)
        self.slots = ConnectionSlots(
            settings.max_connections,
            reserve=settings.reserved_connections,
            name=self.name,
        )
        self.connections: set[_Connection] = set()
        self._bound: list[BoundSocket] = []
        self._servers: list[asyncio.Server] = []

    def handshake(self) -> bytes:
        """The handshake for a new connection (fresh CUID and cookie each time)."""
        return proto.handshake(
            self._mech_lines, spid=self._spid, cuid=next(self._cuid), cookie=secrets.token_hex(16)
        )

    @property
    def path(self) -> Path | None:
        return next((b.path for b in self._bound if b.path is not None), None)

    @property
    def tcp_port(self) -> int | None:
        return next((b.port for b in self._bound if b.port is not None), None)

    async def start(self) -> None:
        if self._servers:
            raise RuntimeError(f"{self.name} already started")
        try:
            if self.settings.socket.enabled:
                self._bound.append(bind_unix(self.settings.socket))
            if self.settings.tcp is not None:
                self._bound.append(bind_tcp(self.settings.tcp))
            loop = asyncio.get_running_loop()
            for bound in self._bound:
                factory = functools.partial(_Connection, self)
                if bound.path is not None:
                    server = await loop.create_unix_server(factory, sock=bound.sock)
                else:
                    server = await loop.create_server(factory, sock=bound.sock)
                self._servers.append(server)
        except BaseException:
            await self.close()
            raise
        log.debug("%s: listening on %s", self.name, ", ".join(b.describe() for b in self._bound))

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        connections = list(self.connections)
        for conn in connections:
            conn.abort("server shutting down")
        if connections:
            await asyncio.wait(
                [asyncio.ensure_future(c.finished.wait()) for c in connections],
                timeout=CLOSE_TIMEOUT,
            )
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for bound in self._bound:
            bound.remove_path()
            bound.sock.close()
        self._servers.clear()
        self._bound.clear()
