"""The tcp_table listener on both backends: raw transcripts and real ``postmap -q`` through
``tcp:127.0.0.1:PORT`` for every map (one listener per map, as Postfix configures them)."""

from __future__ import annotations

from typing import Any

import pytest

from idsvc.config import TcpTableSettings
from idsvc.directory.base import Directory
from idsvc.wire.tcp_table.server import TcpTableServer
from tests.integration.lookup_support import Client, postmap, postmap_config, serving
from tests.integration.mail_support import ALICE, ALICE_QUOTA, BOB, DAVE, lookups, populate


def settings(table: str, **kw: Any) -> TcpTableSettings:
    return TcpTableSettings(tcp="127.0.0.1:0", map=table, **kw)  # type: ignore[arg-type]


async def test_raw_requests(directory: Directory) -> None:
    await populate(directory)
    async with serving(TcpTableServer(settings("alias"), lookups(directory))) as srv:
        assert srv.tcp_port is not None
        client = await Client.open(srv.tcp_port)
        await client.send(b"get x%40other.example\nget alice@example.org\nget a%zz\n")
        assert await client.until(b"\n") == f"200 {DAVE}\n".encode()
        assert await client.until(b"\n") == b"500 not%20found\n"
        assert await client.until(b"\n") == b"500 not%20found\n"  # a broken escape: no address
        await client.send(b"get team@example.org\n")
        reply = await client.until(b"\n")
        assert sorted(reply[4:-1].split(b",")) == sorted([ALICE.encode(), BOB.encode()])
        bystander = await Client.open(srv.tcp_port)
        await client.send(b"put x y\n")  # not a tcp_table request: closed
        assert await client.eof()
        await bystander.send(b"get " + b"x" * 10_000 + b"\n")  # over the line limit: closed
        assert await bystander.eof()
        third = await Client.open(srv.tcp_port)
        await third.send(b"get anyone@other.example\n")
        assert await third.until(b"\n") == f"200 {DAVE}\n".encode()
        for c in (client, bystander, third):
            await c.close()


CASES = [
    ("domain", "example.net", 0, "example.net"),
    ("domain", "nope.test", 1, ""),
    ("mailbox", "Alice+x@example.org", 0, "example.org/alice/Maildir/"),
    ("alias", "bob@example.net", 0, BOB),
    ("alias", "a b@example.org", 1, ""),  # postmap %-encodes the space
    ("senderlogin", "postmaster@example.org", 0, ALICE),
    ("quota", ALICE, 0, str(ALICE_QUOTA)),
]


@pytest.mark.parametrize("table", ["domain", "mailbox", "alias", "senderlogin", "quota"])
async def test_postmap_through_tcp(directory: Directory, table: str) -> None:
    await populate(directory)
    async with serving(TcpTableServer(settings(table), lookups(directory))) as srv:
        with postmap_config() as config:
            for case_table, key, code, value in CASES:
                if case_table != table:
                    continue
                got = await postmap(config, key, f"tcp:127.0.0.1:{srv.tcp_port}")
                assert got[:2] == (code, value), (key, got)
