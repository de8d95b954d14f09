"""idsvc.wire.listen on real sockets: stale/live socket handling, modes, TCP port 0, the limiter."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path

import pytest

from idsvc.config import SocketSettings
from idsvc.wire.listen import (
    ConnectionLimiter,
    ListenError,
    bind_tcp,
    bind_unix,
    parse_host_port,
    peer_of,
)


@pytest.fixture
def sock_dir(tmp_path: Path) -> Path:
    # keep paths short: sun_path is 108 bytes
    return tmp_path


def test_unix_creates_parent_applies_mode_and_cleans_up(sock_dir: Path) -> None:
    path = sock_dir / "run" / "sub" / "mux"
    bound = bind_unix(SocketSettings(path=path, mode=0o600))
    try:
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o755
        assert bound.describe() == f"unix:{path}"
    finally:
        bound.sock.close()
        bound.remove_path()
    assert not path.exists()


def test_unix_owner_group_by_number(sock_dir: Path) -> None:
    path = sock_dir / "owned"
    uid, gid = os.getuid(), os.getgid()
    bound = bind_unix(SocketSettings(path=path, owner=str(uid), group=str(gid), mode=0o640))
    try:
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, 0o640)
    finally:
        bound.sock.close()
        bound.remove_path()


def test_unknown_owner_is_a_clear_error(sock_dir: Path) -> None:
    with pytest.raises(ListenError, match="unknown socket owner"):
        bind_unix(SocketSettings(path=sock_dir / "x", owner="no-such-user-idsvc"))
    with pytest.raises(ListenError, match="unknown socket group"):
        bind_unix(SocketSettings(path=sock_dir / "x", group="no-such-group-idsvc"))


def test_stale_socket_is_replaced(sock_dir: Path) -> None:
    path = sock_dir / "stale"
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(os.fspath(path))
    old.close()  # the file stays, nothing listens: a crashed daemon's leftover
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    bound = bind_unix(SocketSettings(path=path))
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(os.fspath(path))
        client.close()
    finally:
        bound.sock.close()
        bound.remove_path()


def test_live_socket_is_refused(sock_dir: Path) -> None:
    path = sock_dir / "live"
    first = bind_unix(SocketSettings(path=path))
    try:
        with pytest.raises(ListenError, match="in use"):
            bind_unix(SocketSettings(path=path))
        assert stat.S_ISSOCK(os.lstat(path).st_mode)  # untouched
    finally:
        first.sock.close()
        first.remove_path()


def test_regular_file_is_never_replaced(sock_dir: Path) -> None:
    path = sock_dir / "file"
    path.write_text("keep me")
    with pytest.raises(ListenError, match="not a socket"):
        bind_unix(SocketSettings(path=path))
    assert path.read_text() == "keep me"


def test_remove_path_leaves_a_replacement_alone(sock_dir: Path) -> None:
    path = sock_dir / "replaced"
    bound = bind_unix(SocketSettings(path=path))
    bound.sock.close()
    os.unlink(path)
    path.write_text("someone else")
    bound.remove_path()
    assert path.read_text() == "someone else"


def test_relative_and_overlong_paths_are_refused(sock_dir: Path) -> None:
    with pytest.raises(ListenError, match="absolute"):
        bind_unix(SocketSettings(path=Path("relative/mux")))
    with pytest.raises(ListenError, match="longer than"):
        bind_unix(SocketSettings(path=sock_dir / ("x" * 120)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("localhost:12345", ("localhost", 12345)),
        ("[::1]:25", ("::1", 25)),
    ],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["", "host", ":25", "host:", "::1:25", "h:99999", "h:-1", "h:1x"])
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ListenError):
        parse_host_port(text)


def test_tcp_port_zero_reports_bound_port() -> None:
    bound = bind_tcp("127.0.0.1:0")
    try:
        assert bound.port is not None
        assert bound.port > 0
        assert bound.describe() == f"127.0.0.1:{bound.port}"
        with pytest.raises(ListenError, match="address in use"):
            bind_tcp(f"127.0.0.1:{bound.port}")
    finally:
        bound.sock.close()


def test_limiter_counts() -> None:
    limiter = ConnectionLimiter(2)
    assert limiter.try_acquire()
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    assert limiter.refused == 1
    assert limiter.active == 2
    limiter.release()
    assert limiter.try_acquire()
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionLimiter(0)


class _Recorder(asyncio.Protocol):
    """Records the peer name of each connection it gets, then closes it."""

    def __init__(self, seen: list[str]) -> None:
        self._seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._seen.append(str(peer_of(transport)))
        transport.close()


async def test_unix_peer_is_pid_uid_gid(sock_dir: Path) -> None:
    path = sock_dir / "peer"
    bound = bind_unix(SocketSettings(path=path))
    seen: list[str] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(lambda: _Recorder(seen), sock=bound.sock)
    try:
        reader, writer = await asyncio.open_unix_connection(os.fspath(path))
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        assert seen == [f"pid={os.getpid()} uid={os.getuid()} gid={os.getgid()}"]
        # a stream writer answers get_extra_info too
        assert str(peer_of(writer)).startswith("pid=")
    finally:
        server.close()
        await server.wait_closed()
        bound.remove_path()


async def test_tcp_peer_is_address() -> None:
    bound = bind_tcp("127.0.0.1:0")
    seen: list[str] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Recorder(seen), sock=bound.sock)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", bound.port)
        assert await asyncio.wait_for(reader.read(), 2) == b""
        local_port = writer.get_extra_info("sockname")[1]
        writer.close()
        assert seen == [f"127.0.0.1:{local_port}"]
    finally:
        server.close()
        await server.wait_closed()


def test_peer_of_without_socket_is_unknown() -> None:
    class Detached:
        def get_extra_info(self, name: str, default: object = None) -> object:
            return default

    assert str(peer_of(Detached())) == "unknown"
