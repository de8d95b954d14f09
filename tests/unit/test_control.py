"""The control socket: request parsing (pure) and the server over a real UNIX socket."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from idsvc.config import SocketSettings
from idsvc.control import (
    ControlServer,
    FanoutInvalidator,
    RemoteInvalidator,
    format_request,
    parse_request,
    send_request,
)
from idsvc.errors import InvalidInput


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        (b"FLUSH\n", ("all", None)),
        (b"FLUSH USER Bob@Example.ORG\n", ("user", "bob@example.org")),
        (b"FLUSH DOMAIN B\xc3\xbccher.de\n", None),  # not ASCII
        (b"FLUSH DOMAIN xn--bcher-kva.de\n", ("domain", "xn--bcher-kva.de")),
        (b"FLUSH USER\n", None),
        (b"FLUSH USER a@b.c extra\n", None),
        (b"flush\n", None),
        (b"FLUSH USER \xff\n", None),
        (b"FLUSH USER a b@c.d\n", None),
        (b"\n", None),
        (b"FLUSH USER " + b"a" * 2000 + b"@x.org\n", None),
    ],
)
def test_parse_request(line: bytes, parsed: tuple[str, str | None] | None) -> None:
    if parsed is None:
        with pytest.raises(InvalidInput):
            parse_request(line)
    else:
        assert parse_request(line) == parsed
        scope, name = parsed
        assert parse_request(format_request(scope, name)) == parsed  # round trip


class Recorder:
    """Records what the server asked to drop (stands in for the Authenticator's cache API)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def invalidate(self, user: str | None = None) -> None:
        self.calls.append(("user" if user else "all", user))

    def invalidate_domain(self, domain: str) -> None:
        self.calls.append(("domain", domain))


@pytest.fixture
async def served() -> AsyncIterator[tuple[ControlServer, Recorder, Path]]:
    with tempfile.TemporaryDirectory(prefix="idsvc-ctl-") as tmp:
        path = Path(tmp) / "control"
        recorder = Recorder()
        server = ControlServer(SocketSettings(path=path, mode=0o600), recorder)
        await server.start()
        try:
            yield server, recorder, path
        finally:
            await server.close()
        assert not path.exists()


async def test_requests_reach_the_invalidator(
    served: tuple[ControlServer, Recorder, Path],
) -> None:
    _, recorder, path = served
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    remote = RemoteInvalidator(path)
    both = FanoutInvalidator((remote, Recorder()))
    await asyncio.to_thread(both.invalidate, "bob@example.org")
    await asyncio.to_thread(remote.invalidate_domain, "example.org")
    await asyncio.to_thread(remote.invalidate)
    assert recorder.calls == [
        ("user", "bob@example.org"),
        ("domain", "example.org"),
        ("all", None),
    ]


async def test_garbage_gets_an_error_and_the_server_keeps_serving(
    served: tuple[ControlServer, Recorder, Path],
) -> None:
    _, recorder, path = served
    for junk in (b"DROP TABLE\n", b"\x00\x01\x02\n", b"FLUSH USER *)(uid=*\n"):
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(junk)
        await writer.drain()
        reply = await reader.readline()
        assert reply.startswith(b"ERR "), reply
        writer.close()
        await writer.wait_closed()
    # a client that connects and says nothing, or hangs up mid-line, does not stop the server
    _, silent = await asyncio.open_unix_connection(str(path))
    _, rude = await asyncio.open_unix_connection(str(path))
    rude.write(b"FLUSH US")
    rude.close()
    assert await asyncio.to_thread(send_request, path, "all") == "OK"
    silent.close()
    assert recorder.calls == [("all", None)]


def test_no_server_is_not_an_error(tmp_path: Path) -> None:
    RemoteInvalidator(tmp_path / "nobody").invalidate("bob@example.org")  # returns quietly
    with pytest.raises(FileNotFoundError):
        send_request(tmp_path / "nobody", "all")
