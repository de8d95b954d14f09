"""Proxy-mode plumbing on loopback sockets: the splice (bytes both ways, both sides closed
together, the idle watchdog, back-pressure from a client that stops reading), the upstream
connector's faults (silent or garbled upstream within the time budget) and the master password
file rules."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from mailsvc.config import ConfigError, UpstreamSettings
from mailsvc.proxy.splice import CHUNK, HIGH_WATER, splice
from mailsvc.proxy.upstream import (
    Connector,
    Secret,
    UpstreamError,
    close_writer,
    read_master_password,
)

Pair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connected_pair() -> tuple[Pair, Pair, asyncio.Server]:
    """(our side, the peer's side) of one loopback TCP connection."""
    accepted: asyncio.Queue[Pair] = asyncio.Queue()

    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0, limit=1 << 16)
    port = server.sockets[0].getsockname()[1]
    peer = await asyncio.open_connection("127.0.0.1", port)
    ours = await asyncio.wait_for(accepted.get(), 5)
    return ours, peer, server


@contextlib.asynccontextmanager
async def two_links() -> AsyncIterator[tuple[Pair, Pair, Pair, Pair]]:
    """(proxy's client side, client, proxy's upstream side, upstream)."""
    ours_c, client, s1 = await connected_pair()
    ours_u, upstream, s2 = await connected_pair()
    try:
        yield ours_c, client, ours_u, upstream
    finally:
        for pair in (ours_c, client, ours_u, upstream):
            await close_writer(pair[1], grace=1)
        for server in (s1, s2):
            server.close()
            await server.wait_closed()


async def test_bytes_both_ways_and_both_sides_closed_together() -> None:
    async with two_links() as (ours_c, client, ours_u, upstream):
        task = asyncio.create_task(splice(ours_c, ours_u, idle=30))
        client[1].write(b"a1 SELECT INBOX\r\n")
        assert await asyncio.wait_for(upstream[0].readline(), 5) == b"a1 SELECT INBOX\r\n"
        upstream[1].write(b"* 2 EXISTS\r\na1 OK done\r\n")
        upstream[1].write_eof()  # the upstream ends the session right after its answer
        result = await asyncio.wait_for(task, 5)
        await close_writer(ours_c[1])
        await close_writer(ours_u[1])
        assert await asyncio.wait_for(client[0].read(), 5) == b"* 2 EXISTS\r\na1 OK done\r\n"
        assert await asyncio.wait_for(upstream[0].read(), 5) == b""  # closed towards upstream
    assert (result.reason, result.to_upstream, result.to_client) == ("upstream closed", 17, 24)


async def test_client_closing_ends_the_splice() -> None:
    async with two_links() as (ours_c, client, ours_u, _):
        task = asyncio.create_task(splice(ours_c, ours_u, idle=30))
        client[1].close()
        result = await asyncio.wait_for(task, 5)
    assert result.reason == "client closed"


async def test_idle_watchdog() -> None:
    async with two_links() as (ours_c, client, ours_u, upstream):
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(splice(ours_c, ours_u, idle=0.4))
        started = loop.time()
        for _ in range(4):  # traffic keeps it alive past the idle time
            await asyncio.sleep(0.2)
            client[1].write(b"x")
            await asyncio.wait_for(upstream[0].readexactly(1), 5)
        assert not task.done()
        result = await asyncio.wait_for(task, 5)
        elapsed = loop.time() - started
    assert result.reason == "idle for 0.4s"
    assert 1.1 < elapsed < 3.0


async def test_a_client_that_stops_reading_stops_the_upstream() -> None:
    total = 32 << 20
    block = os.urandom(1 << 16)
    async with two_links() as (ours_c, client, ours_u, upstream):
        client_sock = client[1].get_extra_info("socket")
        client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        task = asyncio.create_task(splice(ours_c, ours_u, idle=30))
        written = 0

        async def produce() -> None:
            nonlocal written
            while written < total:
                upstream[1].write(block)
                written += len(block)
                await upstream[1].drain()

        producer = asyncio.create_task(produce())
        await asyncio.sleep(1.5)  # the client reads nothing meanwhile
        assert ours_c[1].transport.get_write_buffer_size() <= HIGH_WATER + CHUNK
        assert written < total // 2, written  # the upstream was made to wait
        digest = hashlib.sha256()
        received = 0
        while received < total:  # now the client reads: nothing was lost
            data = await asyncio.wait_for(client[0].read(1 << 20), 10)
            assert data
            digest.update(data)
            received += len(data)
        await asyncio.wait_for(producer, 10)
        client[1].close()
        await asyncio.wait_for(task, 5)
    assert received == total
    assert digest.digest() == hashlib.sha256(block * (total // len(block))).digest()


# --- the upstream connector's faults ----------------------------------------------------------


def settings_for(port: int, secret: Path, **extra: object) -> UpstreamSettings:
    return UpstreamSettings.model_validate(
        {"address": f"127.0.0.1:{port}", "master_user": "proxy", "master_password_file": secret,
         "tls": "none", **extra}
    )  # fmt: skip


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "master.pass"
    path.write_text("m4ster\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("protocol", "greeting", "match"),
    [("imap", None, "no answer within"), ("pop3", None, "no answer within"),
     ("imap", b"* BYE go away\r\n", "greeting"), ("pop3", b"-ERR go away\r\n", "greeting"),
     ("imap", b"\xff\xfe\r\n", "unreadable"), ("pop3", b"+OK \x00\r\n", "unreadable"),
     ("imap", b"", "closed"), ("pop3", b"+OK", "closed"),
     ("imap", b"x" * 70000 + b"\r\n", "too long"),
     ("pop3", b"+OK " + b"x" * 9000 + b"\r\n", "too long")],
)  # fmt: skip
async def test_upstream_faults_are_upstream_errors(
    secret: Path, protocol: str, greeting: bytes | None, match: str
) -> None:
    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if greeting is not None:
            writer.write(greeting)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        if greeting is None or greeting.endswith(b"\r\n"):
            with contextlib.suppress(ConnectionError):
                await reader.read()  # until the proxy gives up
        writer.close()

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connector = Connector.from_settings(settings_for(port, secret, timeout=0.5))
    attempt = connector.imap if protocol == "imap" else connector.pop3
    try:
        with pytest.raises(UpstreamError, match=match):
            await asyncio.wait_for(attempt("alice@example.org", "192.0.2.1"), 5)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("protocol", "script"),
    [("imap", [b"* OK ready\r\n", b"P1 OK Begin TLS\r\n* OK [CAPABILITY IMAP4rev1] x\r\n"]),
     ("pop3", [b"+OK ready\r\n", b"+OK Begin TLS\r\n+OK injected\r\n"])],
)  # fmt: skip
async def test_plaintext_injected_after_starttls_is_refused(
    secret: Path, protocol: str, script: list[bytes]
) -> None:
    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(script[0])
        await reader.readline()  # STARTTLS / STLS
        writer.write(script[1])  # the answer and more, in one segment
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            await reader.read()
        writer.close()

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connector = Connector.from_settings(settings_for(port, secret, tls="starttls", timeout=2))
    attempt = connector.imap if protocol == "imap" else connector.pop3
    try:
        with pytest.raises(UpstreamError, match="after the STARTTLS answer"):
            await asyncio.wait_for(attempt("alice@example.org", None), 5)
    finally:
        server.close()
        await server.wait_closed()


# --- the master password file ---------------------------------------------------------------


def test_master_password_file(tmp_path: Path, secret: Path) -> None:
    value = read_master_password(secret)
    assert value.value == "m4ster"
    assert "m4ster" not in f"{value} {value!r}"
    assert isinstance(value, Secret)


@pytest.mark.parametrize(
    ("content", "mode", "match"),
    [("pw\n", 0o644, "0600"), ("pw\n", 0o640, "0600"), ("", 0o600, "empty"),
     ("\n", 0o600, "empty"), ("a\nb\n", 0o600, "more than one line"),
     ("x" * 5000, 0o600, "longer"), (b"\xff", 0o600, "UTF-8")],
)  # fmt: skip
def test_master_password_file_refused(
    tmp_path: Path, content: str | bytes, mode: int, match: str
) -> None:
    path = tmp_path / "master.pass"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    path.chmod(mode)
    with pytest.raises(ConfigError, match=match):
        read_master_password(path)


def test_master_password_file_not_a_symlink_nor_a_directory(tmp_path: Path, secret: Path) -> None:
    link = tmp_path / "link.pass"
    link.symlink_to(secret)
    with pytest.raises(ConfigError, match="master_password_file"):
        read_master_password(link)
    with pytest.raises(ConfigError, match="master_password_file"):
        read_master_password(tmp_path / "missing.pass")
    with pytest.raises(ConfigError, match=r"regular file|master_password_file"):
        read_master_password(tmp_path)


@pytest.mark.parametrize(
    "override",
    [{"address": "mail.internal"}, {"address": "mail.internal:0"}, {"address": ":143"},
     {"tls": "yes"}, {"login": "plain"}, {"master_user": "pro xy"}, {"master_user": ""},
     {"master_separator": ""}, {"timeout": 0}, {"unknown": 1}],
)  # fmt: skip
def test_upstream_settings_refused(secret: Path, override: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        settings_for(143, secret, **override)


def test_upstream_settings_defaults(secret: Path) -> None:
    s = UpstreamSettings.model_validate(
        {"address": "[2001:db8::1]:143", "master_user": "proxy", "master_password_file": secret}
    )
    assert (s.host, s.port, s.server_name, s.tls, s.login) == (
        "2001:db8::1",
        143,
        "2001:db8::1",
        "starttls",
        "master_separator",
    )
    assert s.tls_verify
