"""The control socket: other idsvc processes (the CLI) drop the running server's auth cache.

A password changed or an account disabled with ``idsvc user …`` must be refused by the running
``idsvc serve`` at once, not after ``auth.cache_ttl``. The CLI is another process, so its
provisioner tells the server through this socket (the same idea as ``doveadm auth cache flush``).
Changes made behind idsvc's back (``ldapmodify``) still wait for the TTL, or for
``idsvc auth flush``.

Protocol: UNIX stream socket (mode 0600 by default: only the service's user and root), one
request line per connection, one reply line::

    C: FLUSH                    every cached decision
    C: FLUSH USER <address>     one canonical user
    C: FLUSH DOMAIN <domain>    every user of a domain
    S: OK | ERR <reason>

Lines are at most 1024 bytes; anything else is answered ``ERR`` and closed. The client side
(:class:`RemoteInvalidator`) never fails the change it reports: when no server listens, there is
no cache to drop; other errors are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from idsvc.config import SocketSettings
from idsvc.errors import InvalidInput
from idsvc.model import canonical_address, canonical_domain
from idsvc.wire.listen import BoundSocket, bind_unix

if TYPE_CHECKING:
    from idsvc.provisioning import Invalidator

log = logging.getLogger(__name__)

MAX_LINE = 1024
READ_TIMEOUT = 5.0


def parse_request(line: bytes) -> tuple[str, str | None]:
    """``(scope, name)`` for a request line: ``("all", None)``, ``("user", addr)``,
    ``("domain", name)``; names come back canonical. Raises InvalidInput."""
    if len(line) > MAX_LINE:
        raise InvalidInput("request line too long")
    try:
        words = line.decode("ascii").strip().split(" ")
    except UnicodeDecodeError as exc:
        raise InvalidInput("request is not ASCII") from exc
    match words:
        case ["FLUSH"]:
            return "all", None
        case ["FLUSH", "USER", name]:
            return "user", canonical_address(name)
        case ["FLUSH", "DOMAIN", name]:
            return "domain", canonical_domain(name)
    raise InvalidInput("unknown request")


def format_request(scope: str, name: str | None = None) -> bytes:
    if scope == "all":
        return b"FLUSH\n"
    return f"FLUSH {scope.upper()} {name}\n".encode("ascii")


class ControlServer:
    """The server side, a ``Listener`` started by ``idsvc serve``."""

    name = "control"

    def __init__(
        self,
        settings: SocketSettings,
        invalidator: Invalidator,
        prebound: BoundSocket | None = None,
    ) -> None:
        self._settings = settings
        self._invalidator = invalidator
        self._server: asyncio.Server | None = None
        self._bound: BoundSocket | None = None
        self.prebound = prebound  # e.g. passed by systemd socket activation

    @property
    def path(self) -> Path:
        return Path(self._settings.path)

    async def start(self) -> None:
        bound = self.prebound or bind_unix(self._settings)
        self.prebound = None
        self._bound = bound
        self._server = await asyncio.start_unix_server(self._handle, sock=bound.sock)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        bound, self._bound = self._bound, None
        if bound is not None:
            bound.remove_path()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            try:
                scope, name = parse_request(line)
            except InvalidInput as exc:
                writer.write(f"ERR {exc}\n".encode())
            else:
                if scope == "domain" and name is not None:
                    self._invalidator.invalidate_domain(name)
                else:
                    self._invalidator.invalidate(name)
                log.info("auth cache flushed: %s %s", scope, name or "")
                writer.write(b"OK\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def send_request(path: Path, scope: str, name: str | None = None, timeout: float = 2.0) -> str:
    """Send one request; returns the reply line. Raises OSError when nothing listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(format_request(scope, name))
        reply = b""
        while not reply.endswith(b"\n") and len(reply) <= MAX_LINE:
            chunk = sock.recv(MAX_LINE)
            if not chunk:
                break
            reply += chunk
    return reply.decode("ascii", "replace").strip()


class RemoteInvalidator:
    """An ``Invalidator`` that forwards to the running server's control socket."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def _send(self, scope: str, name: str | None) -> None:
        try:
            reply = send_request(self._path, scope, name)
        except (FileNotFoundError, ConnectionRefusedError):
            return  # no server running: no cache to drop
        except OSError as exc:
            log.warning("could not flush the server's auth cache via %s: %s", self._path, exc)
            return
        if reply != "OK":
            log.warning("the server refused to flush its auth cache: %s", reply)

    def invalidate(self, user: str | None = None) -> None:
        self._send("all" if user is None else "user", user)

    def invalidate_domain(self, domain: str) -> None:
        self._send("domain", domain)


class FanoutInvalidator:
    """Forwards every invalidation to several invalidators."""

    def __init__(self, invalidators: Iterable[Invalidator]) -> None:
        self._all = tuple(invalidators)

    def invalidate(self, user: str | None = None) -> None:
        for each in self._all:
            each.invalidate(user)

    def invalidate_domain(self, domain: str) -> None:
        for each in self._all:
            each.invalidate_domain(domain)
