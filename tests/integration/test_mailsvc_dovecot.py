"""What mailsvc delivers is what a real Dovecot 2.3 reads: messages sent through mailsvc (MX and
submission) are fetched over IMAP from a Dovecot pointed at the same Maildir, byte for byte, with
the size Dovecot computes and the flags a fresh delivery has; Dovecot's own quota accounting
agrees with the maildirsize file mailsvc keeps."""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import smtplib
from pathlib import Path

from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.mailstack import ALICE, ALICE_QUOTA, PASSWORD, MailStack, free_port, mail_stack
from tests.integration.test_mailsvc_smtp import tls_client

IMAP_PASSWORD = "imap-Secret"


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Hand the vmail tree to the one unprivileged mail user (mailsvc runs as it in production)."""
    os.chown(root, uid, gid)
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(base, name), uid, gid)


def dovecot_for(stack: MailStack, port: int) -> DovecotServer:
    vmail_user = pwd.getpwnam("nobody")
    blocks = f"""\
passdb {{
  driver = static
  args = password={IMAP_PASSWORD}
}}
userdb {{
  driver = static
  args = uid={vmail_user.pw_uid} gid={vmail_user.pw_gid} home={stack.vmail}/%d/%n
}}
"""
    extra = f"""\
protocols = imap
mail_location = maildir:~/Maildir
mail_plugins = quota
plugin {{
  quota = maildir:User quota
  quota_rule = *:bytes={ALICE_QUOTA}
}}
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
    return DovecotServer(blocks, extra=extra)


async def test_dovecot_fetches_what_mailsvc_delivered() -> None:
    body_mx = b"From: s@remote.example\r\nSubject: via mx\r\n\r\nline one\r\n.dot line\r\n"
    body_sub = b"From: alice@example.org\r\nSubject: via submission\r\n\r\nhello me\r\n"
    with mail_stack() as stack:
        with smtplib.SMTP("127.0.0.1", stack.mx, timeout=30) as client:
            client.sendmail("s@remote.example", [ALICE], body_mx)
        with smtplib.SMTP("127.0.0.1", stack.submission, timeout=30) as client:
            client.starttls(context=tls_client())
            client.login(ALICE, PASSWORD)
            client.sendmail(ALICE, [ALICE], body_sub)
        files = {p.read_bytes(): p for p in stack.messages(ALICE)}
        assert len(files) == 2
        vmail_user = pwd.getpwnam("nobody")
        chown_tree(stack.vmail, vmail_user.pw_uid, vmail_user.pw_gid)
        stack.workdir.chmod(0o711)  # the mail user traverses the test's temp dir
        port = free_port()
        with dovecot_for(stack, port) as dovecot:
            imap = imaplib.IMAP4("127.0.0.1", port, timeout=30)
            try:
                assert imap.login(ALICE, IMAP_PASSWORD)[0] == "OK"
                typ, data = imap.select("INBOX")
                assert typ == "OK", dovecot.tail()
                assert data == [b"2"]
                typ, fetched = imap.fetch("1:2", "(FLAGS RFC822.SIZE BODY.PEEK[])")
                assert typ == "OK"
                got: dict[bytes, tuple[int, bytes]] = {}
                for item in fetched:
                    if not isinstance(item, tuple):
                        continue
                    meta, content = item
                    size_m = re.search(rb"RFC822\.SIZE (\d+)", meta)
                    flags_m = re.search(rb"FLAGS \(([^)]*)\)", meta)
                    assert size_m is not None
                    assert flags_m is not None
                    size, flags = int(size_m.group(1)), flags_m.group(1)
                    got[content] = (size, flags)
                assert set(got) == set(files)  # byte for byte
                for content, (size, flags) in got.items():
                    assert size == len(content)
                    assert b"\\Seen" not in flags
                    assert b"\\Recent" in flags
                assert any(c.endswith(body_mx) for c in got)
                assert any(c.endswith(body_sub) for c in got)
                # Dovecot's quota (reading the maildirsize mailsvc wrote) agrees on the usage
                typ, quota = imap.getquotaroot("INBOX")
                assert typ == "OK"
                used = sum(len(c) for c in files)
                text = b" ".join(x for x in quota[1] if isinstance(x, bytes))
                assert f"STORAGE {-(-used // 1024)} {-(-ALICE_QUOTA // 1024)}".encode() in text, (
                    text
                )
            finally:
                imap.logout()
