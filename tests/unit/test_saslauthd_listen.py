"""idsvc.wire.listen: stale/live socket handling, modes, TCP port 0 on real sockets; the slot
table's admission rules (eviction order, per-peer reserve) table-driven and with hypothesis."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from idsvc.config import DovecotAuthSettings, SaslauthdSettings, SocketSettings
from idsvc.wire.listen import (
    ConnectionSlots,
    ListenError,
    Slot,
    Standing,
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


class _Conn:
    """A connection as the slot table sees it: it only needs to be evictable."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.evicted = False

    def evict(self) -> None:
        assert not self.evicted, f"{self.name} evicted twice"
        self.evicted = True


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _table(limit: int, reserve: int = 0) -> tuple[ConnectionSlots, _Clock]:
    clock = _Clock()
    return ConnectionSlots(limit, reserve=reserve, clock=clock), clock


def _admit(table: ConnectionSlots, name: str, peer: object = None) -> tuple[_Conn, Slot]:
    conn = _Conn(name)
    slot = table.admit(conn, peer)
    assert slot is not None, f"{name} refused"
    return conn, slot


def test_free_slots_are_handed_out_and_given_back_once() -> None:
    table, _ = _table(2)
    _, a = _admit(table, "a")
    _, b = _admit(table, "b")
    assert table.active == 2
    a.release()
    a.release()  # idempotent
    assert table.active == 1
    b.busy()
    b.idle()
    b.release()
    assert table.active == 0
    assert table.standing_counts() == dict.fromkeys(Standing, 0)


@pytest.mark.parametrize(
    ("setup", "expected_victim"),
    [
        # (name, standing, age in seconds at the time the newcomer arrives) per connection
        # unproven before idle (a pre-handshake flood never pushes out proven connections)
        ([("old", "unproven", 5.0), ("idle", "idle", 9.0), ("busy", "busy", 9.0)], "old"),
        ([("young", "unproven", 0.1), ("idle", "idle", 9.0), ("busy", "busy", 9.0)], "young"),
        # the oldest unproven first: it has had the longest to complete and has not
        ([("u1", "unproven", 3.0), ("u2", "unproven", 2.0)], "u1"),
        ([("u1", "unproven", 0.2), ("u2", "unproven", 0.8)], "u2"),
        # then the least recently active idle one
        ([("i1", "idle", 3.0), ("i2", "idle", 7.0), ("busy", "busy", 9.0)], "i2"),
        # never a busy one: the newcomer is refused
        ([("b1", "busy", 3.0), ("b2", "busy", 7.0)], None),
    ],
)
def test_eviction_order(setup: list[tuple[str, str, float]], expected_victim: str | None) -> None:
    table, clock = _table(len(setup))
    conns: dict[str, _Conn] = {}
    # admit (and mark idle) oldest first, so that ages come out as given
    for name, standing, age in sorted(setup, key=lambda row: -row[2]):
        clock.now = 100.0 - age
        conn, slot = _admit(table, name)
        conns[name] = conn
        if standing == "busy":
            slot.busy()
        elif standing == "idle":
            slot.idle()
    clock.now = 100.0
    newcomer = table.admit(_Conn("new"), None)
    evicted = [name for name, conn in conns.items() if conn.evicted]
    if expected_victim is None:
        assert newcomer is None
        assert evicted == []
        assert table.refused == 1
    else:
        assert newcomer is not None
        assert evicted == [expected_victim]
        assert table.evicted == 1
    assert table.active == len(setup)


def test_activity_refreshes_an_idle_connection() -> None:
    table, clock = _table(2)
    first, a = _admit(table, "a")
    second, b = _admit(table, "b")
    a.idle()
    clock.now += 1
    b.idle()
    clock.now += 1
    a.idle()  # a spoke again: b is now the least recently active
    assert table.admit(_Conn("new"), None) is not None
    assert (first.evicted, second.evicted) == (False, True)


def test_one_peer_cannot_take_the_reserve() -> None:
    table, _ = _table(4, reserve=2)
    flood = [_admit(table, f"f{i}", "attacker")[0] for i in range(2)]
    # the attacker is at its share (4 - 2): its next connection evicts its own oldest one
    _admit(table, "f2", "attacker")
    assert [c.evicted for c in flood] == [True, False]
    # another peer gets the reserve without evicting anyone
    _admit(table, "real1", "postfix")
    _admit(table, "real2", "postfix")
    assert table.evicted == 1
    assert table.active == 4


def test_share_holds_after_a_peer_evicted_its_only_connection() -> None:
    table, _ = _table(3, reserve=2)  # a share of 1 per peer
    first, slot = _admit(table, "a", "p")
    slot.idle()
    _, slot = _admit(table, "b", "p")  # evicts "a", the peer's only connection
    slot.busy()
    assert first.evicted
    assert table.admit(_Conn("c"), "p") is None  # still at its share of 1
    assert table.active == 1


def test_a_peer_whose_share_is_busy_is_refused() -> None:
    table, _ = _table(3, reserve=1)
    for i in range(2):
        _admit(table, f"b{i}", "p")[1].busy()
    assert table.admit(_Conn("new"), "p") is None
    assert table.refused == 1
    assert table.admit(_Conn("other"), "q") is not None  # the reserve is there for others


def test_evictions_are_reported_in_summaries_not_per_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="idsvc.wire.listen")
    clock = _Clock()
    table = ConnectionSlots(1, name="mux", clock=clock)
    _admit(table, "first")
    for i in range(50):  # a flood: every newcomer evicts the previous one
        _admit(table, f"n{i}")
        clock.now += 0.1
    busy = _admit(table, "busy")[1]
    busy.busy()
    assert table.admit(_Conn("refused"), None) is None
    clock.now += ConnectionSlots.REPORT_INTERVAL
    assert table.admit(_Conn("refused again"), None) is None
    reports = [r.getMessage() for r in caplog.records]
    # the first eviction is reported at once, the next 50 evictions and 2 refusals once the
    # interval has passed: two lines for 53 events
    assert len(reports) == 2
    assert reports[0].startswith("mux: all 1 connection slots taken")
    assert "1 idle or incomplete connection(s) evicted, 0 newcomer(s) refused" in reports[0]
    assert "50 idle or incomplete connection(s) evicted, 2 newcomer(s) refused" in reports[1]


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionSlots(0)
    with pytest.raises(ValueError, match="below the limit"):
        ConnectionSlots(4, reserve=4)
    for section in (SaslauthdSettings, DovecotAuthSettings):
        with pytest.raises(ValidationError, match="reserved_connections must be below"):
            section(max_connections=8)  # the default reserve is 32
        assert section(max_connections=8, reserved_connections=7).reserved_connections == 7


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 6),
    reserve=st.integers(0, 5),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["admit", "busy", "idle", "release", "tick"]),
            st.integers(0, 9),
            st.sampled_from(["p", "q", None]),
        ),
        max_size=60,
    ),
)
def test_slot_table_invariants(
    limit: int, reserve: int, ops: list[tuple[str, int, str | None]]
) -> None:
    """Never more than ``limit`` open, never more than the share per peer, a busy connection is
    never evicted, the standing counts add up."""
    reserve = min(reserve, limit - 1)
    table, clock = _table(limit, reserve=reserve)
    open_: list[tuple[_Conn, Slot, str | None]] = []
    busy: set[int] = set()
    for op, index, peer in ops:
        live = [entry for entry in open_ if not entry[0].evicted]
        open_ = live
        if op == "tick":
            clock.now += 0.4
        elif op == "admit":
            conn = _Conn(f"c{len(open_)}")
            slot = table.admit(conn, peer)
            if slot is not None:
                open_.append((conn, slot, peer))
        elif open_:
            conn, slot, _ = open_[index % len(open_)]
            if op == "busy":
                slot.busy()
                busy.add(id(conn))
            elif op == "idle":
                slot.idle()
                busy.discard(id(conn))
            else:
                slot.release()
                busy.discard(id(conn))
                open_.remove((conn, slot, _))
        live = [entry for entry in open_ if not entry[0].evicted]
        assert all(id(conn) not in busy for conn, _, _ in open_ if conn.evicted)
        open_ = live
        assert table.active == len(open_) <= limit
        for who in ("p", "q", None):
            assert sum(1 for *_, p in open_ if p == who) <= limit - reserve
        counts = table.standing_counts()
        assert counts[Standing.BUSY] == sum(1 for conn, _, _ in open_ if id(conn) in busy)
        assert sum(counts.values()) == table.active


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
