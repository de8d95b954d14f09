"""The saslauthd "mux" listener: libsasl2 clients (Postfix ``smtpd_sasl_type = cyrus``) ask it.

What it does: listens on ``settings.socket`` (a UNIX stream socket, see ``idsvc.wire.listen``),
reads exactly one request per connection (protocols.md §1), asks the shared ``Authenticator`` and
answers with one counted string, then ``shutdown(SHUT_WR)``, a short bounded drain when bytes may
still be unread, and close:

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
import contextlib
import logging
import time
from pathlib import Path
from typing import Protocol

from idsvc.auth.request import AuthRequest, AuthResult, Outcome
from idsvc.config import SaslauthdSettings
from idsvc.model import Secret
from idsvc.wire.listen import BoundSocket, ConnectionLimiter, bind_unix, peer_of, start_server
from idsvc.wire.saslauthd.protocol import (
    MIN_FIELDS,
    RequestDecoder,
    SaslauthdProtocolError,
    SaslauthdRequest,
    encode_reply,
)

log = logging.getLogger(__name__)

READ_SIZE = 4096
DRAIN_TIMEOUT = 1.0  # after replying, wait this long at most for the client to hang up
DRAIN_LIMIT = 65536  # and read at most this many bytes meanwhile
CLOSE_GRACE = 5.0  # close(): how long running requests may take to finish

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


class _Hangup(Exception):
    """The client closed or stalled before sending a whole request."""


def _safe(text: str, limit: int = 64) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text[:limit])


class _LazyPeer:
    """Names the peer only if a log line is actually emitted (SO_PEERCRED is a syscall)."""

    __slots__ = ("_writer",)

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def __str__(self) -> str:
        return str(peer_of(self._writer))


class _Described:
    """The loggable part of a request, formatted only when a log line is emitted."""

    __slots__ = ("_peer", "_request")

    def __init__(self, request: SaslauthdRequest, peer: _LazyPeer) -> None:
        self._request = request
        self._peer = peer

    def __str__(self) -> str:
        r = self._request
        return (
            f"login={_safe(r.login)!r} service={_safe(r.service, 32)!r} realm={_safe(r.realm)!r} "
            f"client={_safe(r.client_addr or '-')} peer={self._peer}"
        )


class SaslauthdServer:
    """See the module docstring. ``start()`` binds and serves; ``close()`` stops and unlinks."""

    name = "saslauthd"

    def __init__(self, settings: SaslauthdSettings, authenticator: Authenticating) -> None:
        self._settings = settings
        self._auth = authenticator
        self._limiter = ConnectionLimiter(settings.max_connections)
        self._bound: BoundSocket | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    @property
    def path(self) -> Path:
        return Path(self._settings.socket.path)

    @property
    def limiter(self) -> ConnectionLimiter:
        return self._limiter

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("saslauthd listener already started")
        self._bound = bind_unix(self._settings.socket)
        try:
            self._server = await start_server(
                self._bound, self._handle, self._limiter, name=self.name, read_limit=READ_SIZE
            )
        except BaseException:
            self._bound.sock.close()
            self._bound.remove_path()
            self._bound = None
            raise
        log.info("%s: listening on %s", self.name, self._bound.describe())

    async def close(self) -> None:
        """Stop accepting, give running requests ``CLOSE_GRACE`` seconds, remove the socket."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=CLOSE_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if server is not None:
            await server.wait_closed()
        if self._bound is not None:
            self._bound.remove_path()
            self._bound = None

    # -- one connection ---------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve_one(reader, writer)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _LazyPeer(writer)
        decoder = RequestDecoder()
        try:
            clean = await self._read_request(reader, decoder)
            request = decoder.request()
        except _Hangup as exc:
            log.info("%s: %s from %s; closed without reply", self.name, exc, peer)
            return
        except SaslauthdProtocolError as exc:
            log.warning("%s: malformed request from %s: %s", self.name, peer, exc)
            await self._reply(reader, writer, NO_MALFORMED, drain=True)
            return
        reply = await self._decide(request, peer)
        if reply is None:
            return  # TEMPFAIL: hang up so the client reports a temporary failure
        await self._reply(reader, writer, reply, drain=not clean)

    async def _read_request(self, reader: asyncio.StreamReader, decoder: RequestDecoder) -> bool:
        """Read fields 1-4 (and 5 when expected). True when the request came in one read with
        nothing after it: then nothing is left unread and the reply needs no drain."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.read_timeout
        chunks = 0
        try:
            async with asyncio.timeout_at(deadline):
                while decoder.fields < MIN_FIELDS:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        raise _Hangup(f"truncated request ({decoder.fields} fields)")
                    chunks += 1
                    decoder.feed(data)
        except TimeoutError:
            raise _Hangup(f"read timeout ({decoder.fields} fields)") from None
        clean = chunks == 1 and not decoder.partial and not decoder.ignored
        if decoder.fields > MIN_FIELDS or self._settings.fifth_field_grace <= 0:
            return clean
        if clean:
            # libsasl writes the whole request with one writev(), and one read returns all that
            # had arrived: a 5th field would have come with the other four. Waiting anyway
            # would cap every 4-field client at 1/grace requests per second.
            return True
        # fields 1-4 came in pieces, or part of a 5th is here: give the rest a short grace
        grace = min(loop.time() + self._settings.fifth_field_grace, deadline)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(grace):
                while decoder.fields == MIN_FIELDS:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        break
                    decoder.feed(data)
        return False

    async def _decide(self, request: SaslauthdRequest, peer: _LazyPeer) -> bytes | None:
        started = time.perf_counter()
        what = _Described(request, peer)
        if not request.login or not request.password:
            # never reaches the directory (reliability.md #3)
            log.info("%s: empty login or password: %s", self.name, what)
            return NO_GENERIC
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
        elapsed = time.perf_counter() - started
        log.info(
            "%s: %s outcome=%s%s detail=%r elapsed=%.3f",
            self.name,
            what,
            result.outcome.value,
            " (cached)" if result.cached else "",
            result.detail,
            elapsed,
        )
        return REPLIES[result.outcome]

    async def _reply(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reply: bytes,
        *,
        drain: bool,
    ) -> None:
        """Send the reply and half-close. With ``drain``, read (bounded) what the client may
        still send before the caller closes: closing with unread bytes can reset the connection
        and lose the reply. A request read whole in one piece leaves nothing unread."""
        try:
            writer.write(reply)
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            if not drain:
                return
            async with asyncio.timeout(DRAIN_TIMEOUT):
                drained = 0
                while drained < DRAIN_LIMIT:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        break
                    drained += len(data)
        except (TimeoutError, ConnectionError, OSError):
            pass
