"""An asyncio TCP listener for the line-based front ends (POP3, IMAP): connection limits (total
and per client IP, refused with a protocol-specific line), plain or implicit TLS, and one
session task per connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable

from mailsvc.config import ListenerSettings
from mailsvc.smtp.session import Limits
from mailsvc.stream import Stream

log = logging.getLogger("mailsvc.listener")
CLOSE_GRACE = 10.0
READ_LIMIT = 1 << 16

SessionFactory = Callable[[Stream], Awaitable[None]]


class LineListener:
    def __init__(
        self,
        name: str,
        settings: ListenerSettings,
        run_session: SessionFactory,
        *,
        limits: Limits,
        refusal: bytes,
        timeout: float,
        tls: ssl.SSLContext | None,
        implicit_tls: bool = False,
    ) -> None:
        self.name = name
        self.settings = settings
        self.run_session = run_session
        self.limits = limits
        self.refusal = refusal
        self.timeout = timeout
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._connected,
            self.settings.host,
            self.settings.port,
            ssl=self.tls if self.implicit_tls else None,
            limit=READ_LIMIT,
            reuse_address=True,
        )

    @property
    def where(self) -> str:
        if self.server is None or not self.server.sockets:
            return self.settings.listen
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = Stream(reader, writer, timeout=self.timeout, tls=self.tls,
                        implicit_tls=self.implicit_tls)  # fmt: skip
        ip = stream.remote_ip or "unknown"
        if not self.limits.enter(ip):
            log.warning("%s: connection limit reached for %s: refused", self.name, ip)
            with contextlib.suppress(Exception):
                writer.write(self.refusal)
            await stream.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            await self.run_session(stream)
        except Exception:
            log.exception("%s: session failed", self.name)
        finally:
            self.limits.leave(ip)
            await stream.close()
            if task is not None:
                self.tasks.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_GRACE):
                    await self.server.wait_closed()
