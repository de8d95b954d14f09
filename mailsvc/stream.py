"""The line transport under the POP3 and IMAP sessions: bounded line reads, exact-size literal
reads, idle timeouts and STARTTLS that throws away anything the client pipelined in plaintext
after the STARTTLS/STLS command (CVE-2011-0411 class: those bytes must never run as if they had
come over TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl


class LineTooLong(Exception):
    pass


class Closed(Exception):
    """The peer went away (or stayed silent past the timeout)."""


class Stream:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        timeout: float,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.tls = tls
        self.secured = implicit_tls
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        self.remote_ip = str(peer[0]) if isinstance(peer, tuple) and peer else None
        self.local_ip = str(local[0]) if isinstance(local, tuple) and local else None

    async def readline(self, limit: int) -> bytes:
        """One line without its CRLF (or LF); :class:`LineTooLong` past ``limit`` bytes."""
        try:
            async with asyncio.timeout(self.timeout):
                line = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            raise LineTooLong() from exc
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, OSError) as exc:
            raise Closed() from exc
        if len(line) > limit + 2:
            raise LineTooLong()
        return line[:-2] if line.endswith(b"\r\n") else line[:-1]

    async def readexactly(self, size: int) -> bytes:
        try:
            async with asyncio.timeout(self.timeout):
                return await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, OSError) as exc:
            raise Closed() from exc

    def buffered(self) -> bool:
        """Bytes the client already sent that nobody read yet (pipelining)."""
        buffer = getattr(self.reader, "_buffer", b"")
        return bool(buffer)

    async def write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise Closed() from exc

    async def start_tls(self) -> None:
        """Upgrade; whatever was pipelined after the STARTTLS command is discarded."""
        assert self.tls is not None
        buffer = getattr(self.reader, "_buffer", None)
        if isinstance(buffer, bytearray):
            buffer.clear()
        try:
            async with asyncio.timeout(self.timeout):
                await self.writer.start_tls(self.tls)
        except (ConnectionError, TimeoutError, OSError, ssl.SSLError) as exc:
            raise Closed() from exc
        self.secured = True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
            async with asyncio.timeout(5):
                await self.writer.wait_closed()
