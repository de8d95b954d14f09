"""A real mail stack for the webmail: Dovecot 2.3 (IMAP and LMTP on loopback ports, users in a
passwd-file, Maildirs owned by ``nobody``) and Postfix (submission with STARTTLS, SASL through
Dovecot's auth socket, every message delivered to Dovecot over LMTP), both in temp directories,
plus the webmail app over httpx (``https://webmail.test``: the session cookie is Secure).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aioimaplib
import httpx
import pytest

from mailsvc.webmail.app import create_app
from mailsvc.webmail.config import WebmailSettings
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.postfix import PostfixSasl, PostfixServer, free_port, postfix_instance

ALICE, BOB = "alice@example.test", "bob@example.test"
PASSWORD = "alice's mail password"
BOB_PASSWORD = "bob's mail password"
BASE = "https://webmail.test"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class MailStack:
    dovecot: DovecotServer
    postfix: PostfixServer | None
    imap_port: int
    settings: WebmailSettings

    async def deliver(self, msg: EmailMessage | bytes, user: str = ALICE,
                      password: str = PASSWORD, folder: str = "INBOX") -> None:  # fmt: skip
        raw = msg if isinstance(msg, bytes) else msg.as_bytes()
        c = aioimaplib.IMAP4(host="127.0.0.1", port=self.imap_port, timeout=20)
        await c.wait_hello_from_server()
        assert (await c.login(user, password)).result == "OK"
        assert (await c.append(raw, mailbox=folder)).result == "OK"
        await _logout(c)

    async def subjects(self, user: str, password: str, folder: str = "INBOX") -> list[str]:
        c = aioimaplib.IMAP4(host="127.0.0.1", port=self.imap_port, timeout=20)
        await c.wait_hello_from_server()
        assert (await c.login(user, password)).result == "OK"
        await c.select(f'"{folder}"')
        got = await c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        await _logout(c)
        return [
            bytes(line).decode().strip().removeprefix("Subject: ").strip()
            for line in got.lines
            if isinstance(line, bytearray)
        ]


async def _logout(c: aioimaplib.IMAP4) -> None:
    """LOGOUT, then close the socket now (not when the collector finds it after the loop)."""
    await c.logout()
    transport = c.protocol.transport
    if transport is not None and not transport.is_closing():
        transport.close()
    await asyncio.sleep(0)  # let the close callbacks run on this loop


def _dovecot(root: Path, imap_port: int, lmtp_port: int) -> DovecotServer:
    nobody = pwd.getpwnam("nobody")
    (root / "mail").mkdir()
    os.chown(root / "mail", nobody.pw_uid, nobody.pw_gid)
    (root / "passwd").write_text(
        f"{ALICE}:{{PLAIN}}{PASSWORD}::::::\n{BOB}:{{PLAIN}}{BOB_PASSWORD}::::::\n"
    )
    auth = f"""passdb {{
  driver = passwd-file
  args = {root}/passwd
}}
userdb {{
  driver = static
  args = uid={nobody.pw_uid} gid={nobody.pw_gid} home={root}/mail/%u
}}"""
    extra = f"""protocols = imap lmtp
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = create
  }}
  mailbox Archive {{
    special_use = \\Archive
    auto = create
  }}
}}
"""
    return DovecotServer(auth, extra=extra)


@pytest.fixture
def mail_stack() -> Iterator[MailStack]:
    root = Path(tempfile.mkdtemp(prefix="idsvc-wm-"))
    os.chmod(root, 0o755)  # noqa: S103 - Dovecot's mail processes (nobody) traverse it
    imap_port, lmtp_port = free_port(), free_port()
    try:
        with _dovecot(root, imap_port, lmtp_port) as dovecot:
            sasl = PostfixSasl.dovecot(dovecot.base_dir / "auth-client")
            lmtp = f"lmtp:inet:127.0.0.1:{lmtp_port}"
            extra = {"default_transport": lmtp, "relay_transport": lmtp}
            with postfix_instance(sasl, extra_main=extra) as postfix:
                settings = WebmailSettings(
                    imap_host="127.0.0.1",
                    imap_port=imap_port,
                    smtp_host="127.0.0.1",
                    smtp_port=postfix.port,
                    smtp_tls="starttls",
                    ca_file=str(postfix.cert),
                    tls_check_hostname=False,  # the test certificate names mx.idsvc.test
                    page_size=10,
                    mail_domain="example.test",
                )
                yield MailStack(dovecot, postfix, imap_port, settings)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Tab:
    client: httpx.AsyncClient

    async def csrf(self, path: str) -> str:
        page = await self.client.get(path)
        found = CSRF.search(page.text)
        assert found is not None, page.text[:300]
        return found.group(1)

    async def post(self, path: str, data: dict[str, Any], *, csrf: str | None,
                   files: Any = None, origin: str = BASE) -> httpx.Response:  # fmt: skip
        body = dict(data)
        if csrf is not None:
            body["csrf"] = csrf
        return await self.client.post(
            path,
            data=body,
            files=files,
            headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"},
        )

    async def login(self, user: str = ALICE, password: str = PASSWORD) -> httpx.Response:
        return await self.post("/login", {"address": user, "password": password},
                               csrf=await self.csrf("/login"))  # fmt: skip


@pytest.fixture
async def webmail(mail_stack: MailStack) -> AsyncIterator[Tab]:
    app = create_app(mail_stack.settings)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield Tab(client)
    finally:  # the transport runs no lifespan: close the parked IMAP conversations here
        await app.state.park.close()


def mail(subject: str, body: str = "hello", *, html: str | None = None,
         sender: str = BOB, to: str = ALICE) -> EmailMessage:  # fmt: skip
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = f"<{abs(hash(subject))}@example.test>"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg
