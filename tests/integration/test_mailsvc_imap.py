"""mailsvc's IMAP front end against real processes (idsvc serve, mailsvc serve) and real
clients: imaplib, curl imap://, fetchmail over IMAP with TLS, mbsync both ways, IDLE woken by
mail sent through mailsvc's own SMTP front end, untagged updates between sessions; limits
(pre-auth line, literal and bad-command budgets), NO [UNAVAILABLE] while idsvc is down; and
each pymap 0.36.7 defect named in the issue as a test."""

from __future__ import annotations

import base64
import imaplib
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailsvc.maildir import MaildirStore
from tests.fixtures.imapwire import RawImap
from tests.fixtures.mailcorpus import CORPUS
from tests.fixtures.mailstack import ALICE, BOB, PASSWORD, MailStack, mail_stack, run
from tests.integration.test_mailsvc_pop3 import seed
from tests.integration.test_mailsvc_smtp import tls_client


@pytest.fixture(scope="module")
def stack() -> Iterator[MailStack]:
    with mail_stack() as running:
        yield running


def imap(stack: MailStack, user: str = ALICE) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", stack.imap, timeout=30)
    client.starttls(ssl_context=tls_client())
    client.login(user, PASSWORD)
    return client


def raw(stack: MailStack, *, login: bool = True) -> RawImap:
    client = RawImap(stack.imaps, tls=tls_client())
    if login:
        _, answer = client.command(f'LOGIN "{ALICE}" "{PASSWORD}"')
        assert answer.startswith(b"OK"), answer
    return client


def test_read_flag_move_delete_with_imaplib(stack: MailStack) -> None:
    seed(stack, ALICE, CORPUS[:3])
    client = imap(stack)
    typ, folders = client.list('""', "*")
    assert typ == "OK"
    listed = b"\n".join(f for f in folders if isinstance(f, bytes))
    for name in ("Sent", "Trash", "Drafts", "Junk"):
        assert f'(\\HasNoChildren \\{name}) "." {name}'.encode() in listed
    assert client.select("INBOX") == ("OK", [b"3"])
    typ, data = client.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE)")
    assert [int(re.search(rb"RFC822.SIZE (\d+)", d).group(1)) for d in data] == \
        [len(m) for m in CORPUS[:3]]  # type: ignore[union-attr]  # fmt: skip
    typ, data = client.fetch("1", "(BODY[])")
    assert data[0][1] == CORPUS[0]  # type: ignore[index]
    typ, data = client.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0]  # type: ignore[operator]
    assert client.store("2", "+FLAGS", "(\\Flagged $Important)")[0] == "OK"
    typ, data = client.uid("MOVE", "2", "Trash")
    assert typ == "OK"
    typ, data = client.append("Sent", "(\\Seen)", None, CORPUS[1])
    assert typ == "OK"
    assert re.search(rb"\[APPENDUID \d+ 1\]", data[0])  # type: ignore[arg-type]
    assert client.store("1", "+FLAGS", "\\Deleted")[0] == "OK"
    typ, data = client.expunge()
    assert data[-1] == b"1"  # imaplib also returns the EXPUNGE that MOVE answered earlier
    typ, data = client.status("Trash", "(MESSAGES UNSEEN)")
    assert data == [b"Trash (MESSAGES 1 UNSEEN 1)"]
    client.select("Trash")
    typ, data = client.fetch("1", "(FLAGS)")
    assert b"\\Flagged" in data[0]
    assert b"$Important" in data[0]
    typ, data = client.getquotaroot("INBOX")
    assert data[1]
    assert b"STORAGE" in data[1][0]
    client.logout()
    assert len(stack.messages(ALICE)) == 1


def test_authenticate_plain_with_and_without_initial_response_and_login(stack: MailStack) -> None:
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    client = raw(stack, login=False)
    assert client.command(f"AUTHENTICATE PLAIN {token}")[1].startswith(b"OK")
    client.close()
    client = raw(stack, login=False)
    client.send(b"a AUTHENTICATE PLAIN\r\n")
    assert client.line() == b"+ \r\n"
    client.send(token.encode() + b"\r\n")
    assert client.line().startswith(b"a OK")
    client.close()
    client = raw(stack, login=False)
    client.send(b"b AUTHENTICATE LOGIN\r\n")
    assert client.line().startswith(b"+ ")
    client.send(base64.b64encode(ALICE.encode()) + b"\r\n")
    assert client.line().startswith(b"+ ")
    client.send(base64.b64encode(PASSWORD.encode()) + b"\r\n")
    assert client.line().startswith(b"b OK")
    client.close()
    client = raw(stack, login=False)
    client.send(b"c AUTHENTICATE PLAIN\r\n")
    client.line()
    client.send(b"*\r\n")
    assert client.line().startswith(b"c BAD")
    assert client.command(f'LOGIN "{ALICE}" "wrong"')[1].startswith(b"NO [AUTHENTICATIONFAILED]")
    client.close()


def test_no_cleartext_login_before_starttls(stack: MailStack) -> None:
    client = RawImap(stack.imap)
    assert b"LOGINDISABLED" in client.greeting
    assert b"STARTTLS" in client.greeting
    assert client.command(f'LOGIN "{ALICE}" "{PASSWORD}"')[1].startswith(b"NO [PRIVACYREQUIRED]")
    client.close()


def test_pymap_defect_1_starttls_discards_pipelined_plaintext(stack: MailStack) -> None:
    sock = socket.create_connection(("127.0.0.1", stack.imap), timeout=30)
    sock.recv(4096)
    sock.sendall(b"a STARTTLS\r\nb NOOP\r\n")
    assert sock.recv(4096).startswith(b"a OK")
    tls = tls_client().wrap_socket(sock)
    tls.sendall(b"c NOOP\r\n")
    answer = tls.recv(4096)
    assert answer.startswith(b"c OK"), answer
    assert b"b OK" not in answer
    tls.close()


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+)", status)
    assert found is not None
    return int(found.group(1))


def test_pymap_defect_2_preauth_literals_are_bounded(stack: MailStack) -> None:
    assert stack.mailsvc is not None
    pid = stack.mailsvc.proc.pid
    before = _rss_kb(pid)
    sock = socket.create_connection(("127.0.0.1", stack.imap), timeout=30)
    sock.recv(4096)
    sock.sendall(b"a LOGIN {300000000+}\r\n")
    answer = sock.recv(4096)
    assert answer.startswith(b"* BYE"), answer
    refused = False
    try:  # the server closed: the 300 MB are never read
        for _ in range(200):
            sock.sendall(b"x" * 65536)
            time.sleep(0.001)
    except (BrokenPipeError, ConnectionResetError):
        refused = True
    sock.close()
    assert refused
    assert _rss_kb(pid) - before < 20_000
    client = RawImap(stack.imap)  # a synchronising one is refused without "+ "
    client.send(b"b LOGIN {100000}\r\n")
    assert client.line().startswith(b"b BAD [TOOBIG]")
    client.close()


def test_pymap_defect_3_bytes_are_served_as_stored(stack: MailStack) -> None:
    seed(stack, ALICE, [])
    long_subject = b"Subject: " + b"word " * 60 + b"end"
    message = (b"From: a@example.org\n" + long_subject + b"\nX-Empty:\n\n"
               b"bare LF body\nsecond line\r\nmixed\n")  # fmt: skip
    appender = raw(stack)  # imaplib's append() would turn every LF into CRLF
    answer = appender.command(b"APPEND INBOX {%d+}\r\n" % len(message) + message)[1]
    assert answer.startswith(b"OK [APPENDUID"), answer
    appender.close()
    client = imap(stack)
    client.select("INBOX")
    _typ, data = client.fetch("1", "(RFC822.SIZE BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (Subject)])")
    assert data[0][1] == message  # type: ignore[index]
    assert f"RFC822.SIZE {len(message)}".encode() in data[0][0]  # type: ignore[index,operator]
    assert data[1][1] == long_subject + b"\n\r\n"  # type: ignore[index]
    client.logout()
    (stored,) = [p.read_bytes() for p in stack.messages(ALICE)]
    assert stored == message


def test_pymap_defect_4_bodystructure_sizes_and_disposition(stack: MailStack) -> None:
    seed(stack, ALICE, [CORPUS[2]])
    client = imap(stack)
    client.select("INBOX")
    _typ, data = client.fetch("1", "(BODYSTRUCTURE)")
    text = data[0]
    assert b'"base64" 118 NIL ("attachment" ("filename" "report.pdf"))' in text  # type: ignore[operator]
    client.logout()


def test_pymap_defect_5_tmpdir_on_another_filesystem() -> None:
    tmp = Path("/dev/shm") / f"mailsvc-tmp-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        with mail_stack(mailsvc_env={"TMPDIR": str(tmp)}) as stack:
            seed(stack, ALICE, CORPUS[:2])
            client = imap(stack)
            assert client.select("INBOX")[0] == "OK"
            assert client.store("1", "+FLAGS", "($Keyword \\Seen)")[0] == "OK"
            assert client.append("INBOX", None, None, CORPUS[3])[0] == "OK"
            assert client.create("New.Sub")[0] == "OK"
            assert client.copy("1:*", "New.Sub")[0] == "OK"
            client.logout()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _noop_seconds(stack: MailStack, count: int) -> float:
    client = raw(stack)
    client.command("SELECT INBOX")
    started = time.perf_counter()
    for _ in range(count):
        assert client.command("NOOP")[1].startswith(b"OK")
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def test_pymap_defect_6_commands_do_not_cost_o_mailbox(stack: MailStack) -> None:
    seed(stack, ALICE, [CORPUS[0]] * 10)
    small = min(_noop_seconds(stack, 100) for _ in range(2))
    box = stack.maildir(ALICE)
    store = MaildirStore(stack.vmail, hostname="bulk", fsync=False)
    maildir = store.mailbox(str(box.relative_to(stack.vmail)))
    for _ in range(5000):
        maildir.deliver([CORPUS[0]])
    _noop_seconds(stack, 1)  # assigns the 5000 UIDs once
    time.sleep(2.1)  # directory mtimes are trusted once they are older than the last scan
    _noop_seconds(stack, 1)
    big = min(_noop_seconds(stack, 100) for _ in range(2))
    assert big < small * 3 + 0.05, (small, big)


def test_bad_commands_and_long_lines_before_login(stack: MailStack) -> None:
    client = RawImap(stack.imap)
    for tag in (b"a", b"b"):
        client.send(tag + b" FROB\r\n")
        assert client.line().startswith(tag + b" BAD")
    client.send(b"c FROB\r\n")
    assert client.line().startswith(b"c BAD")
    assert client.line().startswith(b"* BYE")
    client.close()
    client = RawImap(stack.imap)
    client.send(b"a NOOP " + b"x" * 9000 + b"\r\n")
    assert client.line().startswith(b"* BYE")
    client.close()


def test_temporary_auth_failure_is_unavailable(stack: MailStack) -> None:
    assert stack.idsvc is not None
    stack.idsvc.stop()
    try:
        client = raw(stack, login=False)
        answer = client.command(f'LOGIN "{ALICE}" "{PASSWORD}"')[1]
        assert answer.startswith(b"NO [UNAVAILABLE]"), answer
        client.close()
    finally:
        stack.start_idsvc()


def test_other_sessions_see_flags_expunges_and_new_mail(stack: MailStack) -> None:
    seed(stack, ALICE, CORPUS[:2])
    one, two = raw(stack), raw(stack)
    one.command("SELECT INBOX")
    two.command("SELECT INBOX")
    one.command("STORE 1 +FLAGS.SILENT (\\Flagged \\Deleted)")
    untagged, _ = two.command("NOOP")
    assert any(b"* 1 FETCH (FLAGS (\\Flagged \\Deleted" in ln for ln in untagged), untagged
    one.command("EXPUNGE")
    one.command(f"APPEND INBOX {{{len(CORPUS[4])}+}}\r\n".encode() + CORPUS[4])
    untagged, _ = two.command("FETCH 1 (UID)")  # no EXPUNGE while FETCH answers
    assert not any(b"EXPUNGE" in ln for ln in untagged)
    assert b"* 3 EXISTS\r\n" in untagged  # new mail may be announced at any time
    untagged, _ = two.command("NOOP")
    assert b"* 1 EXPUNGE\r\n" in untagged
    one.close()
    two.close()


def test_idle_sees_mail_delivered_through_smtp(stack: MailStack) -> None:
    seed(stack, ALICE, [])
    client = raw(stack)
    client.command("SELECT INBOX")
    client.send(b"i IDLE\r\n")
    assert client.line().startswith(b"+ ")
    with smtplib.SMTP("127.0.0.1", stack.mx, timeout=30) as smtp:
        smtp.sendmail("s@remote.example", [ALICE], b"Subject: idle\r\n\r\nwake up\r\n")
    started = time.monotonic()
    assert client.line() == b"* 1 EXISTS\r\n"
    assert time.monotonic() - started < 1.5  # woken by the delivery, not by the 2 s poll
    assert client.line() == b"* 1 RECENT\r\n"
    client.send(b"DONE\r\n")
    assert client.line().startswith(b"i OK")
    client.close()


async def test_curl_imap(stack: MailStack) -> None:
    seed(stack, BOB, CORPUS[:2])
    base = f"imap://127.0.0.1:{stack.imap}"
    args = ["curl", "-sS", "--ssl-reqd", "-k", "-u", f"{BOB}:{PASSWORD}"]
    code, out = await run([*args, base + "/"])
    assert code == 0, out
    assert '"." INBOX' in out
    assert "\\Sent" in out
    code, out = await run([*args, base + "/INBOX;UID=2"])
    assert code == 0, out
    assert out.encode().replace(b"\r\n", b"\n") == CORPUS[1].replace(b"\r\n", b"\n")
    code, out = await run([*args, "-X", "STATUS INBOX (MESSAGES UIDNEXT)", base + "/"])
    assert code == 0, out
    assert "MESSAGES 2 UIDNEXT 3" in out
    code, out = await run(["curl", "-sS", "--ssl-reqd", "-k", "-u", f"{BOB}:wrong", base + "/"])
    assert code == 67, out


async def test_fetchmail_over_imap_with_tls(stack: MailStack) -> None:
    seed(stack, BOB, CORPUS[:3])
    out_file = stack.workdir / "fetched-imap.mbox"
    rc = stack.workdir / "fetchmailrc-imap"
    rc.write_text(
        f"poll 127.0.0.1 service {stack.imaps} protocol IMAP\n"
        f"  user '{BOB}' password '{PASSWORD}' ssl sslproto 'tls1.2+' no sslcertck keep\n"
        f'  mda "cat >> {out_file}"\n',
        encoding="utf-8",
    )
    rc.chmod(0o600)
    env = [f"HOME={stack.workdir}", f"FETCHMAILHOME={stack.workdir}"]
    code, out = await run(["env", *env, "fetchmail", "-f", str(rc), "-v", "--nosyslog"])
    assert code == 0, out
    assert out_file.read_bytes().count(b"Subject: ") >= 3
    client = imap(stack, BOB)
    client.select("INBOX")
    _typ, data = client.search(None, "SEEN")
    assert data == [b"1 2 3"]  # kept on the server, marked read
    client.logout()


async def test_mbsync_both_ways(stack: MailStack) -> None:
    seed(stack, BOB, CORPUS[:3])
    local = stack.workdir / "mbsync-local"
    local.mkdir()
    rc = stack.workdir / "mbsyncrc"
    rc.write_text(
        f"""IMAPAccount remote
Tunnel "openssl s_client -quiet -verify_quiet -connect 127.0.0.1:{stack.imaps}"
User {BOB}
Pass {PASSWORD}

IMAPStore remote-store
Account remote

MaildirStore local-store
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote-store:
Near :local-store:
Patterns INBOX Sent
Create Both
Sync All
SyncState *
""",
        encoding="utf-8",
    )
    # TLS by openssl s_client (the development certificate names mx.example.org, not the
    # loopback address mbsync would check it against)
    code, out = await run(["mbsync", "-c", str(rc), "-a"])
    assert code == 0, out
    pulled = [*(local / "INBOX" / "cur").iterdir(), *(local / "INBOX" / "new").iterdir()]
    assert len(pulled) == 3
    sent = local / "Sent"
    (sent / "cur").mkdir(parents=True, exist_ok=True)
    (sent / "new").mkdir(exist_ok=True)
    (sent / "tmp").mkdir(exist_ok=True)
    (sent / "new" / "1700000000.local1.host").write_bytes(CORPUS[5])
    code, out = await run(["mbsync", "-c", str(rc), "-a"])
    assert code == 0, out
    client = imap(stack, BOB)
    client.select("Sent")
    _typ, data = client.fetch("1:*", "(BODY.PEEK[])")
    bodies = [d[1] for d in data if isinstance(d, tuple)]
    # mbsync adds its X-TUID tracking header to what it uploads; the rest arrives unchanged
    assert [re.sub(rb"X-TUID: \S+\r\n", b"", b) for b in bodies] == [CORPUS[5]]
    client.logout()


def test_sessions_per_user_and_ip_are_limited(stack: MailStack) -> None:
    clients = [raw(stack) for _ in range(10)]  # the default max_user_ip_connections
    extra = raw(stack, login=False)
    answer = extra.command(f'LOGIN "{ALICE}" "{PASSWORD}"')[1]
    assert answer.startswith(b"NO [UNAVAILABLE] Maximum number of connections"), answer
    clients.pop().close()
    time.sleep(0.3)
    assert extra.command(f'LOGIN "{ALICE}" "{PASSWORD}"')[1].startswith(b"OK")
    for client in [*clients, extra]:
        client.close()


def test_tls_versions(stack: MailStack) -> None:
    sock = socket.create_connection(("127.0.0.1", stack.imaps), timeout=30)
    with tls_client().wrap_socket(sock) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert tls.recv(4096).startswith(b"* OK [CAPABILITY")
    assert ssl.HAS_TLSv1_3 or ssl.HAS_TLSv1_2


def test_neomutt_reads_and_moves_a_message(stack: MailStack) -> None:
    """neomutt driven headless in tmux: the index, the pager, save to Trash, sync."""
    seed(stack, BOB, CORPUS[:3])
    home = stack.workdir / f"mutt-{time.monotonic_ns()}"
    home.mkdir()
    rc = home / ".neomuttrc"
    rc.write_text(
        f"""set folder = "imaps://{BOB}@127.0.0.1:{stack.imaps}/"
set imap_pass = "{PASSWORD}"
set spoolfile = "+INBOX"
set ssl_verify_host = no
set certificate_file = "{home}/certs"
set header_cache = ""
set message_cachedir = ""
set confirmappend = no
set delete = yes
set move = no
set timeout = 1
""",
        encoding="utf-8",
    )
    session = f"mutt{time.monotonic_ns()}"
    env = {"HOME": str(home), "TERM": "xterm", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40",
                    "neomutt", "-F", str(rc)], env=env, check=True, timeout=30)  # fmt: skip

    def keys(*sequence: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", session, *sequence], check=True, timeout=30)

    def wait_for(text: str) -> str:
        deadline = time.monotonic() + 30
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True, timeout=30).stdout  # fmt: skip
            if "(r)eject" in screen:
                keys("o")  # the development certificate: accept once
            elif text in screen:
                return screen
            else:
                keys("C-l")  # redraw (tmux sees the first screen late)
            time.sleep(0.3)
        pytest.fail(f"neomutt never showed {text!r}:\n{screen}")

    try:
        index = wait_for("plain hello")
        assert "Grüße aus Berlin" in index  # the encoded subject, decoded by neomutt
        keys("Enter")
        wait_for("this line starts with a dot")  # the pager shows the body
        keys("q")
        wait_for("plain hello")
        keys("s")
        wait_for("Save to mailbox")
        keys("C-u", "=Trash", "Enter")
        time.sleep(1)
        keys("$")
        time.sleep(1)
        keys("q")
        time.sleep(1)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, timeout=30)
    client = imap(stack, BOB)
    assert client.select("Trash") == ("OK", [b"1"])
    fetched = client.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])")[1][0]
    assert isinstance(fetched, tuple)
    assert b"plain hello" in fetched[1]
    assert b"\\Seen" in fetched[0]  # read in the pager
    assert client.select("INBOX") == ("OK", [b"2"])
    client.logout()


def test_silent_clients_are_logged_out() -> None:
    with mail_stack(access={"imap_preauth_timeout": 1.0}) as quick:
        client = RawImap(quick.imap)
        started = time.monotonic()
        assert client.line().startswith(b"* BYE Autologout")
        assert 0.9 < time.monotonic() - started < 10
        with pytest.raises(EOFError):
            client.line()
        client.close()
