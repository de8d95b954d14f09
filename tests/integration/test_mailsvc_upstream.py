"""Proxy mode of the POP3/IMAP listeners against a real upstream: Debian's Dovecot 2.3 with a
master-user passdb, in front of which ``mailsvc serve`` authenticates every login through a real
``idsvc serve`` and then splices the connection to Dovecot.

The users' passwords in Dovecot's own passdb are random and known to nobody: every successful
login here went through idsvc and the master credential. Wrong passwords are refused by mailsvc
without a byte reaching Dovecot (its log stays silent about the user); an unreachable upstream,
an upstream that refuses the master login and an upstream whose certificate does not match are
temporary failures; a message of several MB goes through byte for byte both ways; a client that
stops reading leaves mailsvc's memory flat."""

from __future__ import annotations

import base64
import imaplib
import os
import poplib
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailsvc.smtp.tls import ensure_self_signed
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.imapwire import RawImap
from tests.fixtures.mailstack import (
    ALICE,
    BOB,
    PASSWORD,
    REPO,
    MailStack,
    free_port,
    mail_stack,
)
from tests.integration.test_mailsvc_serve import mailsvc_check
from tests.integration.test_mailsvc_smtp import tls_client

MASTER, MASTER_PASSWORD = "proxy", "m4ster-" + secrets.token_hex(8)
UPSTREAM_NAME = "upstream.test"  # the CN/SAN of Dovecot's certificate


class Upstream:
    """Dovecot serving IMAP and POP3 (plaintext and STARTTLS) on a Maildir tree of its own."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ms-up-"))
        os.chmod(self.dir, 0o755)  # noqa: S103 - Dovecot's unprivileged processes read it
        owner = pwd.getpwnam("nobody")
        self.homes = self.dir / "homes"
        self.homes.mkdir()
        os.chown(self.homes, owner.pw_uid, owner.pw_gid)
        self.cert, self.key = ensure_self_signed(self.dir / "tls", UPSTREAM_NAME)
        os.chmod(self.dir / "tls", 0o755)  # noqa: S103
        self.masters = self.dir / "master-users"
        self.set_master_password(MASTER_PASSWORD)
        users = self.dir / "users"
        users.write_text("".join(f"{u}:{{PLAIN}}{secrets.token_hex(16)}\n" for u in (ALICE, BOB)))
        users.chmod(0o644)
        blocks = f"""\
auth_master_user_separator = *
passdb {{
  driver = passwd-file
  args = {self.masters}
  master = yes
  result_success = continue
}}
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={self.homes}/%d/%n
}}
"""
        self.imaps_port = free_port()
        extra = f"""\
ssl = yes
ssl_cert = <{self.cert}
ssl_key = <{self.key}
login_trusted_networks = 127.0.0.1/32
service imap-login {{
  inet_listener imaps {{
    port = {self.imaps_port}
  }}
}}
"""
        self.server = DovecotServer(blocks, extra=extra, mail=True)

    def set_master_password(self, password: str) -> None:
        self.masters.write_text(f"{MASTER}:{{PLAIN}}{password}\n")
        self.masters.chmod(0o644)

    def log(self) -> str:
        return self.server.log.read_text(errors="replace") if self.server.log.exists() else ""

    def maildir(self, user: str) -> Path:
        local, _, domain = user.partition("@")
        return self.homes / domain / local / "Maildir"

    def __enter__(self) -> Upstream:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)
        shutil.rmtree(self.dir, ignore_errors=True)


def password_file(directory: Path, text: str) -> Path:
    path = directory / f"master-{secrets.token_hex(4)}.pass"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def upstream_table(port: int, secret: Path, **extra: Any) -> dict[str, Any]:
    return {"address": f"127.0.0.1:{port}", "master_user": MASTER,
            "master_password_file": str(secret), **{"tls": "none", **extra}}  # fmt: skip


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as running:
        yield running


@pytest.fixture(scope="module")
def stack(upstream: Upstream) -> Iterator[MailStack]:
    """imap/pop3: plain TCP upstream, ``user*master`` logins, the client's address forwarded;
    imaps: implicit TLS upstream, pop3s: STLS upstream, both verified against Dovecot's
    certificate by name, SASL PLAIN with authzid = user."""
    secret = password_file(upstream.dir, MASTER_PASSWORD)
    verified = {"tls_ca_file": str(upstream.cert), "tls_server_name": UPSTREAM_NAME,
                "login": "sasl_plain"}  # fmt: skip
    server = upstream.server
    with mail_stack(
        **{
            "imap.upstream": upstream_table(server.imap_port, secret, forward_client_ip=True),
            "imaps.upstream": upstream_table(
                upstream.imaps_port, secret, tls="implicit", **verified
            ),
            "pop3.upstream": upstream_table(server.pop3_port, secret, forward_client_ip=True),
            "pop3s.upstream": upstream_table(server.pop3_port, secret, tls="starttls", **verified),
        }
    ) as running:
        yield running


def imap_login(stack: MailStack, user: str = ALICE, *, implicit: bool = False) -> imaplib.IMAP4:
    if implicit:
        client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
            "127.0.0.1", stack.imaps, ssl_context=tls_client(), timeout=60
        )
    else:
        client = imaplib.IMAP4("127.0.0.1", stack.imap, timeout=60)
        client.starttls(ssl_context=tls_client())
    client.login(user, PASSWORD)
    return client


def pop_login(stack: MailStack, user: str = ALICE, *, implicit: bool = False) -> poplib.POP3:
    if implicit:
        client: poplib.POP3 = poplib.POP3_SSL("127.0.0.1", stack.pop3s, context=tls_client(),
                                              timeout=60)  # fmt: skip
    else:
        client = poplib.POP3("127.0.0.1", stack.pop3, timeout=60)
        client.stls(context=tls_client())
    client.user(user)
    client.pass_(PASSWORD)
    return client


def message(subject: str, body: bytes = b"hello\r\n") -> bytes:
    head = (f"From: sender@example.org\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{secrets.token_hex(8)}@example.org>\r\n\r\n")  # fmt: skip
    return head.encode() + body


def empty_inbox(client: imaplib.IMAP4) -> None:
    _, data = client.select("INBOX")
    if data != [b"0"]:
        client.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
        client.expunge()


# --- IMAP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls-plain-upstream", "imaps-tls"])
def test_imap_select_fetch_store_expunge(stack: MailStack, upstream: Upstream,
                                         implicit: bool) -> None:  # fmt: skip
    client = imap_login(stack, implicit=implicit)
    try:
        empty_inbox(client)
        for n in range(3):
            typ, _ = client.append("INBOX", "", imaplib.Time2Internaldate(time.time()),
                                   message(f"note {n}"))  # fmt: skip
            assert typ == "OK"
        typ, data = client.select("INBOX")
        assert (typ, data) == ("OK", [b"3"])
        typ, fetched = client.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        assert b"Subject: note 1" in fetched[0][1]
        assert client.store("2", "+FLAGS", "(\\Flagged \\Deleted)")[0] == "OK"
        typ, expunged = client.expunge()
        assert (typ, expunged) == ("OK", [b"2"])
        typ, data = client.search(None, "ALL")
        assert (typ, data) == ("OK", [b"1 2"])
    finally:
        client.logout()
    # the messages live in Dovecot's store, written by Dovecot
    files = [p for sub in ("cur", "new") for p in (upstream.maildir(ALICE) / sub).iterdir()]
    subjects = sorted(line.rstrip(b"\r") for f in files for line in f.read_bytes().split(b"\n")
                      if line.startswith(b"Subject: "))  # fmt: skip
    assert subjects == [b"Subject: note 0", b"Subject: note 2"]


def test_login_ok_carries_the_upstream_capabilities(stack: MailStack) -> None:
    raw = RawImap(stack.imaps, tls=tls_client())
    try:
        ours = raw.greeting
        _, tagged = raw.command(f'LOGIN "{ALICE}" "{PASSWORD}"')
        assert tagged.startswith(b"OK [CAPABILITY IMAP4rev1 "), tagged
        caps = tagged.split(b"[CAPABILITY ", 1)[1].split(b"]", 1)[0].split()
        # Dovecot's post-login list (mailsvc offers neither of these), not our pre-login one
        assert b"SORT" in caps, tagged
        assert b"THREAD=REFERENCES" in caps, tagged
        assert b"LOGINDISABLED" not in caps
        assert b"STARTTLS" not in caps
        assert tagged != ours
        untagged, tagged = raw.command("NAMESPACE")  # answered by Dovecot
        assert tagged.startswith(b"OK")
        assert untagged[0].startswith(b"* NAMESPACE")
        _, tagged = raw.command("LOGOUT")
        assert tagged.startswith(b"OK")
    finally:
        raw.close()


def test_pipelined_commands_after_login_reach_the_upstream(stack: MailStack) -> None:
    raw = RawImap(stack.imaps, tls=tls_client())
    lines: list[bytes] = []
    try:
        raw.send(f'a LOGIN "{ALICE}" "{PASSWORD}"\r\nb SELECT INBOX\r\nc LOGOUT\r\n'.encode())
        while not lines or not lines[-1].startswith(b"c "):
            lines.append(raw.line())
    finally:
        raw.close()
    text = b"".join(lines)
    assert b"a OK [CAPABILITY" in text, text
    assert b"b OK [READ-WRITE]" in text, text
    assert lines[-1].startswith(b"c OK"), text


def test_sasl_logins_through_the_proxy(stack: MailStack) -> None:
    """AUTHENTICATE PLAIN (imaplib: no initial response, a continuation) and POP3 AUTH PLAIN
    with an initial response, both answered by mailsvc and then by Dovecot."""
    plain = f"\0{ALICE}\0{PASSWORD}".encode()
    client = imaplib.IMAP4_SSL("127.0.0.1", stack.imaps, ssl_context=tls_client(), timeout=60)
    try:
        typ, data = client.authenticate("PLAIN", lambda _: plain)
        assert typ == "OK"
        assert data[0].startswith(b"[CAPABILITY IMAP4rev1 "), data  # the upstream's list
        assert b" SORT " in data[0], data
        assert client.select("INBOX")[0] == "OK"
    finally:
        client.logout()
    pop = poplib.POP3_SSL("127.0.0.1", stack.pop3s, context=tls_client(), timeout=60)
    try:
        answer = pop._shortcmd("AUTH PLAIN " + base64.b64encode(plain).decode())
        assert answer.startswith(b"+OK"), answer
        assert pop.stat()[0] >= 0
    finally:
        pop.quit()


def test_wrong_password_never_reaches_the_upstream(stack: MailStack, upstream: Upstream) -> None:
    client = imaplib.IMAP4("127.0.0.1", stack.imap, timeout=60)
    client.starttls(ssl_context=tls_client())
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(BOB, "wrong-" + PASSWORD)
    client.shutdown()
    pop = poplib.POP3("127.0.0.1", stack.pop3, timeout=60)
    pop.stls(context=tls_client())
    pop.user(BOB)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop.pass_("wrong-" + PASSWORD)
    pop.close()
    time.sleep(0.5)
    assert BOB not in upstream.log()  # Dovecot never heard of bob
    client = imap_login(stack, BOB)  # … until bob gets it right (the control)
    client.logout()
    deadline = time.monotonic() + 10
    while f"Login: user=<{BOB}>" not in upstream.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"Login: user=<{BOB}>" in upstream.log()


def test_large_message_byte_exact_both_ways(stack: MailStack) -> None:
    rng = secrets.token_bytes(6 * 1024 * 1024)
    body = b"".join(rng[i : i + 57].hex().encode() + b"\r\n" for i in range(0, len(rng), 57))
    raw = message("large", body)
    assert len(raw) > 12_000_000
    client = imap_login(stack, implicit=True)
    try:
        empty_inbox(client)
        typ, _ = client.append("INBOX", "", imaplib.Time2Internaldate(time.time()), raw)
        assert typ == "OK"
        client.select("INBOX")
        typ, fetched = client.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK"
        assert isinstance(fetched[0], tuple)
        assert fetched[0][1] == raw
    finally:
        client.logout()
    pop = pop_login(stack, implicit=True)
    try:
        _, lines, _ = pop.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == raw
    finally:
        pop.quit()


# --- POP3 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("implicit", [False, True], ids=["stls-plain-upstream", "pop3s-tls"])
def test_pop3_retr_and_dele(stack: MailStack, upstream: Upstream, implicit: bool) -> None:
    client = imap_login(stack)
    try:
        empty_inbox(client)
        for n in range(2):
            client.append("INBOX", "", imaplib.Time2Internaldate(time.time()), message(f"pop {n}"))
    finally:
        client.logout()
    pop = pop_login(stack, implicit=implicit)
    try:
        count, _ = pop.stat()
        assert count == 2
        _, lines, _ = pop.retr(1)
        assert b"Subject: pop 0" in lines
        assert pop.dele(1).startswith(b"+OK")
        assert pop.capa()  # answered by Dovecot
    finally:
        pop.quit()
    pop = pop_login(stack, implicit=implicit)
    try:
        assert pop.stat()[0] == 1
        _, lines, _ = pop.retr(1)
        assert b"Subject: pop 1" in lines
    finally:
        pop.quit()


class Imap4From2(imaplib.IMAP4):
    """imaplib connecting from 127.0.0.2 (Linux routes all of 127/8 to lo)."""

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=("127.0.0.2", 0))  # fmt: skip


class Pop3From2(poplib.POP3):
    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=("127.0.0.2", 0))  # fmt: skip


def test_client_address_forwarded_to_a_trusting_upstream(
    stack: MailStack, upstream: Upstream
) -> None:
    """Dovecot (``login_trusted_networks`` = us) logs the client's address, not ours: IMAP ID
    ``x-originating-ip``, POP3 XCLIENT."""
    client = Imap4From2("127.0.0.1", stack.imap, timeout=60)
    client.starttls(ssl_context=tls_client())
    client.login(ALICE, PASSWORD)
    client.logout()
    pop = Pop3From2("127.0.0.1", stack.pop3, timeout=60)
    pop.stls(context=tls_client())
    pop.user(ALICE)
    pop.pass_(PASSWORD)
    pop.quit()
    deadline = time.monotonic() + 10
    pattern = re.compile(
        r"(imap|pop3)-login: (?:Info: )?Login: user=<alice@example\.org>.*rip=127\.0\.0\.2"
    )
    while time.monotonic() < deadline:
        if {m.group(1) for m in pattern.finditer(upstream.log())} == {"imap", "pop3"}:
            return
        time.sleep(0.1)
    pytest.fail(upstream.log()[-3000:])


# --- memory under a client that stops reading ---------------------------------------------


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", text)
    assert found is not None
    return int(found.group(1))


def test_client_that_stops_reading_keeps_memory_bounded(stack: MailStack) -> None:
    body = (b"x" * 998 + b"\r\n") * 30_000  # 30 MB
    raw = message("huge", body)
    client = imap_login(stack, implicit=True)
    try:
        empty_inbox(client)
        assert client.append("INBOX", "", imaplib.Time2Internaldate(time.time()), raw)[0] == "OK"
    finally:
        client.logout()
    assert stack.mailsvc is not None
    pid = stack.mailsvc.proc.pid
    before = rss_kib(pid)
    sock = socket.create_connection(("127.0.0.1", stack.imaps), timeout=60)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    tls = tls_client().wrap_socket(sock)
    try:
        stream = tls.makefile("rb")
        assert stream.readline().startswith(b"* OK")
        tls.sendall(f'a LOGIN "{ALICE}" "{PASSWORD}"\r\nb SELECT INBOX\r\n'.encode())
        tls.sendall(b"c FETCH 1 (BODY.PEEK[])\r\n")
        while not stream.readline().startswith(b"b OK"):
            pass
        time.sleep(4)  # the client reads nothing while Dovecot sends 30 MB
        stalled = rss_kib(pid)
        assert stalled - before < 8 * 1024, (before, stalled)
        received = 0  # now read it all: nothing was lost
        while True:
            line = stream.readline()
            found = re.search(rb"\{(\d+)\}\r\n$", line)
            if found:
                data = stream.read(int(found.group(1)))
                received = len(data)
                assert data == raw
                continue
            if line.startswith(b"c OK") or not line:
                break
        assert received == len(raw)
    finally:
        tls.close()


# --- temporary failures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def faulty(upstream: Upstream) -> Iterator[MailStack]:
    """imap/pop3: an upstream port nobody listens on; imaps: a wrong master password; pop3s:
    STARTTLS to a certificate issued for another name."""
    dead = free_port()
    wrong = password_file(upstream.dir, "not-the-" + MASTER_PASSWORD)
    right = password_file(upstream.dir, MASTER_PASSWORD)
    mismatch = {"tls": "starttls", "tls_ca_file": str(upstream.cert),
                "tls_server_name": "other.test"}  # fmt: skip
    with mail_stack(
        **{
            "imap.upstream": upstream_table(dead, right, timeout=5),
            "pop3.upstream": upstream_table(dead, right, timeout=5),
            "imaps.upstream": upstream_table(upstream.server.imap_port, wrong),
            "pop3s.upstream": upstream_table(upstream.server.pop3_port, right, **mismatch),
        }
    ) as running:
        yield running


def test_unreachable_upstream_is_a_temporary_failure(faulty: MailStack) -> None:
    client = imaplib.IMAP4("127.0.0.1", faulty.imap, timeout=60)
    client.starttls(ssl_context=tls_client())
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        client.login(ALICE, PASSWORD)
    client.shutdown()
    pop = poplib.POP3("127.0.0.1", faulty.pop3, timeout=60)
    pop.stls(context=tls_client())
    pop.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
        pop.pass_(PASSWORD)
    pop.close()
    assert faulty.mailsvc is not None
    faulty.mailsvc.wait_for(r"pop3 proxy: alice@example\.org from 127\.0\.0\.1: upstream "
                            r"127\.0\.0\.1:\d+: .*(?i:refused|connect)", timeout=5)  # fmt: skip


def test_refused_master_login_is_a_temporary_failure(faulty: MailStack) -> None:
    client = imaplib.IMAP4_SSL("127.0.0.1", faulty.imaps, ssl_context=tls_client(), timeout=60)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        client.login(ALICE, PASSWORD)
    client.shutdown()
    assert faulty.mailsvc is not None
    line = faulty.mailsvc.wait_for(r"imap proxy: alice@example\.org .* master login for "
                                   r"alice@example\.org refused", timeout=5)  # fmt: skip
    assert MASTER_PASSWORD not in faulty.mailsvc.log
    assert "not-the-" not in line


def test_certificate_name_mismatch_is_a_temporary_failure(faulty: MailStack) -> None:
    pop = poplib.POP3_SSL("127.0.0.1", faulty.pop3s, context=tls_client(), timeout=60)
    pop.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
        pop.pass_(PASSWORD)
    pop.close()
    assert faulty.mailsvc is not None
    faulty.mailsvc.wait_for(r"pop3 proxy: alice@example\.org .*(CERTIFICATE_VERIFY_FAILED|"
                            r"certificate verify failed|match)", timeout=5)  # fmt: skip


# --- configuration ------------------------------------------------------------------------


def test_master_password_file_must_be_private(tmp_path: Path) -> None:
    secret = password_file(tmp_path, MASTER_PASSWORD)
    table = upstream_table(free_port(), secret)
    text = "[imap.upstream]\n" + "".join(
        f'{k} = "{v}"\n' if isinstance(v, str) else f"{k} = {str(v).lower()}\n"
        for k, v in table.items()
    )
    ok = mailsvc_check(tmp_path, text)
    assert ok.returncode == 0, ok.stderr
    secret.chmod(0o644)
    refused = mailsvc_check(tmp_path, text)
    assert refused.returncode == 2
    assert "must be 0600 or stricter" in refused.stderr
    assert MASTER_PASSWORD not in refused.stderr
    config = tmp_path / "serve.toml"
    config.write_text(
        text + f'[store]\nroot = "{tmp_path}"\n[tls]\nself_signed_dir = "{tmp_path / "tls"}"\n'
        + "".join(f"[{n}]\nlisten = \"127.0.0.1:0\"\n" for n in
                  ("mx", "submission", "submissions", "pop3", "pop3s", "imaps")),
        encoding="utf-8",
    )  # fmt: skip
    served = subprocess.run(
        [sys.executable, "-m", "mailsvc", "--config", str(config), "serve"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert served.returncode == 2, served.stderr
    assert "must be 0600 or stricter" in served.stderr
