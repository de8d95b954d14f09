"""The saslauthd listener against every directory backend, with the real Authenticator.

Clients: the real ``testsaslauthd`` (sasl2-bin) for the happy and unhappy paths, and raw bytes on
the socket for what no well-behaved client sends (over-long, truncated, empty, NUL, 5 fields,
slow-loris, garbage, connection squatting).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from idsvc.wire.listen import Standing
from idsvc.wire.saslauthd.protocol import SaslauthdRequest, encode_reply, encode_request
from idsvc.wire.saslauthd.server import NO_GENERIC, NO_MALFORMED
from tests.integration.conftest import BOTH_LOOPS
from tests.integration.saslauthd_support import (
    USERS,
    authenticator,
    exchange,
    populate,
    require_testsaslauthd,
    run_testsaslauthd,
    running,
)
from tests.integration.squat_support import squatting

OK = encode_reply("OK")
EVENT_LOOPS = BOTH_LOOPS  # every test here runs on asyncio's loop and on uvloop


def req(login: str, password: str, realm: str = "", addr: str | None = None) -> bytes:
    return encode_request(SaslauthdRequest(login, password, "smtp", realm, addr))


@pytest.fixture
async def populated(directory: Any) -> Any:
    await populate(directory)
    return directory


@pytest.fixture
async def mux(populated: Any, tmp_path: Path) -> AsyncIterator[Path]:
    async with running(tmp_path / "mux", authenticator(populated)) as server:
        yield server.path


@pytest.mark.parametrize(
    ("user", "password", "realm", "service", "expected"),
    [
        (USERS.good, USERS.good_pw, None, "smtp", "0: OK"),
        ("alice", USERS.good_pw, "example.org", "smtp", "0: OK"),
        ("ALICE@Example.ORG", USERS.good_pw, None, "smtp", "0: OK"),
        (USERS.good, USERS.good_pw + "x", None, "smtp", "0: NO"),
        ("alice", "wrong", "example.org", "smtp", "0: NO"),
        (USERS.unknown, USERS.good_pw, None, "smtp", "0: NO"),
        (USERS.disabled, USERS.disabled_pw, None, "smtp", "0: NO"),
        (USERS.imap_only, USERS.imap_only_pw, None, "smtp", "0: NO"),
        (USERS.imap_only, USERS.imap_only_pw, None, "imap", "0: OK"),
    ],
)
async def test_testsaslauthd(
    mux: Path, user: str, password: str, realm: str | None, service: str, expected: str
) -> None:
    require_testsaslauthd()
    out = await run_testsaslauthd(mux, user, password, realm=realm, service=service)
    assert out.startswith(expected), out


async def test_failures_are_byte_identical(mux: Path) -> None:
    answers = {
        await exchange(mux, req(USERS.good, "wrong")),
        await exchange(mux, req(USERS.unknown, "wrong")),
        await exchange(mux, req(USERS.disabled, USERS.disabled_pw)),
        await exchange(mux, req("not an address!", "x")),
    }
    assert answers == {NO_GENERIC}
    assert await exchange(mux, req(USERS.good, USERS.good_pw)) == OK


async def test_five_field_request(mux: Path) -> None:
    # a remote client address is fine under the default cleartext policy: the peer is the MTA
    assert await exchange(mux, req(USERS.good, USERS.good_pw, addr="192.0.2.7;49152")) == OK
    assert await exchange(mux, req("alice", USERS.good_pw, "example.org", "[bad];x")) == OK
    assert await exchange(mux, req(USERS.good, "bad", addr="192.0.2.7;1")) == NO_GENERIC


async def test_empty_login_or_password_never_reach_the_directory(
    mux: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert await exchange(mux, req("", USERS.good_pw)) == NO_GENERIC
    assert await exchange(mux, req(USERS.good, "")) == NO_GENERIC
    assert await exchange(mux, req("", "", "example.org")) == NO_GENERIC
    assert not [r for r in caplog.records if r.name.startswith("idsvc.audit")]
    assert "empty login or password" in caplog.text


@pytest.mark.parametrize(
    "payload",
    [
        b"\x01\x01" + b"a" * 257,  # 257-byte login
        encode_request(SaslauthdRequest("alice", "p", "smtp", ""))[:-2] + b"\x01\x01",
        b"\x00\x05alice\x00\x03p\x00w\x00\x04smtp\x00\x00",  # NUL in password
        b"\x00\x02\xff\xfe\x00\x01p\x00\x04smtp\x00\x00",  # login not UTF-8
        req(USERS.good, USERS.good_pw) + b"\x01\x01",  # over-long 5th field
    ],
)
async def test_malformed_requests_get_no(mux: Path, payload: bytes) -> None:
    assert await exchange(mux, payload) == NO_MALFORMED


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00",
        b"\x00\x05ali",
        b"\x00\x05alice\x00\x06s3cret",
        b"\x00\x05alice\x00\x06s3cret\x00\x04smtp",
    ],
)
async def test_truncated_requests_are_closed_without_reply(mux: Path, payload: bytes) -> None:
    assert await exchange(mux, payload, half_close=True) == b""


async def test_four_field_client_is_never_blocked(mux: Path) -> None:
    # a libsasl 2.1.28 client: writes 4 fields, keeps the socket open, waits for the reply
    t0 = time.monotonic()
    assert await exchange(mux, req(USERS.good, USERS.good_pw), timeout=3) == OK
    assert time.monotonic() - t0 < 1.0


async def test_partial_fifth_field_waits_only_the_grace(mux: Path) -> None:
    t0 = time.monotonic()
    reply = await exchange(mux, req(USERS.good, USERS.good_pw) + b"\x00\x0f192.0", timeout=3)
    assert reply == OK
    assert time.monotonic() - t0 < 1.0  # grace is 0.05 s, read_timeout 5 s


async def test_request_split_across_writes(mux: Path) -> None:
    data = req(USERS.good, USERS.good_pw)
    reader, writer = await asyncio.open_unix_connection(os.fspath(mux))
    try:
        for i in range(0, len(data), 3):
            writer.write(data[i : i + 3])
            await writer.drain()
            await asyncio.sleep(0.01)
        assert await asyncio.wait_for(reader.read(), 5) == OK
    finally:
        writer.close()


async def test_slow_loris_is_cut_off_and_others_are_served(populated: Any, tmp_path: Path) -> None:
    auth = authenticator(populated)
    async with running(tmp_path / "slow", auth, read_timeout=0.5) as server:
        reader, writer = await asyncio.open_unix_connection(os.fspath(server.path))
        t0 = time.monotonic()
        data = req(USERS.good, USERS.good_pw)

        async def drip() -> None:
            for byte in data:  # one byte every 0.1 s: would take seconds to finish
                writer.write(bytes([byte]))
                try:
                    await writer.drain()
                except ConnectionError:
                    return
                await asyncio.sleep(0.1)

        dripper = asyncio.create_task(drip())
        try:
            # meanwhile a normal client is answered at once
            assert await exchange(server.path, req(USERS.good, USERS.good_pw)) == OK
            try:
                got = await asyncio.wait_for(reader.read(), 5)
            except ConnectionError:  # the drip hit the closed socket first
                got = b""
            assert got == b""  # cut off without a reply
            assert time.monotonic() - t0 < 2.0
        finally:
            dripper.cancel()
            await asyncio.gather(dripper, return_exceptions=True)
            writer.close()


async def test_squatters_cannot_lock_real_logins_out(populated: Any, tmp_path: Path) -> None:
    """Hardening item 2: more half-written connections than slots, renewed as fast as the
    server closes them; the real client (testsaslauthd) still gets its answers, because a
    newcomer evicts the oldest connection without a complete request."""
    require_testsaslauthd()
    auth = authenticator(populated)
    async with running(
        tmp_path / "squat", auth, max_connections=64, reserved_connections=4
    ) as server:
        partial = req(USERS.good, USERS.good_pw)[:9]  # a login, then nothing
        async with squatting(server.path, 80, partial) as flood:
            # every slot one peer (this UID) may hold is taken: 64 minus the reserve of 4
            assert server.slots.active == 60
            for _ in range(5):
                out = await run_testsaslauthd(server.path, USERS.good, USERS.good_pw)
                assert out.startswith("0: OK"), out
            assert await exchange(server.path, req(USERS.good, "Wr0ng-Pa55")) == NO_GENERIC
            assert flood.opened > 80  # the flood was renewed meanwhile
        assert server.slots.evicted > 20
        assert server.slots.refused == 0


async def test_requests_in_flight_are_never_evicted(populated: Any, tmp_path: Path) -> None:
    # the 1 s failure delay keeps two wrong-password requests in flight: a third client finds
    # no connection it may evict and is closed without a reply (libsasl: SASL_FAIL → 454)
    auth = authenticator(populated, failure_delay=1.0)
    async with running(
        tmp_path / "busy", auth, max_connections=2, reserved_connections=0
    ) as server:
        deciding = [
            asyncio.create_task(exchange(server.path, req(USERS.good, "Wr0ng-Pa55")))
            for _ in range(2)
        ]
        for _ in range(100):
            if server.slots.standing_counts()[Standing.BUSY] == 2:
                break
            await asyncio.sleep(0.01)
        assert await exchange(server.path, req(USERS.good, USERS.good_pw), timeout=3) == b""
        assert await asyncio.gather(*deciding) == [NO_GENERIC, NO_GENERIC]
        assert (server.slots.refused, server.slots.evicted) == (1, 0)
        assert await exchange(server.path, req(USERS.good, USERS.good_pw)) == OK


async def test_garbage_never_stops_the_server(mux: Path) -> None:
    rng = random.Random(4513)
    for _ in range(40):
        blob = rng.randbytes(rng.randrange(0, 600))
        reply = await exchange(mux, blob, half_close=True, timeout=5)
        assert reply in (b"", NO_MALFORMED, NO_GENERIC)
    assert await exchange(mux, req(USERS.good, USERS.good_pw)) == OK


async def test_password_never_logged(mux: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert await exchange(mux, req(USERS.good, USERS.good_pw)) == OK
    assert await exchange(mux, req(USERS.good, "Wr0ng-Pa55")) == NO_GENERIC
    assert await exchange(mux, b"\x00\x05alice\x00\x0bLeaky\x00Pass\x00\x04smtp\x00\x00") == (
        NO_MALFORMED
    )
    assert "alice" in caplog.text  # the login is logged …
    for secret in (USERS.good_pw, "Wr0ng-Pa55", "Leaky"):
        assert secret not in caplog.text  # … the password never


async def test_close_removes_socket_and_restart_reuses_path(populated: Any, tmp_path: Path) -> None:
    path = tmp_path / "again"
    async with running(path, authenticator(populated)):
        assert path.exists()
    assert not path.exists()
    async with running(path, authenticator(populated)):
        assert await exchange(path, req(USERS.good, USERS.good_pw)) == OK


async def test_fragmented_request_gets_the_grace_for_a_fifth_field(
    populated: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="idsvc.wire.saslauthd.server")
    auth = authenticator(populated)
    async with running(tmp_path / "frag", auth, fifth_field_grace=0.5) as server:
        four = req(USERS.good, USERS.good_pw)
        fifth = req(USERS.good, USERS.good_pw, addr="192.0.2.7;49152")[len(four) :]
        reader, writer = await asyncio.open_unix_connection(os.fspath(server.path))
        try:
            writer.write(four[:5])  # a client that does not write its request in one go
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(four[5:])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(fifth)
            assert await asyncio.wait_for(reader.read(), 5) == OK
        finally:
            writer.close()
        assert "client=192.0.2.7;49152" in caplog.text
        # a one-write 4-field request is answered without spending the 0.5 s grace
        t0 = time.monotonic()
        assert await exchange(server.path, four) == OK
        assert time.monotonic() - t0 < 0.3


async def test_close_lets_a_request_being_decided_answer(populated: Any, tmp_path: Path) -> None:
    # a wrong password spends the 0.5 s failure delay inside the auth core: close() meanwhile
    # stops accepting at once but still delivers the answer before the socket goes away
    auth = authenticator(populated, failure_delay=0.5)
    async with running(tmp_path / "closing", auth) as server:
        reader, writer = await asyncio.open_unix_connection(os.fspath(server.path))
        try:
            writer.write(req(USERS.good, "Wr0ng-Pa55"))
            await writer.drain()
            await asyncio.sleep(0.1)
            assert server.slots.active == 1
            t0 = time.monotonic()
            await server.close()
            assert time.monotonic() - t0 < 3.0
            assert await asyncio.wait_for(reader.read(), 5) == NO_GENERIC
            assert server.slots.active == 0
            assert not server.path.exists()
        finally:
            writer.close()


async def test_clients_that_vanish_give_their_slot_back(populated: Any, tmp_path: Path) -> None:
    auth = authenticator(populated, failure_delay=0.3)
    async with running(
        tmp_path / "vanish", auth, max_connections=2, reserved_connections=0
    ) as server:
        path = os.fspath(server.path)
        # one hangs up mid-request, one right after sending a request that is being decided
        _r1, w1 = await asyncio.open_unix_connection(path)
        w1.write(req(USERS.good, USERS.good_pw)[:7])
        _r2, w2 = await asyncio.open_unix_connection(path)
        w2.write(req(USERS.good, "Wr0ng-Pa55"))
        await asyncio.gather(w1.drain(), w2.drain())
        await asyncio.sleep(0.1)
        assert server.slots.active == 2
        w1.close()
        w2.close()
        await asyncio.sleep(0.6)  # the failure delay runs out; nobody is there to answer
        assert server.slots.active == 0
        assert await exchange(server.path, req(USERS.good, USERS.good_pw)) == OK
        assert server.slots.refused == 0


async def test_bursts_of_clients_are_all_answered_and_leak_nothing(
    populated: Any, tmp_path: Path
) -> None:
    auth = authenticator(populated, cache=True)
    async with running(tmp_path / "burst", auth, max_connections=500) as server:
        assert await exchange(server.path, req(USERS.good, USERS.good_pw)) == OK  # warm the cache
        fds = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            # more than one accept batch (64) at once, but within the listen backlog (128):
            # these clients share the server's event loop, so all connect before any accept
            good = [exchange(server.path, req(USERS.good, USERS.good_pw)) for _ in range(75)]
            bad = [exchange(server.path, req(USERS.good, "Wr0ng-Pa55")) for _ in range(25)]
            replies = await asyncio.gather(*good, *bad)
            assert replies == [OK] * 75 + [NO_GENERIC] * 25
        await asyncio.sleep(0.05)
        assert server.slots.active == 0
        assert not server.connections
        # 300 client sockets came and went; only pools (LDAP connections, SQLite readers) may
        # have grown a little meanwhile
        assert len(os.listdir("/proc/self/fd")) < fds + 10
