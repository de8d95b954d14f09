"""Dovecot auth-client protocol client: SASL exchanges relayed to idsvc (or Dovecot itself).

What it does: keeps one connection to the auth socket, opened on first use (handshake: ``VERSION``
+ ``CPID`` out, ``VERSION … MECH … DONE`` in) and reopened after it drops; multiplexes any number of
concurrent requests over it (up to ``max_pending``), each with its own id, and routes every reply
line to its request by id. :meth:`DovecotAuthClient.authenticate` relays one SASL exchange: the
server's challenges go to the caller's ``respond`` callback (which asks the SMTP/IMAP/POP3 client),
and the exchange ends with :class:`Outcome` (``user`` set on success).

How it fails: no connection, a lost connection, a reply later than ``timeout``, a malformed line,
``FAIL code=temp_fail`` or more than ``max_pending`` requests in flight raise :class:`Unavailable`
(the front end answers ``454 4.7.0``). A definite ``FAIL`` is an :class:`Outcome` without user.
Nothing here logs credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailsvc.clients import dovecot_codec as codec
from mailsvc.clients.errors import Unavailable
from mailsvc.clients.target import Target

log = logging.getLogger("mailsvc.clients.dovecot_auth")

MAX_ID = 2**32 - 1
Respond = Callable[[bytes], Awaitable[bytes | None]]


@dataclass(frozen=True)
class Outcome:
    """``user``: the canonical login on success; ``None`` on a definite failure (``aborted``
    when the client gave up with ``*``)."""

    user: str | None
    aborted: bool = False
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.user is not None


class MechanismUnavailable(Exception):
    """The auth server does not offer this mechanism."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.mechanisms: dict[str, frozenset[str]] = {}
        self.pending: dict[int, asyncio.Queue[codec.Reply | None]] = {}
        self.task: asyncio.Task[None] | None = None
        self.write_lock = asyncio.Lock()
        self.alive = True

    async def readline(self) -> str:
        try:
            raw = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            raise codec.ServerProtocolError("line too long") from exc
        except asyncio.IncompleteReadError as exc:
            raise EOFError("auth server closed the connection") from exc
        if len(raw) > codec.MAX_LINE + 1:
            raise codec.ServerProtocolError("line too long")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise codec.ServerProtocolError("line is not UTF-8") from exc

    async def send(self, data: bytes) -> None:
        async with self.write_lock:
            if not self.alive:
                raise Unavailable("auth connection lost")
            try:
                self.writer.write(data)
                await self.writer.drain()
            except (ConnectionError, OSError) as exc:
                self.shutdown()
                raise Unavailable("auth connection lost") from exc

    def shutdown(self) -> None:
        if not self.alive:
            return
        self.alive = False
        for queue in self.pending.values():
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        with contextlib.suppress(Exception):
            self.writer.close()

    async def read_replies(self) -> None:
        try:
            while True:
                reply = codec.parse_reply(await self.readline())
                queue = self.pending.get(reply.request_id)
                if queue is None:
                    continue  # a request we cancelled or timed out: ignore its late reply
                try:
                    queue.put_nowait(reply)
                except asyncio.QueueFull:
                    raise codec.ServerProtocolError("too many replies for one request") from None
        except (EOFError, OSError, codec.ServerProtocolError) as exc:
            log.warning("auth server connection dropped: %s", exc)
        finally:
            self.shutdown()


class DovecotAuthClient:
    """SASL through a Dovecot auth-client socket (idsvc's ``auth-client``)."""

    def __init__(
        self,
        target: str | Target,
        *,
        service: str = "smtp",
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_pending: int = 1024,
    ) -> None:
        self.target = target if isinstance(target, Target) else Target.parse(target)
        self.service = service
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_pending = max_pending
        self._conn: _Connection | None = None
        self._connecting = asyncio.Lock()
        self._next_id = 0
        self._closed = False

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.alive:
            return conn
        async with self._connecting:
            conn = self._conn
            if conn is not None and conn.alive:
                return conn
            if self._closed:
                raise Unavailable("auth client closed")
            reader, writer = await self.target.connect(self.connect_timeout, codec.MAX_LINE + 2)
            conn = _Connection(reader, writer)
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await conn.send(codec.hello(os.getpid()))
                    shake = codec.HandshakeReader()
                    while not shake.done:
                        shake.feed(await conn.readline())
            except (TimeoutError, EOFError, OSError, codec.ServerProtocolError) as exc:
                conn.shutdown()
                raise Unavailable(f"auth handshake with {self.target} failed: {exc}") from exc
            conn.mechanisms = shake.result().mechanisms
            conn.task = asyncio.create_task(conn.read_replies(), name="dovecot-auth-reader")
            self._conn = conn
            return conn

    def _new_id(self, conn: _Connection) -> int:
        for _ in range(len(conn.pending) + 1):
            self._next_id = self._next_id % MAX_ID + 1
            if self._next_id not in conn.pending:
                return self._next_id
        raise Unavailable("no free request id")  # pragma: no cover

    async def mechanisms(self) -> dict[str, frozenset[str]]:
        """What the server offers (mechanism → property flags)."""
        return dict((await self._connection()).mechanisms)

    async def authenticate(
        self,
        mechanism: str,
        *,
        respond: Respond,
        initial: bytes | None = None,
        local_ip: str | None = None,
        remote_ip: str | None = None,
        secured: bool = False,
    ) -> Outcome:
        """Relay one SASL exchange. ``respond(challenge)`` returns the client's answer, or
        ``None`` when the client aborted (a ``CANCEL`` is sent)."""
        conn = await self._connection()
        mech = mechanism.upper()
        if mech not in conn.mechanisms:
            raise MechanismUnavailable(mech)
        if len(conn.pending) >= self.max_pending:
            raise Unavailable("too many authentications in flight")
        request_id = self._new_id(conn)
        queue: asyncio.Queue[codec.Reply | None] = asyncio.Queue(maxsize=4)
        conn.pending[request_id] = queue
        params: dict[str, str | None] = {"service": self.service, "nologin": None}
        if local_ip:
            params["lip"] = local_ip
        if remote_ip:
            params["rip"] = remote_ip
        if secured:
            params["secured"] = None
        try:
            await conn.send(codec.auth_line(request_id, mech, params, initial))
            while True:
                try:
                    async with asyncio.timeout(self.timeout):
                        reply = await queue.get()
                except TimeoutError:
                    conn.shutdown()  # a server that lost track of a request is not trusted
                    raise Unavailable("auth server did not answer in time") from None
                if reply is None:
                    raise Unavailable("auth connection lost")
                if reply.kind == "OK":
                    if not reply.user or "nologin" in reply.params or "proxy" in reply.params:
                        return Outcome(None, code="nologin")
                    return Outcome(reply.user)
                if reply.kind == "FAIL":
                    if reply.temporary:
                        raise Unavailable("auth server: temporary failure")
                    return Outcome(None, code=reply.params.get("code"))
                answer = await respond(reply.data)
                if answer is None:
                    with contextlib.suppress(Unavailable):
                        await conn.send(codec.cancel_line(request_id))
                    return Outcome(None, aborted=True)
                try:
                    line = codec.cont_line(request_id, answer)
                except ValueError:
                    with contextlib.suppress(Unavailable):
                        await conn.send(codec.cancel_line(request_id))
                    return Outcome(None)
                await conn.send(line)
        finally:
            conn.pending.pop(request_id, None)

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.shutdown()
            if conn.task is not None:
                conn.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await conn.task
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()
