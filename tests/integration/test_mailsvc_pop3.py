"""mailsvc's POP3 front end against real processes (idsvc serve, mailsvc serve) and real
clients: poplib (STLS, USER/PASS, AUTH PLAIN with and without initial response, AUTH LOGIN),
curl pop3://, fetchmail; deletions only in UPDATE, the session lock ([IN-USE]), [AUTH] before
TLS, [SYS/TEMP] while idsvc is down, STLS throwing away pipelined plaintext, the bad-command
budget; and answer by answer against Dovecot's pop3d on a copy of the same Maildir."""

from __future__ import annotations

import base64
import poplib
import pwd
import shutil
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailsvc.maildir import MaildirStore
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.mailcorpus import CORPUS
from tests.fixtures.mailstack import ALICE, BOB, PASSWORD, MailStack, free_port, mail_stack, run
from tests.integration.test_mailsvc_dovecot import chown_tree
from tests.integration.test_mailsvc_smtp import tls_client

DOVECOT_PASSWORD = "dc-Secret"


@pytest.fixture(scope="module")
def stack() -> Iterator[MailStack]:
    with mail_stack() as running:
        yield running


def seed(stack: MailStack, address: str, messages: list[bytes]) -> Path:
    """Replace the user's INBOX with ``messages`` (delivered as the SMTP front end does)."""
    box = stack.maildir(address)
    if box.exists():
        shutil.rmtree(box)
    store = MaildirStore(stack.vmail, hostname="mx.example.org", fsync=False)
    maildir = store.mailbox(str(box.relative_to(stack.vmail)))
    for raw in messages:
        maildir.deliver([raw])
        time.sleep(0.002)  # distinct, ordered unique names
    return box


def pop(stack: MailStack, user: str = ALICE) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", stack.pop3, timeout=30)
    client.stls(context=tls_client())
    client.user(user)
    client.pass_(PASSWORD)
    return client


def raw_session(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    assert sock.recv(1024).startswith(b"+OK")
    return sock


def test_retrieve_and_delete_over_stls(stack: MailStack) -> None:
    seed(stack, ALICE, CORPUS[:3])
    client = pop(stack)
    count, size = client.stat()
    assert count == 3
    assert size == sum(len(m) for m in CORPUS[:3])
    _, lines, _ = client.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == CORPUS[0]  # poplib un-stuffs the leading dot
    _, top, _ = client.top(2, 0)
    assert top[-1] == b""
    assert b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus Berlin" in top
    uidls = [line.split()[1] for line in client.uidl()[1]]
    client.dele(1)
    assert client.stat()[0] == 2
    client.quit()
    client = pop(stack)
    assert [line.split()[1] for line in client.uidl()[1]] == uidls[1:]  # UIDLs are stable
    client.quit()


def test_dropped_connection_deletes_nothing_and_rset(stack: MailStack) -> None:
    seed(stack, ALICE, CORPUS[:2])
    client = pop(stack)
    client.dele(1)
    client.dele(2)
    client.close()  # no QUIT: never reaches UPDATE
    time.sleep(0.3)
    client = pop(stack)
    assert client.stat()[0] == 2
    client.dele(1)
    client.rset()
    client.quit()
    assert len(stack.messages(ALICE)) == 2


def test_second_session_gets_in_use(stack: MailStack) -> None:
    seed(stack, ALICE, CORPUS[:1])
    first = pop(stack)
    second = poplib.POP3("127.0.0.1", stack.pop3, timeout=30)
    second.stls(context=tls_client())
    second.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(PASSWORD)
    second.close()
    first.quit()
    pop(stack).quit()  # released


def test_auth_mechanisms(stack: MailStack) -> None:
    seed(stack, ALICE, CORPUS[:1])
    plain = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    client = poplib.POP3("127.0.0.1", stack.pop3, timeout=30)
    client.stls(context=tls_client())
    assert "SASL" in client.capa()
    assert client._shortcmd(f"AUTH PLAIN {plain}").startswith(b"+OK")
    client.quit()
    client = poplib.POP3("127.0.0.1", stack.pop3, timeout=30)
    client.stls(context=tls_client())
    assert client._shortcmd("AUTH PLAIN") == b"+ "
    assert client._shortcmd(plain).startswith(b"+OK")
    client.quit()
    client = poplib.POP3("127.0.0.1", stack.pop3, timeout=30)
    client.stls(context=tls_client())
    assert client._shortcmd("AUTH LOGIN").startswith(b"+ ")
    assert client._shortcmd(base64.b64encode(ALICE.encode()).decode()).startswith(b"+ ")
    assert client._shortcmd(base64.b64encode(PASSWORD.encode()).decode()).startswith(b"+OK")
    client.quit()
    client = poplib.POP3("127.0.0.1", stack.pop3, timeout=30)
    client.stls(context=tls_client())
    client.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.pass_("wrong")
    client.close()


def test_plaintext_refused_before_stls(stack: MailStack) -> None:
    client = poplib.POP3("127.0.0.1", stack.pop3, timeout=30)
    capa = client.capa()
    assert "STLS" in capa
    assert "USER" not in capa
    assert "SASL" not in capa
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.user(ALICE)
    client.quit()


def test_stls_discards_pipelined_plaintext(stack: MailStack) -> None:
    sock = raw_session(stack.pop3)
    sock.sendall(b"STLS\r\nUSER injected\r\nQUIT\r\n")
    assert sock.recv(1024).startswith(b"+OK")
    tls = tls_client().wrap_socket(sock)
    tls.sendall(b"NOOP\r\n")  # not valid before login: the only answer we get
    answer = tls.recv(1024)
    assert answer.startswith(b"-ERR")
    tls.sendall(b"PASS x\r\n")  # USER was never accepted
    assert b"USER first" in tls.recv(1024)
    tls.close()


def test_bad_commands_end_the_session(stack: MailStack) -> None:
    sock = raw_session(stack.pop3)
    sock.sendall(b"FOO\r\nBAR\r\nBAZ\r\n")
    data = b""
    while chunk := sock.recv(1024):
        data += chunk
    assert data.count(b"-ERR") == 3
    assert b"closing" in data
    sock.close()


def test_temporary_auth_failure_is_sys_temp(stack: MailStack) -> None:
    assert stack.idsvc is not None
    stack.idsvc.stop()
    try:
        client = poplib.POP3("127.0.0.1", stack.pop3, timeout=30)
        client.stls(context=tls_client())
        client.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            client.pass_(PASSWORD)
        client.close()
    finally:
        stack.start_idsvc()


async def test_curl_pop3(stack: MailStack) -> None:
    seed(stack, BOB, CORPUS[:2])
    base = f"pop3://127.0.0.1:{stack.pop3}"
    args = ["curl", "-sS", "--ssl-reqd", "-k", "-u", f"{BOB}:{PASSWORD}"]
    code, out = await run([*args, base + "/"])
    assert code == 0, out
    assert out.split() == ["1", str(len(CORPUS[0])), "2", str(len(CORPUS[1]))]
    code, out = await run([*args, base + "/2"])
    assert code == 0, out
    assert out.encode().replace(b"\r\n", b"\n") == CORPUS[1].replace(b"\r\n", b"\n")
    code, out = await run(["curl", "-sS", "--ssl-reqd", "-k", "-u", f"{BOB}:wrong", base + "/"])
    assert code == 67, out


async def test_fetchmail_over_pop3_with_tls(stack: MailStack) -> None:
    seed(stack, BOB, CORPUS[:3])
    out_file = stack.workdir / "fetched.mbox"
    rc = stack.workdir / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 service {stack.pop3} protocol POP3 uidl\n"
        f"  user '{BOB}' password '{PASSWORD}' sslproto 'tls1.2+' no sslcertck\n"
        f'  mda "cat >> {out_file}"\n',
        encoding="utf-8",
    )
    rc.chmod(0o600)
    env = {"HOME": str(stack.workdir), "FETCHMAILHOME": str(stack.workdir)}
    code, out = await run(["env", *(f"{k}={v}" for k, v in env.items()), "fetchmail", "-f",
                           str(rc), "-v", "--nosyslog"])  # fmt: skip
    assert code == 0, out
    fetched = out_file.read_bytes()
    assert fetched.count(b"Subject: ") >= 3
    assert stack.messages(BOB) == []  # fetchmail deletes after download (no "keep")


def dovecot_pop3(maildir_copy: Path, port: int) -> DovecotServer:
    owner = pwd.getpwnam("nobody")
    blocks = f"""\
passdb {{
  driver = static
  args = password={DOVECOT_PASSWORD}
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={maildir_copy.parent}
}}
"""
    extra = f"""\
protocols = pop3
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""
    return DovecotServer(blocks, extra=extra)


def script(client: poplib.POP3, count: int) -> list[object]:
    out: list[object] = [client.stat(), client.list()[1], client.uidl()[1]]
    for n in range(1, count + 1):
        out.append(client.list(n))
        out.append(client.uidl(n))
        out.append(client.top(n, 0)[1])
        out.append(client.top(n, 2)[1])
        out.append(client.retr(n)[1])
    for bad in ("RETR 99", "TOP 1 x", "DELE 0"):
        try:
            client._shortcmd(bad)
            out.append("ok")
        except poplib.error_proto:
            out.append("-ERR")
    client.dele(1)
    out.append(client.stat())
    out.append(client.list()[1])
    client.rset()
    out.append(client.stat())
    return out


def test_differential_against_dovecot_pop3d(stack: MailStack) -> None:
    box = seed(stack, ALICE, CORPUS)
    ours = pop(stack)
    mine = script(ours, len(CORPUS))
    ours.quit()
    copy_root = Path(stack.workdir / "dc-home")
    shutil.copytree(box, copy_root / "Maildir")
    owner = pwd.getpwnam("nobody")
    chown_tree(copy_root, owner.pw_uid, owner.pw_gid)
    stack.workdir.chmod(0o711)  # the mail user traverses the test's temp dir
    port = free_port()
    with dovecot_pop3(copy_root / "Maildir", port) as server:
        deadline = time.monotonic() + 20
        while True:
            try:
                theirs = poplib.POP3("127.0.0.1", port, timeout=30)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(server.tail())
                time.sleep(0.1)
        theirs.user("alice")
        theirs.pass_(DOVECOT_PASSWORD)
        reference = script(theirs, len(CORPUS))
        theirs.quit()
    assert mine == reference


def test_pop3_reads_what_smtp_delivered(stack: MailStack) -> None:
    seed(stack, ALICE, [])
    body = b"From: s@remote.example\r\nSubject: via mx\r\n\r\nhello over pop3\r\n"
    with smtplib.SMTP("127.0.0.1", stack.mx, timeout=30) as client:
        client.sendmail("s@remote.example", [ALICE], body)
    pop3 = poplib.POP3_SSL("127.0.0.1", stack.pop3s, timeout=30, context=tls_client())
    pop3.user(ALICE)
    pop3.pass_(PASSWORD)
    assert pop3.stat()[0] == 1
    lines = pop3.retr(1)[1]
    assert b"hello over pop3" in lines
    assert any(line.startswith(b"Received: ") for line in lines)
    pop3.quit()


def test_tls_context_is_real(stack: MailStack) -> None:
    with socket.create_connection(("127.0.0.1", stack.pop3s), timeout=30) as sock:
        ctx = tls_client()
        with ctx.wrap_socket(sock) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.recv(1024).startswith(b"+OK")
    assert isinstance(ssl.OPENSSL_VERSION, str)
