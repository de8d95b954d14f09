"""A real nginx mail proxy (libnginx-mod-mail) authenticating against idsvc's ``auth_http``
endpoint over a UNIX socket (with the shared-secret header), proxying to a real Dovecot 2.3 that
itself verifies through contrib/dovecot/idsvc.lua: IMAP and POP3 logins, in-session retry after
a failure (``Auth-Wait``), the session closed after ``max_attempts``, SMTP reply codes
(``Auth-Error-Code``) and temporary failures."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import poplib
import smtplib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from idsvc.config import MailSettings
from idsvc.directory.sqlite import SqliteDirectory
from idsvc.lookups import MailLookups
from idsvc.wire.mailhttp.server import MailHttpServer
from tests.fixtures.dovecot import DovecotServer, mail_owner, vmail_root
from tests.fixtures.nginx import NginxMailProxy
from tests.integration.dovecot_auth_support import populate, short_dir
from tests.integration.mailhttp_support import (
    USERS,
    authenticator,
    lua_dovecot,
    require_lua,
    serve_lua,
    serve_nginx,
)

SECRET = "ngx-s3cret"


@dataclass
class Stack:
    auth_http: MailHttpServer
    dovecot: DovecotServer
    nginx: NginxMailProxy
    vmail: Path
    directory: SqliteDirectory


@pytest.fixture
async def stack(embedded_directory: SqliteDirectory) -> AsyncIterator[Stack]:
    require_lua()
    await populate(embedded_directory)
    with short_dir() as tmp:
        vmail = vmail_root(tmp)
        uid, gid = mail_owner()
        lookups = MailLookups(
            embedded_directory, MailSettings(vmail_root=vmail, vmail_uid=uid, vmail_gid=gid)
        )
        async with serve_lua(authenticator(embedded_directory), lookups, tmp) as lua:
            dovecot = lua_dovecot(tmp, f"unix:{lua.path}")
            async with serve_nginx(
                authenticator(embedded_directory, failure_delay=0.2),
                tmp,
                secret=SECRET,
                secret_header="X-Auth-Key",
                imap_backend=f"127.0.0.1:{dovecot.imap_port}",
                pop3_backend=f"127.0.0.1:{dovecot.pop3_port}",
                smtp_backend="127.0.0.1:9",  # never reached: SMTP is only refused here
            ) as auth_http:
                nginx = NginxMailProxy(
                    tmp, f"unix:{auth_http.path}:/auth", auth_header=f"X-Auth-Key {SECRET}"
                )
                await asyncio.to_thread(dovecot.start)
                try:
                    await asyncio.to_thread(nginx.start)
                    try:
                        yield Stack(auth_http, dovecot, nginx, vmail, embedded_directory)
                    finally:
                        await asyncio.to_thread(nginx.stop)
                finally:
                    await asyncio.to_thread(dovecot.cleanup)


async def test_imap_login_through_nginx_reaches_the_backend_as_the_canonical_user(
    stack: Stack,
) -> None:
    def imap() -> list[bytes | None]:
        with imaplib.IMAP4("127.0.0.1", stack.nginx.imap_port, timeout=30) as client:
            client.login("Bob@Example.ORG", USERS.good_pw)
            status, data = client.select("INBOX")
            assert status == "OK"
            client.append("INBOX", None, None, b"Subject: via nginx\r\n\r\nhello\r\n")
            _, count = client.select("INBOX")
            return [data[0], count[-1]]

    assert await asyncio.to_thread(imap) == [b"0", b"1"]
    log = stack.dovecot.tail(50_000)
    assert "Login: user=<bob@example.org>, method=PLAIN" in log  # Auth-User: canonical
    assert (stack.vmail / "example.org" / "bob" / "Maildir").is_dir()


async def test_imap_wrong_password_can_be_retried_in_session(stack: Stack) -> None:
    def imap() -> str:
        with imaplib.IMAP4("127.0.0.1", stack.nginx.imap_port, timeout=30) as client:
            with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
                client.login(USERS.good, "wrong")
            status, _ = client.login(USERS.good, USERS.good_pw)  # same session (Auth-Wait)
            return str(status)

    assert await asyncio.to_thread(imap) == "OK"


async def test_after_max_attempts_nginx_closes_the_session(stack: Stack) -> None:
    def imap() -> str:
        client = imaplib.IMAP4("127.0.0.1", stack.nginx.imap_port, timeout=30)
        try:
            for _ in range(3):  # max_attempts = 3: no Auth-Wait on the third
                with pytest.raises(imaplib.IMAP4.error):
                    client.login(USERS.good, "wrong")
            try:
                client.login(USERS.good, USERS.good_pw)
            except (imaplib.IMAP4.abort, OSError) as exc:
                return f"closed: {exc}"
            return "still open"
        finally:
            client.shutdown()

    assert (await asyncio.to_thread(imap)).startswith("closed")


async def test_pop3_through_nginx(stack: Stack) -> None:
    def pop3() -> tuple[bytes, str]:
        client = poplib.POP3("127.0.0.1", stack.nginx.pop3_port, timeout=30)
        try:
            client.user(USERS.good)
            ok = client.pass_(USERS.good_pw)
            client.quit()
        finally:
            client.close()
        bad = poplib.POP3("127.0.0.1", stack.nginx.pop3_port, timeout=30)
        try:
            bad.user(USERS.good)
            with pytest.raises(poplib.error_proto) as refused:
                bad.pass_("wrong")
        finally:
            bad.close()
        return ok, str(refused.value)

    ok, refused = await asyncio.to_thread(pop3)
    assert ok.startswith(b"+OK")
    assert "[AUTH] Authentication failed." in refused


async def test_smtp_reply_codes(stack: Stack) -> None:
    def smtp(password: str) -> tuple[int, bytes]:
        """One AUTH PLAIN (nginx closes an SMTP session after a failure: no Auth-Wait)."""
        client = smtplib.SMTP("127.0.0.1", stack.nginx.smtp_port, timeout=30)
        try:
            client.ehlo("client.example")
            blob = base64.b64encode(f"\0{USERS.good}\0{password}".encode()).decode()
            return client.docmd("AUTH", f"PLAIN {blob}")
        finally:
            client.close()

    code, text = await asyncio.to_thread(smtp, "wrong")
    assert (code, text) == (535, b"5.7.8 Authentication credentials invalid")
    await stack.directory.close()  # the directory goes away: a temporary failure
    code, text = await asyncio.to_thread(smtp, USERS.good_pw)
    assert code == 451
    assert text.startswith(b"4.3.0 Temporary authentication failure")


async def test_temporary_failures_over_imap(stack: Stack) -> None:
    def imap() -> str:
        client = imaplib.IMAP4("127.0.0.1", stack.nginx.imap_port, timeout=30)
        try:
            client.login(USERS.good, USERS.good_pw)
        except (imaplib.IMAP4.error, imaplib.IMAP4.abort) as exc:
            return str(exc)
        finally:
            client.shutdown()
        return "logged in"

    await stack.directory.close()
    assert "[UNAVAILABLE] Temporary authentication failure" in await asyncio.to_thread(imap)
    await stack.auth_http.close()  # idsvc's endpoint goes away: nginx's own temporary error
    assert "logged in" not in await asyncio.to_thread(imap)
    assert "while in http auth state" in stack.nginx.log()
