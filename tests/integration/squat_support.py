"""A connection-squatting flood for the listener tests: ``count`` local connections that each
send a few bytes of a request and then stay silent, reopened ``pause`` seconds after the server
closes them (the flood shares the test's event loop with the server: without a pause it would
starve it; ``bench/wire_flood.py`` floods from a process of its own, without pauses).

Loopback only, bounded in count; every connection is closed when the context ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Flood:
    opened: int = 0  # connections the flood has opened so far (initial + renewed)
    open_now: int = 0


async def _squat(
    path: Path, partial: bytes, flood: Flood, stop: asyncio.Event, pause: float
) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_unix_connection(os.fspath(path))
        except OSError:
            await asyncio.sleep(0.01)
            continue
        flood.opened += 1
        flood.open_now += 1
        try:
            writer.write(partial)
            closed = asyncio.ensure_future(reader.read())
            halt = asyncio.ensure_future(stop.wait())
            await asyncio.wait({closed, halt}, return_when=asyncio.FIRST_COMPLETED)
            for fut in (closed, halt):
                fut.cancel()
            await asyncio.gather(closed, halt, return_exceptions=True)
        except OSError:
            pass
        finally:
            flood.open_now -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await asyncio.sleep(pause)


@asynccontextmanager
async def squatting(
    path: Path, count: int, partial: bytes, pause: float = 0.005
) -> AsyncIterator[Flood]:
    """Keep ``count`` half-written connections open on ``path`` until the context ends."""
    flood, stop = Flood(), asyncio.Event()
    tasks = [asyncio.create_task(_squat(path, partial, flood, stop, pause)) for _ in range(count)]
    try:
        for _ in range(200):  # until the flood holds its connections (at most 2 s)
            if flood.opened >= count:
                break
            await asyncio.sleep(0.01)
        yield flood
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
