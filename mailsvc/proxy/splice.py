"""Byte splicing between a client and its upstream once both are logged in.

Two pumps copy at most :data:`CHUNK` bytes at a time and wait for the receiving side to drain
below :data:`HIGH_WATER` before reading more, so a peer that stops reading stops the other side
too (TCP back-pressure) instead of growing a buffer: per direction at most the StreamReader's
buffer (twice its limit), one chunk and the transport's high-water mark are held. A watchdog ends
the splice after ``idle`` seconds without a byte moving either way. When either side closes
(or fails, or the watchdog fires) both are closed together.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

CHUNK = 1 << 16
HIGH_WATER = 1 << 16


@dataclass
class Spliced:
    """What went through: bytes each way and why it ended."""

    to_upstream: int = 0
    to_client: int = 0
    reason: str = ""


class _Clock:
    def __init__(self) -> None:
        self.last = asyncio.get_running_loop().time()

    def touch(self) -> None:
        self.last = asyncio.get_running_loop().time()


async def _pump(
    src: asyncio.StreamReader,
    dst: asyncio.StreamWriter,
    clock: _Clock,
    result: Spliced,
    to_client: bool,
) -> str:
    side = "upstream" if to_client else "client"
    try:
        while True:
            data = await src.read(CHUNK)
            if not data:
                return f"{side} closed"
            dst.write(data)
            if to_client:
                result.to_client += len(data)
            else:
                result.to_upstream += len(data)
            clock.touch()
            await dst.drain()
            clock.touch()
    except (ConnectionError, OSError, ssl.SSLError) as exc:
        return f"{side} connection error: {type(exc).__name__}"


async def _watchdog(clock: _Clock, idle: float) -> str:
    loop = asyncio.get_running_loop()
    while True:
        remaining = clock.last + idle - loop.time()
        if remaining <= 0:
            return f"idle for {idle:g}s"
        await asyncio.sleep(remaining)


def _bound(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(AttributeError, NotImplementedError):
        writer.transport.set_write_buffer_limits(high=HIGH_WATER)


async def splice(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    *,
    idle: float,
) -> Spliced:
    """Copy both ways until one side closes or nothing moves for ``idle`` seconds. The caller
    closes both writers afterwards (:func:`~mailsvc.proxy.upstream.close_writer`)."""
    result = Spliced()
    clock = _Clock()
    _bound(client[1])
    _bound(upstream[1])
    tasks = [
        asyncio.create_task(_pump(client[0], upstream[1], clock, result, to_client=False)),
        asyncio.create_task(_pump(upstream[0], client[1], clock, result, to_client=True)),
        asyncio.create_task(_watchdog(clock, idle)),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        result.reason = next(iter(done)).result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return result
