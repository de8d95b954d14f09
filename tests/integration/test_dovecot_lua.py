"""contrib/dovecot/idsvc.lua in a real Dovecot 2.3 (dovecot-auth-lua, lua-socket, lua-cjson):
the Lua passdb lets idsvc verify the password and the Lua userdb takes home/mail/uid/gid/quota
from idsvc's mail lookups. Proven with ``doveadm auth test``, ``doveadm user`` and real IMAP and
POP3 logins; idsvc going away is a temporary failure, never a wrong password."""

from __future__ import annotations

import asyncio
import imaplib
import poplib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from idsvc.config import MailSettings
from idsvc.directory.sqlite import SqliteDirectory
from idsvc.lookups import MailLookups
from idsvc.model import Account, Address
from idsvc.wire.mailhttp.server import MailHttpServer
from tests.fixtures.dovecot import DovecotServer, mail_owner, vmail_root
from tests.fixtures.slapd import ssha
from tests.integration.dovecot_auth_support import populate, short_dir
from tests.integration.mailhttp_support import (
    USERS,
    authenticator,
    lua_dovecot,
    require_lua,
    serve_lua,
)

QUOTA_USER = "quota@example.org"


@dataclass
class Stack:
    idsvc: MailHttpServer
    dovecot: DovecotServer
    vmail: Path


@pytest.fixture
def tmp() -> Iterator[Path]:
    with short_dir() as path:
        yield path


@pytest.fixture
async def stack(embedded_directory: SqliteDirectory, tmp: Path) -> AsyncIterator[Stack]:
    require_lua()
    await populate(embedded_directory)
    await embedded_directory.add_account(
        Account(address=Address.parse(QUOTA_USER), password_hash=ssha("pw"), quota=10_000_000)
    )
    vmail = vmail_root(tmp)
    uid, gid = mail_owner()
    lookups = MailLookups(
        embedded_directory, MailSettings(vmail_root=vmail, vmail_uid=uid, vmail_gid=gid)
    )
    async with serve_lua(authenticator(embedded_directory), lookups, tmp) as srv:
        dovecot = lua_dovecot(tmp, f"unix:{srv.path}")
        await asyncio.to_thread(dovecot.start)
        try:
            yield Stack(srv, dovecot, vmail)
        finally:
            await asyncio.to_thread(dovecot.cleanup)


async def _doveadm(stack: Stack, *args: str) -> tuple[int, str]:
    return await asyncio.to_thread(stack.dovecot.doveadm, *args)


async def test_doveadm_auth_test_through_the_lua_passdb(stack: Stack) -> None:
    rc, out = await _doveadm(
        stack,
        "auth",
        "test",
        "-x",
        "service=imap",
        "-x",
        "rip=127.0.0.1",
        "Bob@Example.ORG",
        USERS.good_pw,
    )
    assert rc == 0, out + stack.dovecot.tail(50_000)
    assert "auth succeeded" in out
    assert "user=bob@example.org" in out  # idsvc's canonical name is adopted
    for user, password in [
        (USERS.good, "wrong"),
        (USERS.unknown, "wrong"),
        (USERS.disabled, USERS.disabled_pw),
    ]:
        rc, out = await _doveadm(
            stack, "auth", "test", "-x", "service=pop3", "-x", "rip=127.0.0.1", user, password
        )
        assert rc != 0
        assert "auth failed" in out
        assert "temp_fail" not in out
    log = stack.dovecot.tail(50_000)
    assert "Password mismatch" in log
    assert "unknown user" in log.lower() or "user_unknown" in log


def _fields(out: str) -> dict[str, str]:
    """``doveadm user`` output without a terminal: ``field<TAB>value`` lines after a header."""
    rows = [line.split("\t", 1) for line in out.splitlines()[1:] if "\t" in line]
    return {key: value for key, value in rows}


async def test_userdb_comes_from_the_mail_lookups(stack: Stack) -> None:
    rc, out = await _doveadm(stack, "user", USERS.good)
    assert rc == 0, out + stack.dovecot.tail(50_000)
    uid, gid = mail_owner()
    assert _fields(out) == {
        "uid": str(uid),
        "gid": str(gid),
        "home": f"{stack.vmail}/example.org/bob",
        "mail": "maildir:~/Maildir",
    }
    rc, out = await _doveadm(stack, "user", QUOTA_USER)
    assert rc == 0, out
    assert _fields(out)["quota_rule"] == "*:bytes=10000000"
    rc, out = await _doveadm(stack, "user", USERS.unknown)
    assert rc == 67, out  # EX_NOUSER


async def test_real_imap_and_pop3_logins(stack: Stack) -> None:
    def imap() -> list[bytes]:
        with imaplib.IMAP4("127.0.0.1", stack.dovecot.imap_port, timeout=30) as client:
            client.login(USERS.good, USERS.good_pw)
            status, data = client.select("INBOX")
            assert status == "OK"
            other = imaplib.IMAP4("127.0.0.1", stack.dovecot.imap_port, timeout=30)
            try:
                with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                    other.login(USERS.good, "wrong")
            finally:
                other.shutdown()
            return [bytes(d) for d in data if isinstance(d, bytes)]

    def pop3() -> bytes:
        client = poplib.POP3("127.0.0.1", stack.dovecot.pop3_port, timeout=30)
        try:
            client.user(USERS.good)
            reply = client.pass_(USERS.good_pw)
            client.quit()
        finally:
            client.close()
        return reply

    assert await asyncio.to_thread(imap) == [b"0"]
    assert (await asyncio.to_thread(pop3)).startswith(b"+OK")
    # the mailbox was created where idsvc's userdb put it, owned by the uid it gave
    maildir = stack.vmail / "example.org" / "bob" / "Maildir"
    assert maildir.is_dir()
    assert maildir.stat().st_uid == mail_owner()[0]


async def test_idsvc_unreachable_is_a_temporary_failure(stack: Stack) -> None:
    await stack.idsvc.close()  # the socket goes away
    rc, out = await _doveadm(
        stack,
        "auth",
        "test",
        "-x",
        "service=imap",
        "-x",
        "rip=127.0.0.1",
        USERS.good,
        USERS.good_pw,
    )
    assert rc != 0
    assert "code=temp_fail" in out

    def imap() -> str:
        with imaplib.IMAP4("127.0.0.1", stack.dovecot.imap_port, timeout=30) as client:
            try:
                client.login(USERS.good, USERS.good_pw)
            except imaplib.IMAP4.error as exc:
                return str(exc)
        return "logged in"

    assert "[UNAVAILABLE]" in await asyncio.to_thread(imap)
    rc, out = await _doveadm(stack, "user", USERS.good)
    assert rc != 0
    assert "idsvc" in stack.dovecot.tail(50_000)


async def test_directory_failure_is_a_temporary_failure(
    stack: Stack, embedded_directory: SqliteDirectory
) -> None:
    await embedded_directory.close()
    rc, out = await _doveadm(
        stack,
        "auth",
        "test",
        "-x",
        "service=imap",
        "-x",
        "rip=127.0.0.1",
        USERS.good,
        USERS.good_pw,
    )
    assert rc != 0
    assert "code=temp_fail" in out
