"""The socketmap listener over real sockets on both backends, and real ``postmap -q`` lookups of
every map through ``socketmap:unix:`` and ``socketmap:inet:``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from idsvc.config import SocketmapSettings, SocketSettings
from idsvc.directory.base import Directory
from idsvc.wire.framing import netstring
from idsvc.wire.socketmap.server import SocketmapServer
from tests.fixtures.slapd import SlapdServer
from tests.integration.lookup_support import Client, postmap, postmap_config, serving, short_dir
from tests.integration.mail_support import ALICE, ALICE_QUOTA, BOB, DAVE, lookups, populate


def settings(path: Path, **kw: Any) -> SocketmapSettings:
    return SocketmapSettings(socket=SocketSettings(path=path, mode=0o666), tcp="127.0.0.1:0", **kw)


@pytest.fixture
async def server(directory: Directory) -> AsyncIterator[SocketmapServer]:
    await populate(directory)
    with short_dir() as tmp:
        async with serving(SocketmapServer(settings(tmp / "sm"), lookups(directory))) as srv:
            yield srv


async def ask(client: Client, request: bytes) -> bytes:
    await client.send(netstring(request))
    return await client.netstring()


EXPECTED = [
    (b"domain example.org", b"OK example.org"),
    (b"domain EXAMPLE.net", b"OK example.net"),
    (b"domain off.example", b"NOTFOUND "),
    (b"mailbox alice+tag@example.org", b"OK example.org/alice/Maildir/"),
    (b"mailbox team@example.org", b"NOTFOUND "),
    (b"alias anyone@other.example", b"OK " + DAVE.encode()),
    (b"alias alice@example.org", b"NOTFOUND "),
    (b"senderlogin alice@example.net", b"OK " + ALICE.encode()),
    (b"quota alice@example.org", b"OK %d" % ALICE_QUOTA),
    (b"quota nobody@example.org", b"NOTFOUND "),
    (b"alias a@b@example.org", b"NOTFOUND "),  # malformed key: never TEMP
    (b'alias "a b"@example.org', b"NOTFOUND "),
    (b"alias a\x00@example.org", b"NOTFOUND "),
    (b"alias a@example.org\r\n", b"NOTFOUND "),
    (b"virtual x@example.org", b"PERM unknown map name"),
    (b"nospace", b"PERM expected '<map> <key>'"),
]


async def test_every_map_over_one_persistent_connection(server: SocketmapServer) -> None:
    assert server.path is not None
    client = await Client.open(server.path)
    for request, reply in EXPECTED:
        assert await ask(client, request) == reply, request
    await client.close()


async def test_pipelined_requests_are_answered_in_order(server: SocketmapServer) -> None:
    assert server.tcp_port is not None
    client = await Client.open(server.tcp_port)
    await client.send(b"".join(netstring(req) for req, _ in EXPECTED * 5))
    for _, reply in EXPECTED * 5:
        assert await client.netstring() == reply
    await client.close()


async def test_alias_lists_are_comma_separated(server: SocketmapServer) -> None:
    assert server.path is not None
    client = await Client.open(server.path)
    reply = await ask(client, b"alias team@example.org")
    assert reply.startswith(b"OK ")
    assert sorted(reply[3:].split(b",")) == sorted([ALICE.encode(), BOB.encode()])
    await client.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"99999999:",  # oversized netstring
        b"10001:" + b"x" * 100,  # just over socketmap_max_query_size
        b"-5:abc,",  # malformed length
        b"5:alias;",  # bad terminator
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # another protocol
    ],
)
async def test_framing_errors_close_only_that_connection(
    server: SocketmapServer, garbage: bytes
) -> None:
    assert server.path is not None
    bystander = await Client.open(server.path)
    bad = await Client.open(server.path)
    await bad.send(garbage)
    assert await bad.eof()
    assert await ask(bystander, b"domain example.org") == b"OK example.org"
    await bad.close()
    await bystander.close()


async def test_an_answer_then_garbage_answers_first(server: SocketmapServer) -> None:
    assert server.path is not None
    client = await Client.open(server.path)
    await client.send(netstring(b"domain example.org") + b"garbage")
    # the framing error is found while reading: the connection closes; what was queued before
    # may or may not be answered, but nothing else comes
    data = await asyncio.wait_for(client.reader.read(), 10)
    assert data in (b"", netstring(b"OK example.org"))
    await client.close()


async def test_a_full_listener_evicts_a_silent_connection_not_a_working_one(
    directory: Directory,
) -> None:
    await populate(directory)
    with short_dir() as tmp:
        conf = settings(tmp / "sm", max_connections=2, reserved_connections=0)
        async with serving(SocketmapServer(conf, lookups(directory))) as srv:
            assert srv.path is not None
            a = await Client.open(srv.path)
            assert await ask(a, b"domain example.org") == b"OK example.org"  # proven, idle
            b = await Client.open(srv.path)
            await b.send(b"20:domain exa")  # never completes its request
            await asyncio.sleep(0.1)
            c = await Client.open(srv.path)  # full: the silent one makes room
            assert await b.eof(5)
            assert await ask(c, b"domain example.org") == b"OK example.org"
            assert await ask(a, b"domain example.org") == b"OK example.org"  # untouched
            assert srv.slots.evicted == 1
            for client in (a, b, c):
                await client.close()


async def test_request_and_idle_timeouts(directory: Directory) -> None:
    await populate(directory)
    with short_dir() as tmp:
        conf = settings(tmp / "sm", idle_timeout=0.5, request_timeout=0.3)
        async with serving(SocketmapServer(conf, lookups(directory))) as srv:
            assert srv.path is not None
            a, b = await Client.open(srv.path), await Client.open(srv.path)
            assert await ask(a, b"domain example.org") == b"OK example.org"
            await b.send(b"20:domain exa")  # a partial request
            assert await b.eof(5)  # request timeout
            assert await a.eof(5)  # idle timeout
            d = await Client.open(srv.path)
            assert await ask(d, b"domain example.org") == b"OK example.org"
            for client in (a, b, d):
                await client.close()


POSTMAP_CASES = [
    ("example.org", "domain", 0, "example.org"),
    ("example.net", "domain", 0, "example.net"),
    ("nope.test", "domain", 1, ""),
    ("alice@example.org", "mailbox", 0, "example.org/alice/Maildir/"),
    ("Alice+News@Example.Net", "mailbox", 0, "example.org/alice/Maildir/"),
    ("carol@example.org", "mailbox", 1, ""),
    ("x@other.example", "alias", 0, DAVE),
    ("bob@example.net", "alias", 0, BOB),
    ("alice@example.org", "alias", 1, ""),
    ("postmaster@example.net", "senderlogin", 0, ALICE),
    ("x@other.example", "senderlogin", 1, ""),
    ("alice@example.org", "quota", 0, str(ALICE_QUOTA)),
    ("a@b@example.org", "alias", 1, ""),
]


async def test_postmap_queries_every_map(server: SocketmapServer) -> None:
    assert server.path is not None
    with postmap_config() as config:
        for transport in (f"unix:{server.path}", f"inet:127.0.0.1:{server.tcp_port}"):
            for key, table, code, value in POSTMAP_CASES:
                got = await postmap(config, key, f"socketmap:{transport}:{table}")
                assert got[:2] == (code, value), (key, table, got)
        code, _, err = await postmap(config, "x@example.org", f"socketmap:unix:{server.path}:nope")
        assert code != 0
        assert "PERM" in err or "error" in err


@pytest.mark.slapd
async def test_directory_outage_answers_temp_then_recovers(own_slapd: SlapdServer) -> None:
    from idsvc.directory.ldap import LdapDirectory

    base = own_slapd.new_subtree("sm")
    directory = await LdapDirectory.open(own_slapd.settings(base, timeout=1.0, retry_after=0.1))
    try:
        await populate(directory)
        mail = lookups(directory, cache_ttl=0, timeout=3.0)
        with short_dir() as tmp, postmap_config() as config:
            async with serving(SocketmapServer(settings(tmp / "sm"), mail)) as srv:
                table = f"socketmap:unix:{srv.path}:mailbox"
                client = await Client.open(srv.path)
                own_slapd.pause()
                try:
                    reply = await ask(client, b"mailbox alice@example.org")
                    assert reply.startswith(b"TEMP "), reply
                    code, out, err = await postmap(config, ALICE, table)
                    assert code != 0
                    assert out == ""
                    assert "TEMP" in err or "retry" in err or "error" in err
                finally:
                    own_slapd.resume()
                deadline = asyncio.get_running_loop().time() + 15
                while True:  # recovers with nothing of ours restarted, on the same connection
                    reply = await ask(client, b"mailbox alice@example.org")
                    if reply.startswith(b"OK ") or asyncio.get_running_loop().time() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert reply == b"OK example.org/alice/Maildir/"
                assert await postmap(config, ALICE, table) == (0, "example.org/alice/Maildir/", "")
                await client.close()
    finally:
        await directory.close()
