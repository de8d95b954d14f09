"""The Dovecot dict proxy server: raw protocol transcripts, bad input, and a real Dovecot 2.3
doing passdb/userdb ``driver = dict`` against it (``doveadm auth test``, ``doveadm user``, and
``doveadm user '*'``, which iterates), on both backends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from idsvc.config import DovecotDictSettings, SocketSettings
from idsvc.directory.base import Directory
from idsvc.model import Account, Address
from idsvc.wire.dovecot_dict.server import DovecotDictServer
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.slapd import SlapdServer
from tests.integration.lookup_support import Client, serving, short_dir
from tests.integration.mail_support import (
    ALICE,
    ALICE_QUOTA,
    BOB,
    CAROL,
    DAVE,
    HASH,
    PASSWORD,
    PLUS,
    lookups,
    populate,
)

ALL_USERS = sorted([ALICE, BOB, CAROL, DAVE, PLUS])  # not eve@off.example: disabled domain


def settings(path: Path, **kw: Any) -> DovecotDictSettings:
    return DovecotDictSettings(
        socket=SocketSettings(path=path, mode=0o666), tcp="127.0.0.1:0", **kw
    )


@pytest.fixture
async def server(directory: Directory) -> AsyncIterator[DovecotDictServer]:
    await populate(directory)
    with short_dir() as tmp:
        conf = settings(tmp / "dict", iterate_page=2)
        async with serving(DovecotDictServer(conf, lookups(directory))) as srv:
            yield srv


async def hello(client: Client) -> None:
    await client.send(b"H3\t2\t0\t\tauth\n")


async def line(client: Client) -> bytes:
    return (await client.until(b"\n"))[:-1]


async def test_lookups(server: DovecotDictServer) -> None:
    assert server.path is not None
    client = await Client.open(server.path)
    await hello(client)
    await client.send(f"Lshared/passdb/{ALICE}\t{ALICE}\n".encode())
    reply = await line(client)
    assert reply.startswith(b"O")
    assert json.loads(reply[1:]) == {"user": ALICE, "password": HASH}
    await client.send(b"Lshared/passdb/Alice+x@example.net\tx\n")  # canonical user comes back
    assert json.loads((await line(client))[1:])["user"] == ALICE
    await client.send(f"Lshared/passdb/{CAROL}\t\n".encode())
    assert await line(client) == b"N"  # disabled: unknown, so no SASL client can let it in
    await client.send(f"Lshared/passdb/pop3/{DAVE}\t\n".encode())
    assert await line(client) == b"N"  # service not enabled
    await client.send(f"Lshared/passdb/imap/{DAVE}\t\n".encode())
    assert json.loads((await line(client))[1:]) == {"user": DAVE, "password": HASH}
    await client.send(f"Lshared/userdb/{ALICE}\t{ALICE}\n".encode())
    assert json.loads((await line(client))[1:]) == {
        "user": ALICE,
        "home": "/srv/vmail/example.org/alice",
        "mail": "maildir:~/Maildir",
        "uid": "5000",
        "gid": "5000",
        "quota_rule": f"*:bytes={ALICE_QUOTA}",
    }
    for key in (
        b"shared/passdb/nobody@example.org",
        b"shared/userdb/a@b@example.org",
        b"priv/quota/storage",
        b"shared/other/x",
        b"shared/passdb/\x01n@example.org",  # an escaped LF in the key: no address
    ):
        await client.send(b"L" + key + b"\t\n")
        assert await line(client) == b"N", key
    await client.close()


async def iterate(client: Client, request: bytes) -> list[bytes]:
    await client.send(request)
    rows = []
    while (row := await line(client)) != b"":
        rows.append(row)
    return rows


async def test_iteration_is_paged_and_bounded(server: DovecotDictServer) -> None:
    assert server.tcp_port is not None
    client = await Client.open(server.tcp_port)
    await hello(client)
    rows = await iterate(client, b"I9\t0\tshared/userdb/\t\n")  # recurse + no-value
    assert rows == [b"Oshared/userdb/" + u.encode() + b"\t" for u in ALL_USERS]
    rows = await iterate(client, b"I1\t3\tshared/userdb/\t\n")  # max 3 rows, with values
    assert len(rows) == 3
    key, value = rows[0][1:].split(b"\t")
    assert key == b"shared/userdb/" + ALL_USERS[0].encode()
    assert json.loads(value)["user"] == ALL_USERS[0]
    assert await iterate(client, b"I1\t0\tshared/passdb/\t\n") == []  # only users are listed
    await client.send(b"B1\t\nSshared/x\t1\nC1\n")  # writes are refused, at commit
    assert await line(client) == b"F1\tidsvc's dict is read-only"
    await client.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"Lshared/passdb/x\t\n",  # no handshake first
        b"H9\t0\t0\t\tauth\n",  # unknown major version
        b"Hx\t0\n",
        b"H3\t2\t0\t\tauth\nZwhat\n",  # unknown opcode
        b"H3\t2\t0\t\tauth\nIx\t0\tshared/userdb/\t\n",  # malformed flags
        b"H3\t2\t0\t\tauth\nLkey\x01",  # dangling escape … then the line ends
        b"H3\t2\t0\t\tauth\n" + b"L" + b"x" * 70_000,  # over the line limit, no LF
        b"H3\t2\t0\t\tauth\n\xff\xfe\n",  # not UTF-8
        b"H3\t2\t0\t\tauth\n\n",  # empty line
    ],
)
async def test_bad_input_closes_only_that_connection(
    server: DovecotDictServer, garbage: bytes
) -> None:
    assert server.path is not None
    bystander = await Client.open(server.path)
    await hello(bystander)
    bad = await Client.open(server.path)
    await bad.send(garbage if garbage.endswith((b"\n", b"x")) else garbage + b"\n")
    assert await bad.eof()
    await bystander.send(f"Lshared/userdb/{BOB}\t\n".encode())
    assert (await line(bystander)).startswith(b"O{")
    await bad.close()
    await bystander.close()


def dovecot_blocks(dict_path: Path, args_file: Path) -> str:
    args_file.write_text(
        f"uri = proxy:{dict_path}:auth\n"
        "password_key = passdb/%u\n"
        "user_key = userdb/%u\n"
        "iterate_disable = no\n"
        "iterate_prefix = userdb/\n"
        "default_pass_scheme = SSHA\n",
        encoding="utf-8",
    )
    return (
        f"passdb {{\n  driver = dict\n  args = {args_file}\n}}\n"
        f"userdb {{\n  driver = dict\n  args = {args_file}\n}}\n"
    )


async def test_real_dovecot_passdb_userdb_and_iteration(server: DovecotDictServer) -> None:
    assert server.path is not None
    blocks = dovecot_blocks(server.path, server.path.parent / "dict-auth.conf.ext")
    with DovecotServer(blocks) as dovecot:

        async def doveadm(*args: str) -> tuple[int, str]:
            return await asyncio.to_thread(dovecot.doveadm, *args)

        code, out = await doveadm("auth", "test", "-x", "service=imap", ALICE, PASSWORD)
        assert code == 0, out + dovecot.tail()
        assert "auth succeeded" in out
        code, out = await doveadm(
            "auth", "test", "-x", "service=imap", "alice@example.net", PASSWORD
        )
        assert code == 0, out
        assert f"user={ALICE}" in out  # the alias-domain login becomes the canonical user
        code, out = await doveadm("auth", "test", "-x", "service=imap", ALICE, "wrong")
        assert code != 0
        assert "auth failed" in out
        code, out = await doveadm("auth", "test", "-x", "service=imap", CAROL, PASSWORD)
        assert code != 0  # disabled
        assert "auth failed" in out
        code, out = await doveadm("auth", "test", "-x", "service=imap", "nobody@example.org", "x")
        assert code != 0
        code, out = await doveadm("user", ALICE)
        assert code == 0, out + dovecot.tail()
        assert "/srv/vmail/example.org/alice" in out
        assert "maildir:~/Maildir" in out
        assert f"*:bytes={ALICE_QUOTA}" in out
        assert "5000" in out
        code, out = await doveadm("user", "nobody@example.org")
        assert code != 0
        code, out = await doveadm("user", "*")
        assert code == 0, out + dovecot.tail()
        assert sorted(out.split()) == ALL_USERS


@pytest.mark.slapd
async def test_real_dovecot_iterates_many_users_in_pages(ldap_directory: Directory) -> None:
    await populate(ldap_directory)
    extra = [f"user{i:04d}@example.org" for i in range(1200)]
    for address in extra:
        await ldap_directory.add_account(Account(Address.parse(address), HASH))
    with short_dir() as tmp:
        conf = settings(tmp / "dict", iterate_page=100)
        async with serving(DovecotDictServer(conf, lookups(ldap_directory))) as srv:
            assert srv.path is not None
            blocks = dovecot_blocks(srv.path, tmp / "dict-auth.conf.ext")
            with DovecotServer(blocks) as dovecot:
                code, out = await asyncio.to_thread(dovecot.doveadm, "user", "*")
    assert code == 0, out
    assert sorted(out.split()) == sorted([*ALL_USERS, *extra])


async def test_a_client_that_stops_reading_an_iteration_stalls_only_itself(
    embedded_directory: Directory,
) -> None:
    await populate(embedded_directory)
    extra = [f"u{i:05d}@example.org" for i in range(3000)]
    for address in extra:
        await embedded_directory.add_account(Account(Address.parse(address), HASH))
    with short_dir() as tmp:
        conf = settings(tmp / "dict", iterate_page=100)
        async with serving(DovecotDictServer(conf, lookups(embedded_directory))) as srv:
            assert srv.path is not None
            slow = await Client.open(srv.path)
            await hello(slow)
            await slow.send(b"I1\t0\tshared/userdb/\t\n")  # ~600 kB of rows, with values
            await asyncio.sleep(0.5)  # ... which it does not read for a while
            other = await Client.open(srv.path)
            await hello(other)
            await other.send(f"Lshared/userdb/{BOB}\t\n".encode())
            assert (await line(other)).startswith(b"O{")
            rows = []
            while (row := await line(slow)) != b"":
                rows.append(row)
            assert len(rows) == len(ALL_USERS) + len(extra)
            assert all(json.loads(r.split(b"\t", 1)[1])["uid"] == "5000" for r in rows)
            await slow.close()
            await other.close()


@pytest.mark.slapd
async def test_directory_outage_is_a_dict_failure(own_slapd: SlapdServer) -> None:
    from idsvc.directory.ldap import LdapDirectory

    base = own_slapd.new_subtree("dict")
    directory = await LdapDirectory.open(own_slapd.settings(base, timeout=1.0, retry_after=0.1))
    try:
        await populate(directory)
        mail = lookups(directory, cache_ttl=0, timeout=3.0)
        with short_dir() as tmp:
            async with serving(DovecotDictServer(settings(tmp / "dict"), mail)) as srv:
                assert srv.path is not None
                client = await Client.open(srv.path)
                await hello(client)
                own_slapd.pause()
                try:
                    await client.send(f"Lshared/passdb/{ALICE}\t\n".encode())
                    assert await line(client) == b"Ftemporary directory failure"
                    await client.send(b"I8\t0\tshared/userdb/\t\n")
                    assert await line(client) == b"Ftemporary directory failure"
                finally:
                    own_slapd.resume()
                deadline = asyncio.get_running_loop().time() + 15
                while True:
                    await client.send(f"Lshared/passdb/{ALICE}\t\n".encode())
                    reply = await line(client)
                    if reply.startswith(b"O") or asyncio.get_running_loop().time() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert json.loads(reply[1:])["user"] == ALICE
                await client.close()
    finally:
        await directory.close()
