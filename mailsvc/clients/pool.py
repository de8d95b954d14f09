"""A bounded pool of persistent stream connections for one-request-at-a-time protocols
(socketmap, policy).

What it does: lends a connection for one exchange (``async with pool.exchange() as conn``);
opens at most ``size`` connections, so at most ``size`` exchanges run at once and the rest wait
(bounded: waiting longer than ``timeout`` is :class:`Unavailable`); keeps idle connections for
reuse, closing one idle longer than ``max_idle`` or older than ``max_ttl`` (Postfix's 10 s / 100 s
for socketmap); an exchange that raises discards its connection, so a half-read reply can never
be taken for the next request's answer.

A reused connection the server has closed in the meantime fails on first use; the caller's
request is retried once on a fresh connection (:meth:`Pool.run`), as Postfix does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from mailsvc.clients.errors import Unavailable
from mailsvc.clients.target import Target

T = TypeVar("T")


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened: float = field(default_factory=time.monotonic)
    used: float = field(default_factory=time.monotonic)
    reused: bool = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Pool:
    """Persistent connections to ``target``, at most ``size`` at once."""

    def __init__(
        self,
        target: Target,
        *,
        size: int = 8,
        timeout: float = 10.0,
        max_idle: float = 10.0,
        max_ttl: float = 100.0,
        limit: int = 65536,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.max_idle = max_idle
        self.max_ttl = max_ttl
        self._limit = limit
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Conn] = []
        self._closed = False

    def _fresh(self, conn: Conn, now: float) -> bool:
        return now - conn.used < self.max_idle and now - conn.opened < self.max_ttl

    async def _take(self) -> Conn:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if self._fresh(conn, now) and not conn.reader.at_eof():
                conn.reused = True
                return conn
            conn.close()
        reader, writer = await self.target.connect(self.timeout, self._limit)
        return Conn(reader, writer)

    @contextlib.asynccontextmanager
    async def exchange(self) -> AsyncIterator[Conn]:
        """A connection for one request/reply; any exception discards it."""
        if self._closed:
            raise Unavailable("client closed")
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise Unavailable(f"{self.target}: all connections busy") from exc
        try:
            conn = await self._take()
            try:
                yield conn
            except BaseException:
                conn.close()
                raise
            conn.used = time.monotonic()
            if self._closed:
                conn.close()
            else:
                self._idle.append(conn)
        finally:
            self._slots.release()

    async def run(self, step: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``step`` on a pooled connection within ``timeout``; retried once on a fresh
        connection when a reused one turns out dead. Failures become :class:`Unavailable`."""
        for attempt in (1, 2):
            reused = False
            try:
                async with self.exchange() as conn:
                    reused = conn.reused
                    async with asyncio.timeout(self.timeout):
                        return await step(conn)
            except (ConnectionError, asyncio.IncompleteReadError, EOFError) as exc:
                if attempt == 2 or not reused:  # only a reused idle connection may be stale
                    raise Unavailable(f"{self.target}: connection lost") from exc
            except TimeoutError as exc:
                raise Unavailable(f"{self.target}: no reply within {self.timeout}s") from exc
            except OSError as exc:
                raise Unavailable(f"{self.target}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()
