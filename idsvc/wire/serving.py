"""The asyncio transport shared by the lookup listeners (socketmap, tcp_table, policy, Dovecot
dict): sockets from :mod:`idsvc.wire.listen`, one session per connection answering its requests
strictly in order.

What it does: listens on a UNIX socket (``SocketSettings``, when enabled) and/or loopback TCP;
admits connections through ``listen.ConnectionSlots`` (``max_connections``,
``reserved_connections``: when full, a newcomer evicts an unproven or idle connection, never one
with requests to answer; a connection is proven once one complete request has arrived); per
connection, decodes frames with the protocol's pure decoder and hands them one at a time to the
protocol's ``Session``, which writes its reply through a :class:`Reply` (and may ``drain`` while
it streams a long one, as dict iteration does). At most ``MAX_QUEUED`` decoded requests wait per
connection: beyond that, and while the peer does not read its replies, the connection is not read
from. A partial request must be completed within ``request_timeout``; a connection silent for
``idle_timeout`` with nothing in progress is closed.

What it does not do: know any protocol. Each protocol's ``server.py`` supplies a decoder factory
and a session factory and stays a few dozen lines.

How it fails: a framing error, a session that asks to close (returns False), or an unexpected
exception in a session closes that connection only, with one log line; other connections and
the listener carry on. :meth:`close` stops accepting, lets requests in progress finish (at most
``CLOSE_TIMEOUT`` s) and removes the socket file. Start-up problems raise ``ListenError``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from idsvc.config import LookupListenerSettings, SocketSettings
from idsvc.wire.framing import Decoder, FramingError
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

MAX_QUEUED = 32  # decoded requests waiting per connection before reading stops
CLOSE_TIMEOUT = 5.0

R = TypeVar("R")
R_contra = TypeVar("R_contra", contravariant=True)


class Reply:
    """Where a session writes its answer; :meth:`drain` waits while the peer is not reading."""

    __slots__ = ("_conn",)

    def __init__(self, conn: _Connection[Any]) -> None:
        self._conn = conn

    def write(self, data: bytes) -> None:
        transport = self._conn.transport
        if transport is not None and not self._conn.closing:
            transport.write(data)

    async def drain(self) -> None:
        await self._conn.writable.wait()
        if self._conn.closing:
            raise ConnectionResetError("peer went away")

    @property
    def peer(self) -> str:
        return self._conn.peer


class Session(Protocol[R_contra]):
    """One connection's protocol state. ``handle`` answers one request through ``reply``;
    False closes the connection (after what was written)."""

    async def handle(self, request: R_contra, reply: Reply) -> bool: ...


class _Connection(asyncio.Protocol, Generic[R]):
    def __init__(self, server: LookupServer[R]) -> None:
        self.server = server
        self.transport: StreamTransport | None = None
        self.peer = "unknown"
        self.closing = False
        self.decoder: Decoder[R] = server.decoder_factory()
        self.session: Session[R] = server.session_factory()
        self.queue: collections.deque[R] = collections.deque()
        self.wakeup = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.busy = False
        self.paused = False
        self.worker: asyncio.Task[None] | None = None
        self.closing_after_queue = False  # the peer sent EOF, or the server is closing
        self._slot: Slot | None = None
        self._proven = False  # a complete request has arrived (the slot table's "proven")
        self._timer: asyncio.TimerHandle | None = None

    # -- transport callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = stream_transport(transport)
        peer = peer_of(self.transport)
        self.peer = str(peer)
        slot = self.server.slots.admit(self, peer.key)
        if slot is None:
            log.warning(
                "%s: all %d connections have requests in progress, closing %s",
                self.server.name,
                self.server.slots.limit,
                self.peer,
            )
            self.closing = True
            self.transport.abort()
            return
        self._slot = slot
        self.server.connections.add(self)
        self.worker = asyncio.get_running_loop().create_task(self._work())
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self._proven and not self.busy and not self.queue and self._slot is not None:
            self._slot.idle()  # activity: the least recently active idle connection goes first
        self.decoder.feed(data)
        self._take()
        self._arm()

    def eof_received(self) -> bool:
        # the peer is done sending: answer what it asked, then close
        self.closing_after_queue = True
        self.wakeup.set()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.writable.set()
        self.wakeup.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._slot is not None:
            self._slot.release()
            self._slot = None
            self.server.connections.discard(self)

    def pause_writing(self) -> None:
        self.writable.clear()
        self._pause()

    def resume_writing(self) -> None:
        self.writable.set()
        self._maybe_resume()

    # -- flow -------------------------------------------------------------------------------

    def _take(self) -> None:
        """Move complete frames from the decoder to the queue, up to MAX_QUEUED."""
        try:
            while len(self.queue) < MAX_QUEUED:
                request = self.decoder.next()
                if request is None:
                    break
                self.queue.append(request)
        except FramingError as exc:
            self.abort(f"protocol error: {exc}", logging.WARNING)
            return
        if len(self.queue) >= MAX_QUEUED:
            self._pause()
        if self.queue:
            self._proven = True
            if self._slot is not None:
                self._slot.busy()  # requests to answer: never evicted meanwhile
            self.wakeup.set()

    def _pause(self) -> None:
        if not self.paused and self.transport is not None and not self.closing:
            self.paused = True
            self.transport.pause_reading()

    def _maybe_resume(self) -> None:
        if (
            self.paused
            and not self.closing
            and self.writable.is_set()
            and len(self.queue) < MAX_QUEUED
            and self.transport is not None
        ):
            self.paused = False
            self.transport.resume_reading()

    def _arm(self) -> None:
        """(Re)start the one timer: ``request_timeout`` while a request is partly received,
        else ``idle_timeout``."""
        if self._timer is not None:
            self._timer.cancel()
        if self.closing:
            return
        limits = self.server.limits
        delay = limits.request_timeout if self.decoder.pending else limits.idle_timeout
        self._timer = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        if self.busy or self.queue:
            self._arm()  # waiting for our own answer: the lookups bound that themselves
            return
        partial = self.decoder.pending
        self.abort("request not completed in time" if partial else "idle timeout", logging.INFO)

    def evict(self) -> None:
        """The slot table needs room (this connection is unproven or idle)."""
        if not self.closing:
            state = "idle" if self._proven else "unproven (no complete request yet)"
            log.info("%s: %s: evicting %s connection", self.server.name, self.peer, state)
        self.closing = True
        self.queue.clear()
        self.wakeup.set()
        if self.transport is not None:
            self.transport.abort()

    def abort(self, why: str, level: int) -> None:
        if not self.closing:
            log.log(level, "%s: %s: closing connection: %s", self.server.name, self.peer, why)
        self.closing = True
        self.queue.clear()
        self.wakeup.set()
        if self.transport is not None:
            self.transport.abort()

    async def _work(self) -> None:
        reply = Reply(self)
        try:
            while not self.closing:
                if not self.queue:
                    if self.closing_after_queue:
                        break
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    continue
                request = self.queue.popleft()
                self.busy = True
                try:
                    keep = await self.session.handle(request, reply)
                finally:
                    self.busy = False
                if not keep:
                    break
                self._take()
                if not self.queue and self._slot is not None:
                    self._slot.idle()
                self._maybe_resume()
                self._arm()
        except ConnectionResetError:
            pass
        except Exception:
            log.exception("%s: %s: unexpected error; disconnecting", self.server.name, self.peer)
            self.abort("internal error", logging.DEBUG)
            return
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.close()  # after what was written


class LookupServer(Generic[R]):
    """A lookup listener (``idsvc.runtime.Listener``); see the module docstring."""

    def __init__(
        self,
        name: str,
        limits: LookupListenerSettings,
        *,
        socket: SocketSettings | None,
        decoder_factory: Callable[[], Decoder[R]],
        session_factory: Callable[[], Session[R]],
    ) -> None:
        self.name = name
        self.limits = limits
        self.socket = socket if socket is not None and socket.enabled else None
        self.decoder_factory = decoder_factory
        self.session_factory = session_factory
        self.slots = ConnectionSlots(
            limits.max_connections, reserve=limits.reserved_connections, name=name
        )
        self.connections: set[_Connection[R]] = set()
        self._servers: list[asyncio.Server] = []
        self._bound: list[BoundSocket] = []

    @property
    def path(self) -> Path | None:
        return self.socket.path if self.socket is not None else None

    @property
    def tcp_port(self) -> int | None:
        for bound in self._bound:
            if bound.port is not None:
                return bound.port
        return None

    def _connection(self) -> _Connection[R]:
        return _Connection(self)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.socket is not None:
                self._bound.append(bind_unix(self.socket))
            if self.limits.tcp:
                self._bound.append(bind_tcp(self.limits.tcp))
            for bound in self._bound:
                if bound.path is not None:
                    server = await loop.create_unix_server(self._connection, sock=bound.sock)
                else:
                    server = await loop.create_server(self._connection, sock=bound.sock)
                self._servers.append(server)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for bound in self._bound:
            bound.remove_path()
        workers = [c.worker for c in self.connections if c.worker is not None]
        for conn in list(self.connections):
            conn.closing_after_queue = True
            conn.wakeup.set()
        if workers:
            _, late = await asyncio.wait(workers, timeout=CLOSE_TIMEOUT)
            for task in late:
                task.cancel()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
        self._servers.clear()
        for bound in self._bound:
            bound.sock.close()
        self._bound.clear()
