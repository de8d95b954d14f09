"""The Dovecot auth-client listener under abuse, with the real Authenticator on every backend and
on both event loops: connection squatting (eviction order, the per-peer reserve, the handshake
timeout), many requests pipelined on one connection (back-pressure instead of a disconnect), and
uvloop's transports (not ``asyncio.Transport`` subclasses)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvloop

from idsvc.auth.engine import Authenticator
from idsvc.wire.dovecot_auth import DovecotAuthServer
from idsvc.wire.dovecot_auth.server import MAX_BUFFERED
from idsvc.wire.listen import Standing
from tests.integration.conftest import BOTH_LOOPS
from tests.integration.dovecot_auth_support import (
    CLIENT_HELLO,
    HANDSHAKE,
    USERS,
    Conn,
    auth_plain,
    authenticator,
    doveadm_auth_test,
    populate,
    require_doveadm,
    running,
    short_dir,
)
from tests.integration.squat_support import squatting

EVENT_LOOPS = BOTH_LOOPS
OK1 = "OK\t1\tuser=bob@example.org"


@asynccontextmanager
async def _listening(auth: Authenticator, **settings: Any) -> AsyncIterator[DovecotAuthServer]:
    with short_dir() as tmp:
        async with running(auth, tmp / "auth-client", **settings) as srv:
            yield srv


async def _session(srv: DovecotAuthServer) -> Conn:
    assert srv.path is not None
    conn = await Conn.open(srv.path)
    await conn.play([*CLIENT_HELLO, *HANDSHAKE])
    return conn


async def _until(predicate: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_transport_is_used_by_behaviour_on_both_loops(directory: Any) -> None:
    """uvloop's transports are not asyncio.Transport subclasses: the listener must not care."""
    await populate(directory)
    async with _listening(authenticator(directory)) as srv:
        conn = await _session(srv)
        await conn.send(auth_plain(1, USERS.good_pw))
        assert await conn.line() == OK1
        (server_side,) = srv.connections
        on_uvloop = isinstance(asyncio.get_running_loop(), uvloop.Loop)
        assert isinstance(server_side.transport, asyncio.Transport) is not on_uvloop
        await conn.close()


async def test_pipelined_requests_beyond_the_in_flight_limit_all_get_answers(
    directory: Any,
) -> None:
    """Hardening item 3 (small): more requests than ``max_requests_per_connection`` at once are
    held back, not a reason to drop the connection and every request on it."""
    await populate(directory)
    auth = authenticator(directory, failure_delay=0.3)
    async with _listening(auth, max_requests_per_connection=2) as srv:
        conn = await _session(srv)
        for rid in range(1, 6):
            await conn.send(auth_plain(rid, "bad" if rid % 2 else USERS.good_pw))
        replies = sorted([await conn.line() for _ in range(5)])
        assert [r.split("\t")[0] for r in replies] == ["FAIL"] * 3 + ["OK"] * 2
        assert sorted(int(r.split("\t")[1]) for r in replies) == [1, 2, 3, 4, 5]
        (server_side,) = srv.connections
        assert server_side.reading
        await conn.close()


async def test_2000_pipelined_requests_30_percent_failing(directory: Any) -> None:
    """Hardening item 3: 2,000 AUTH lines written at once on one connection, 30 % of them with a
    wrong password (each failure is held for the failure delay). Every one is answered, and
    the server holds at most ``max_requests_per_connection`` requests and a bounded input
    buffer meanwhile."""
    await populate(directory)
    auth = authenticator(directory, failure_delay=0.5, cache=True)
    limit = 256
    async with _listening(auth, max_requests_per_connection=limit) as srv:
        conn = await _session(srv)
        failing = {rid for rid in range(1, 2001) if rid % 10 < 3}
        lines = [
            auth_plain(rid, "bad" if rid in failing else USERS.good_pw) for rid in range(1, 2001)
        ]
        (server_side,) = srv.connections
        peak = {"requests": 0, "buffered": 0, "paused": 0}
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                peak["requests"] = max(peak["requests"], len(server_side.requests))
                peak["buffered"] = max(peak["buffered"], server_side.buffered)
                peak["paused"] += not server_side.reading
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        conn.writer.write(("\n".join(lines) + "\n").encode())
        await conn.writer.drain()
        answers: dict[int, str] = {}
        for _ in range(2000):
            line = await conn.line(timeout=20)
            assert line != "<EOF>", f"connection closed after {len(answers)} answers"
            verb, rid, *_ = line.split("\t")
            assert int(rid) not in answers, f"two answers for {rid}"
            answers[int(rid)] = verb
        stop.set()
        await sampler
        assert len(answers) == 2000
        assert {rid for rid, verb in answers.items() if verb == "FAIL"} == failing
        assert sum(verb == "OK" for verb in answers.values()) == 1400
        assert peak["requests"] <= limit
        assert peak["buffered"] <= MAX_BUFFERED
        assert peak["paused"] > 0  # back-pressure was applied
        assert server_side.reading  # … and lifted
        await conn.close()


async def test_a_request_cancelled_at_once_leaves_the_connection_idle(directory: Any) -> None:
    # AUTH and CANCEL in one write: the verification is cancelled before it ever runs; the
    # connection must still count as idle (evictable), not busy for ever
    await populate(directory)
    async with _listening(authenticator(directory, failure_delay=0.5)) as srv:
        conn = await _session(srv)
        await conn.send(f"{auth_plain(1, 'bad')}\nCANCEL\t1")
        await _until(lambda: srv.slots.standing_counts()[Standing.IDLE] == 1)
        await conn.send(auth_plain(2, USERS.good_pw))
        assert await conn.line() == "OK\t2\tuser=bob@example.org"
        await _until(lambda: srv.slots.standing_counts()[Standing.IDLE] == 1)
        await conn.close()


async def test_pre_handshake_connections_go_first_idle_next_busy_never(directory: Any) -> None:
    await populate(directory)
    auth = authenticator(directory, failure_delay=1.0)
    async with _listening(auth, max_connections=3, reserved_connections=0) as srv:
        assert srv.path is not None
        busy = await _session(srv)
        await busy.send(auth_plain(1, "bad"))  # held for the 1 s failure delay
        idle = await _session(srv)
        silent = await Conn.open(srv.path)  # reads the handshake, never says VERSION
        await silent.play(HANDSHAKE)
        await _until(lambda: srv.slots.active == 3)
        # a newcomer evicts the connection that has not done its handshake …
        newcomer = await _session(srv)
        assert await silent.eof()
        # … the next one the least recently active idle connection, never the busy one
        last = await Conn.open(srv.path)
        await last.play(HANDSHAKE)
        assert await idle.eof()
        assert await busy.line() == "FAIL\t1\treason=Authentication failed"
        # with every connection busy, a newcomer is closed before the handshake
        for rid, conn in enumerate((busy, newcomer, last), start=2):
            if conn is last:
                await conn.send("VERSION\t1\t0\nCPID\t1")
            await conn.send(auth_plain(rid, "bad"))
        await _until(lambda: srv.slots.standing_counts()[Standing.BUSY] == 3)
        refused = await Conn.open(srv.path)
        assert await refused.eof()
        assert (srv.slots.evicted, srv.slots.refused) == (2, 1)
        for conn in (busy, newcomer, last, refused, silent, idle):
            await conn.close()


async def test_squatters_never_lock_out_real_logins(directory: Any) -> None:
    """Hardening item 2: more half-written connections than slots, renewed as fast as they are
    closed; Dovecot's own client still logs in and an established idle connection survives."""
    require_doveadm()
    await populate(directory)
    async with _listening(
        authenticator(directory), max_connections=64, reserved_connections=4
    ) as srv:
        assert srv.path is not None
        established = await _session(srv)
        async with squatting(srv.path, 80, b"VERSION\t1") as flood:
            await _until(lambda: srv.slots.active == 60)  # this UID's share: 64 - 4
            for _ in range(3):
                code, out = await doveadm_auth_test(srv.path, USERS.good, USERS.good_pw)
                assert code == 0, out
            assert flood.opened > 80
        # proven connections are not evicted while unproven ones remain
        await established.send(auth_plain(1, USERS.good_pw))
        assert await established.line() == OK1
        await established.close()
        assert srv.slots.evicted > 20
        assert srv.slots.refused == 0


async def test_handshake_timeout(directory: Any) -> None:
    await populate(directory)
    async with _listening(authenticator(directory), handshake_timeout=0.3) as srv:
        assert srv.path is not None
        silent = await Conn.open(srv.path)
        await silent.play(HANDSHAKE)
        t0 = time.monotonic()
        assert await silent.eof(timeout=3.0)
        assert 0.2 <= time.monotonic() - t0 < 2.0
        await silent.close()
        # a client that did its handshake is not bound by it
        conn = await _session(srv)
        await asyncio.sleep(0.5)
        await conn.send(auth_plain(1, USERS.good_pw))
        assert await conn.line() == OK1
        await conn.close()
