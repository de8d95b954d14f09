"""An asyncio HTTP/1.x listener for local mail daemons, started by ``idsvc serve``.

What it does: listens on ``settings.listen`` (``unix:/path`` with mode/owner/group applied before
``listen()``, or ``host:port``; both via ``idsvc.wire.listen``), admits connections through
``ConnectionSlots`` (at ``max_connections`` a newcomer evicts the oldest connection that has not
sent a complete request, else the least recently active kept-alive one — never one whose request
is being decided; no peer holds more than ``max_connections - reserved_connections``), reads one
request head
of at most ``MAX_HEAD`` bytes and a ``Content-Length`` body of at most ``max_body`` bytes within
``read_timeout``, checks the shared-secret header when a secret is configured (constant-time
compare; 403 otherwise), and hands the request to the route's handler. Connections are kept alive
when the client asks for it (HTTP/1.1 by default), waiting at most ``idle_timeout`` for the next
request.

What it does not do: authenticate anyone (the handlers ask the ``Authenticator``), TLS, chunked
bodies, pipelining beyond one request at a time.

How it fails: a malformed, over-long or slow request gets its 4xx answer (or, when too slow, none)
and the connection is closed; a handler that raises gets a 500 and is logged; none of this
affects other connections. Nothing here logs a header value or a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from idsvc.config import MailHttpSettings, SocketSettings
from idsvc.wire.listen import (
    BoundSocket,
    ConnectionSlots,
    Peer,
    Slot,
    bind_tcp,
    bind_unix,
    peer_key,
    peer_of,
)
from idsvc.wire.mailhttp.protocol import (
    MAX_HEAD,
    HttpError,
    HttpRequest,
    parse_head,
    render_response,
)

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0  # seconds in-flight requests get when the server stops
MAX_REQUESTS_PER_CONNECTION = 10_000


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int = 200
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    close: bool = False  # close the connection after this response


Handler = Callable[[HttpRequest, Peer], Awaitable[HttpResponse]]


class _Evictable:
    """What ``ConnectionSlots`` closes to make room for a newcomer."""

    __slots__ = ("name", "writer")

    def __init__(self, name: str, writer: asyncio.StreamWriter) -> None:
        self.name = name
        self.writer = writer

    def evict(self) -> None:
        log.info("%s: evicting a connection to admit a new one", self.name)
        self.writer.transport.abort()


Routes = Mapping[str, Mapping[str, Handler]]  # path -> method -> handler


def json_response(body: bytes, status: int = 200) -> HttpResponse:
    return HttpResponse(status, (("Content-Type", "application/json"),), body)


class MailHttpServer:
    """A ``Listener``: one socket, a fixed route table."""

    def __init__(self, name: str, settings: MailHttpSettings, routes: Routes) -> None:
        self.name = name
        self.settings = settings
        self.routes = routes
        self.slots = ConnectionSlots(
            settings.max_connections, reserve=settings.reserved_connections
        )
        self._secret = (
            None if settings.secret is None else settings.secret.get_secret_value().encode("utf-8")
        )
        self._bound: BoundSocket | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: set[asyncio.Task[None]] = set()  # waiting for the first byte of a request
        self.url: str | None = None
        self.path: Path | None = None
        self.port: int | None = None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"{self.name} already started")
        path = self.settings.unix_path
        if path is not None:
            s = self.settings
            bound = bind_unix(SocketSettings(path=path, mode=s.mode, owner=s.owner, group=s.group))
        else:
            bound = bind_tcp(self.settings.listen)
        self._bound = bound
        try:
            if bound.path is not None:
                self._server = await asyncio.start_unix_server(
                    self._accept, sock=bound.sock, limit=MAX_HEAD
                )
                self.path = bound.path
                self.url = f"unix:{bound.path}"
            else:
                self._server = await asyncio.start_server(
                    self._accept, sock=bound.sock, limit=MAX_HEAD
                )
                host = f"[{bound.host}]" if bound.host and ":" in bound.host else bound.host
                self.port = bound.port
                self.url = f"http://{host}:{bound.port}"
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._idle):  # nothing in flight there: no reason to wait
            task.cancel()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        if self._bound is not None:
            self._bound.remove_path()
            self._bound.sock.close()
            self._bound = None

    # -- connections --------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        conn = _Evictable(self.name, writer)
        slot = self.slots.admit(conn, peer_key(writer))
        if slot is None:  # every slot has a request in flight
            log.warning("%s: %d connections busy, refusing one", self.name, self.slots.limit)
            writer.transport.abort()
            return
        if task is not None:
            self._tasks.add(task)
        peer = peer_of(writer)
        try:
            await self._serve(reader, writer, peer, slot)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("%s: unexpected error on a connection from %s", self.name, peer)
        finally:
            slot.release()
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer, slot: Slot
    ) -> None:
        for served in range(MAX_REQUESTS_PER_CONNECTION):
            if self._server is None or not self._server.is_serving():
                return
            # the first byte of a request may take idle_timeout; the rest read_timeout
            timeout = self.settings.idle_timeout if served else self.settings.read_timeout
            task = asyncio.current_task()
            if task is not None:  # between requests nothing is in flight: close need not wait
                self._idle.add(task)
            try:
                async with asyncio.timeout(timeout):
                    first = await reader.read(1)
            except TimeoutError:
                return
            finally:
                if task is not None:
                    self._idle.discard(task)
            if not first:
                return
            try:
                request = await self._read_request(first, reader)
            except HttpError as exc:
                log.info("%s: %d %s (from %s)", self.name, exc.status, exc.reason, peer)
                await self._send(writer, HttpResponse(exc.status, body=b""), close=True)
                return
            except TimeoutError:
                log.info("%s: request not read within %.0f s (from %s)", self.name, timeout, peer)
                await self._send(writer, HttpResponse(408), close=True)
                return
            slot.busy()  # a complete request: never evicted while it is decided
            response = await self._dispatch(request, peer)
            keep = request.keep_alive and not response.close
            await self._send(writer, response, close=not keep, version=request.version)
            if not keep:
                return
            slot.idle()  # proven, waiting for the next request: evictable, least recent first

    async def _read_request(self, first: bytes, reader: asyncio.StreamReader) -> HttpRequest:
        async with asyncio.timeout(self.settings.read_timeout):
            try:
                rest = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise HttpError(431, "request head too large") from None
            except asyncio.IncompleteReadError as exc:
                raise ConnectionResetError("client closed inside a request head") from exc
            head = first + rest[:-4]
            request = parse_head(head)
            if request.content_length > self.settings.max_body:
                raise HttpError(413, "request body too large")
            body = b""
            if request.content_length:
                body = await reader.readexactly(request.content_length)
        return HttpRequest(
            request.method,
            request.path,
            request.query,
            request.version,
            request.headers,
            request.content_length,
            request.keep_alive,
            body,
        )

    async def _dispatch(self, request: HttpRequest, peer: Peer) -> HttpResponse:
        methods = self.routes.get(request.path)
        if methods is None:
            return HttpResponse(404)
        handler = methods.get(request.method)
        if handler is None:
            allow = ", ".join(sorted(methods))
            return HttpResponse(405, (("Allow", allow),))
        if self._secret is not None:
            given = request.header(self.settings.secret_header)
            if given is None or not hmac.compare_digest(given.encode("latin-1"), self._secret):
                log.warning(
                    "%s: missing or wrong %s from %s", self.name, self.settings.secret_header, peer
                )
                return HttpResponse(403, close=True)
        try:
            return await handler(request, peer)
        except Exception:
            log.exception("%s: handler for %s failed", self.name, request.path)
            return HttpResponse(500, close=True)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        response: HttpResponse,
        *,
        close: bool,
        version: str = "HTTP/1.1",
    ) -> None:
        data = render_response(
            response.status, response.headers, response.body, keep_alive=not close, version=version
        )
        writer.write(data)
        async with asyncio.timeout(self.settings.read_timeout):
            await writer.drain()
