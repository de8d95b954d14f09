"""Helpers for the lookup-listener tests: a short socket directory, a running listener with the
mail dataset on a real directory, a raw client, and ``postmap -q`` against our sockets."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

import pytest

POSTMAP = "/usr/sbin/postmap"


class Served(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@contextmanager
def short_dir() -> Iterator[Path]:
    """A short directory for sockets (UNIX paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="idsvc-lk-"))
    os.chmod(path, 0o755)  # noqa: S103 - postfix/dovecot users may need to reach it
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def serving(server: Any) -> AsyncIterator[Any]:
    await server.start()
    try:
        yield server
    finally:
        await server.close()


class Client:
    """A raw stream client with bounded waits."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, target: Path | int) -> Client:
        if isinstance(target, Path):
            reader, writer = await asyncio.open_unix_connection(str(target))
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", target)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self, n: int, timeout: float = 10.0) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), timeout)

    async def until(self, sep: bytes, timeout: float = 10.0) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(sep), timeout)

    async def netstring(self, timeout: float = 10.0) -> bytes:
        head = await self.until(b":", timeout)
        size = int(head[:-1])
        data = await self.read(size + 1, timeout)
        assert data.endswith(b",")
        return data[:-1]

    async def eof(self, timeout: float = 10.0) -> bool:
        """True when the server closed the connection (without sending anything more)."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except (ConnectionResetError, BrokenPipeError):
            return True
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


def require_postmap() -> None:
    if not Path(POSTMAP).exists():
        pytest.fail("postmap (postfix) is not installed")


@contextmanager
def postmap_config() -> Iterator[Path]:
    """A minimal Postfix config directory for ``postmap -c`` (no /etc/postfix/main.cf needed)."""
    require_postmap()
    path = Path(tempfile.mkdtemp(prefix="idsvc-pm-"))
    (path / "main.cf").write_text("compatibility_level = 3.6\nmeta_directory = /etc/postfix\n")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def postmap(config: Path, key: str, table: str) -> tuple[int, str, str]:
    """``postmap -q key table`` in a thread: (exit code, stdout stripped, stderr)."""

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTMAP, "-c", str(config), "-q", key, table],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    result = await asyncio.to_thread(run)
    return result.returncode, result.stdout.strip(), result.stderr
