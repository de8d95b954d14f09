"""mailsvc as users meet it: real clients (swaks, curl, smtplib, Postfix smtp-source) against
``mailsvc serve`` backed by a real ``idsvc serve`` (Dovecot auth-client + socketmap, embedded
store), with Postfix ``smtp-sink`` as the smarthost capturing anything that leaves the box."""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator

import pytest

from tests.fixtures.authstack import which_or_fail
from tests.fixtures.mailstack import (
    ALICE,
    BOB,
    PASSWORD,
    MailStack,
    mail_stack,
    run,
    swaks,
)


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def stack(request: pytest.FixtureRequest) -> Iterator[MailStack]:
    """Every test here runs against mailsvc on uvloop (the default) and on asyncio's own loop."""
    with mail_stack(serve={"loop": request.param}) as s:
        yield s


def test_runs_on_the_configured_event_loop(
    stack: MailStack, request: pytest.FixtureRequest
) -> None:
    assert stack.mailsvc is not None
    wanted = request.node.callspec.params["stack"]
    assert re.search(rf"mailsvc.serve: ready: .*\(event loop: {wanted}\)", stack.mailsvc.log)


def tls_client() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the stack's self-signed development certificate
    return ctx


def count(stack: MailStack, address: str) -> int:
    return len(stack.messages(address))


# --- MX: local delivery ------------------------------------------------------------------------


async def test_mx_delivers_to_a_mailbox_with_trace_headers(stack: MailStack) -> None:
    before = count(stack, ALICE)
    out = await swaks(stack.mx, "--to", ALICE, "--from", "sender@remote.example",
                      "--header", "Subject: mx-delivery")  # fmt: skip
    assert "250 2.0.0 Ok: queued as" in out, out
    files = stack.messages(ALICE)
    assert len(files) == before + 1
    data = max(files, key=lambda p: p.stat().st_mtime_ns).read_bytes()
    assert data.startswith(b"Return-Path: <sender@remote.example>\r\nReceived: from client.test")
    assert b"by mx.example.org (mailsvc) with ESMTP id " in data
    assert b"for <alice@example.org>;" in data
    assert b"Subject: mx-delivery\r\n" in data
    name = max(files, key=lambda p: p.stat().st_mtime_ns).name
    assert f",S={len(data)},W={len(data)}" in name


@pytest.mark.parametrize(
    ("rcpt", "owner"),
    [
        ("alice+news@example.org", ALICE),  # recipient delimiter
        ("alice@example.net", ALICE),  # alias domain
        ("ALICE@Example.ORG.", ALICE),  # case and a trailing dot
        ("anyone@catchall.example", BOB),  # catch-all
    ],
)
async def test_recipient_forms(stack: MailStack, rcpt: str, owner: str) -> None:
    before = count(stack, owner)
    out = await swaks(stack.mx, "--to", rcpt, "--from", "s@remote.example")
    assert "250 2.0.0" in out, out
    assert count(stack, owner) == before + 1


async def test_alias_gives_one_copy_per_destination(stack: MailStack) -> None:
    a, b = count(stack, ALICE), count(stack, BOB)
    out = await swaks(stack.mx, "--to", "team@example.org,dup@example.org", "--from", "s@r.example")
    assert "250 2.0.0" in out, out
    assert (count(stack, ALICE), count(stack, BOB)) == (a + 1, b + 1)  # de-duplicated


@pytest.mark.parametrize("rcpt", ["nobody@example.org", "carol@example.org"])
async def test_unknown_or_disabled_recipient_is_refused_at_rcpt(
    stack: MailStack, rcpt: str
) -> None:
    out = await swaks(stack.mx, "--to", rcpt, "--from", "s@remote.example")
    assert "550 5.1.1" in out, out
    assert "DATA" not in out.split("550 5.1.1", 1)[1].split("QUIT")[0]


async def test_alias_forwarding_goes_through_the_smarthost(stack: MailStack) -> None:
    before = count(stack, BOB)
    out = await swaks(stack.mx, "--to", "fwd@example.org", "--from", "s@remote.example",
                      "--header", "Subject: forwarded-one")  # fmt: skip
    assert "250 2.0.0" in out, out
    assert count(stack, BOB) == before + 1
    sunk = stack.sunk()
    assert "X-Rcpt-Args: <ext@remote.example>" in sunk
    assert "Subject: forwarded-one" in sunk


# --- MX: never a relay ------------------------------------------------------------------------

RELAY_TRICKS = [
    "victim@remote.example",
    "victim%remote.example@example.org",
    "remote.example!victim@example.org",
    "@example.org:victim@remote.example",
    "@example.org,@example.net:victim@remote.example",
    '"victim@remote.example"@example.org',
    "victim@remote.example@example.org",
    "victim@[127.0.0.1]",
    "victim@[IPv6:::1]",
    "victim@remote.example.",
    "victim@example.org.remote.example",
    "victim@xn--exmple-cua.org",  # look-alike of example.org (IDN)
    "victim@example.org\\@remote.example",
    "victim@localhost",
]


async def test_relay_attempts_are_refused_and_nothing_leaves(stack: MailStack) -> None:
    sunk_before = stack.sunk()
    with smtplib.SMTP("127.0.0.1", stack.mx, timeout=20) as client:
        client.ehlo("relay.test")
        for rcpt in RELAY_TRICKS:
            client.rset()
            assert client.mail("s@remote.example")[0] == 250
            code, reply = client.docmd(f"RCPT TO:<{rcpt}>")
            assert 500 <= code < 600, (rcpt, code, reply)
        # and as a whole transaction: DATA must find no recipient
        client.rset()
        client.mail("s@remote.example")
        client.docmd("RCPT TO:<victim@remote.example>")
        assert client.docmd("DATA")[0] == 503
    assert stack.sunk() == sunk_before


async def test_no_auth_on_mx(stack: MailStack) -> None:
    with smtplib.SMTP("127.0.0.1", stack.mx, timeout=20) as client:
        client.ehlo("x.test")
        assert "auth" not in client.esmtp_features
        assert "size" in client.esmtp_features
        client.starttls(context=tls_client())
        client.ehlo("x.test")
        assert "auth" not in client.esmtp_features
        assert client.docmd("AUTH PLAIN " + base64.b64encode(b"\0a\0b").decode())[0] >= 500


# --- submission --------------------------------------------------------------------------------


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
async def test_submission_starttls_auth_and_remote_relay(stack: MailStack, mech: str) -> None:
    subject = f"Subject: submitted-{mech}"
    out = await swaks(stack.submission, "-tls", "--auth", mech, "--auth-user", ALICE,
                      "--auth-password", PASSWORD, "--from", ALICE, "--to", "friend@remote.example",
                      "--header", subject)  # fmt: skip
    assert "235 2.7.0" in out, out
    assert "250 2.0.0" in out, out
    sunk = stack.sunk()
    assert subject in sunk
    assert "(authenticated sender: alice@example.org)" in sunk
    assert "with ESMTPSA id" in sunk


async def test_submission_implicit_tls(stack: MailStack) -> None:
    before = count(stack, BOB)
    out = await swaks(stack.submissions, "-tlsc", "--auth", "PLAIN", "--auth-user", ALICE,
                      "--auth-password", PASSWORD, "--from", ALICE, "--to", BOB)  # fmt: skip
    assert "235 2.7.0" in out, out
    assert "250 2.0.0" in out, out
    assert count(stack, BOB) == before + 1


async def test_auth_plain_challenge_form_like_roundcube(stack: MailStack) -> None:
    """Net_SMTP (Roundcube) sends ``AUTH PLAIN`` alone and the credentials after ``334``."""
    with smtplib.SMTP("127.0.0.1", stack.submission, timeout=20) as client:
        client.starttls(context=tls_client())
        client.ehlo("webmail.test")
        code, text = client.docmd("AUTH PLAIN")
        assert (code, text) == (334, b"")
        code, text = client.docmd(base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode())
        assert code == 235, text
        assert client.mail(ALICE)[0] == 250


async def test_smtplib_login_and_send(stack: MailStack) -> None:
    before = count(stack, BOB)
    with smtplib.SMTP("127.0.0.1", stack.submission, timeout=20) as client:
        client.starttls(context=tls_client())
        client.login("Alice@Example.org", PASSWORD)  # canonicalised by idsvc
        client.sendmail(ALICE, [BOB], b"Subject: smtplib\r\n\r\n.leading dot line\r\n")
    assert count(stack, BOB) == before + 1
    newest = max(stack.messages(BOB), key=lambda p: p.stat().st_mtime_ns).read_bytes()
    assert newest.endswith(b"\r\n\r\n.leading dot line\r\n")  # dot-stuffing undone exactly


@pytest.mark.parametrize(
    ("user", "password"),
    [(ALICE, "wrong"), ("nobody@example.org", PASSWORD), ("carol@example.org", PASSWORD)],
)
async def test_bad_credentials(stack: MailStack, user: str, password: str) -> None:
    out = await swaks(stack.submission, "-tls", "--auth", "PLAIN", "--auth-user", user,
                      "--auth-password", password, "--from", ALICE, "--to", BOB,
                      "--quit-after", "AUTH")  # fmt: skip
    assert "535 5.7.8" in out, out


async def test_auth_needs_tls_and_mail_needs_auth(stack: MailStack) -> None:
    with smtplib.SMTP("127.0.0.1", stack.submission, timeout=20) as client:
        client.ehlo("x.test")
        assert "auth" not in client.esmtp_features
        assert (
            client.docmd(
                "AUTH PLAIN " + base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
            )[0]
            == 530
        )
        assert client.docmd("MAIL FROM:<alice@example.org>")[0] == 530
        client.starttls(context=tls_client())
        client.ehlo("x.test")
        assert "auth" in client.esmtp_features
        assert client.docmd("MAIL FROM:<alice@example.org>")[0] == 530  # TLS is not AUTH


async def test_sender_must_belong_to_the_login(stack: MailStack) -> None:
    out = await swaks(stack.submission, "-tls", "--auth", "PLAIN", "--auth-user", ALICE,
                      "--auth-password", PASSWORD, "--from", BOB,
                      "--to", "x@remote.example")  # fmt: skip
    assert "553 5.7.1" in out, out
    assert "X-Mail-Args: <bob@example.org>" not in stack.sunk()


async def test_curl_smtp_submission(stack: MailStack) -> None:
    before = count(stack, BOB)
    code, out = await run(
        [
            which_or_fail("curl"),
            "--silent",
            "--show-error",
            "--insecure",
            "--ssl-reqd",
            f"smtp://127.0.0.1:{stack.submission}",
            "--mail-from",
            ALICE,
            "--mail-rcpt",
            BOB,
            "--user",
            f"{ALICE}:{PASSWORD}",
            "--upload-file",
            "-",
        ],
        stdin=b"From: alice@example.org\r\nSubject: curl\r\n\r\nhello from curl\r\n",
    )
    assert code == 0, out
    assert count(stack, BOB) == before + 1


async def test_curl_wrong_password_is_refused(stack: MailStack) -> None:
    code, out = await run(
        [
            which_or_fail("curl"),
            "--silent",
            "--show-error",
            "--insecure",
            "--ssl-reqd",
            f"smtp://127.0.0.1:{stack.submission}",
            "--mail-from",
            ALICE,
            "--mail-rcpt",
            BOB,
            "--user",
            f"{ALICE}:nope",
            "--upload-file",
            "-",
        ],
        stdin=b"Subject: x\r\n\r\nx\r\n",
    )
    assert code == 67, out  # CURLE_LOGIN_DENIED


# --- smtp-source -------------------------------------------------------------------------------


async def test_smtp_source_burst(stack: MailStack) -> None:
    before = count(stack, BOB)
    code, out = await run(
        [
            which_or_fail("smtp-source"),
            "-c",
            "-s",
            "4",
            "-m",
            "40",
            "-l",
            "2048",
            "-f",
            "src@remote.example",
            "-t",
            BOB,
            f"127.0.0.1:{stack.mx}",
        ],
        timeout=120,
    )
    assert code == 0, out
    assert count(stack, BOB) == before + 40


# --- hygiene -----------------------------------------------------------------------------------


SMUGGLING = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\n..\n",
]


@pytest.mark.parametrize("end", SMUGGLING)
async def test_smuggling_gives_at_most_one_message(stack: MailStack, end: bytes) -> None:
    before = count(stack, BOB)
    with socket.create_connection(("127.0.0.1", stack.mx), timeout=20) as sock:
        f = sock.makefile("rb")

        def reply() -> bytes:
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
            return line

        assert reply().startswith(b"220")
        for cmd in (b"EHLO x.test", b"MAIL FROM:<a@remote.example>", b"RCPT TO:<bob@example.org>"):
            sock.sendall(cmd + b"\r\n")
            assert reply().startswith(b"250"), cmd
        sock.sendall(b"DATA\r\n")
        assert reply().startswith(b"354")
        sock.sendall(
            b"Subject: one\r\n\r\nbody" + end
            + b"MAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
            + b"Subject: smuggled\r\n\r\nx\r\n.\r\n"
        )  # fmt: skip
        final = reply()
        sock.sendall(b"QUIT\r\n")
        rest = f.read()
    assert final[:1] in (b"2", b"5"), final
    delivered = count(stack, BOB) - before
    assert delivered <= 1
    if final.startswith(b"5"):
        assert delivered == 0
    assert b"smuggled" not in rest
    for path in stack.messages(BOB)[-1:]:
        assert b"Subject: smuggled" not in path.read_bytes().split(b"\r\n\r\n", 1)[0]


async def test_starttls_discards_pipelined_plaintext(stack: MailStack) -> None:
    with socket.create_connection(("127.0.0.1", stack.mx), timeout=20) as raw:
        f = raw.makefile("rb")
        assert f.readline().startswith(b"220")
        raw.sendall(b"EHLO x.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        raw.sendall(b"STARTTLS\r\nMAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.org>\r\n")
        assert f.readline().startswith(b"220")
        tls = tls_client().wrap_socket(raw, server_hostname="mx.example.org")
        tf = tls.makefile("rb")
        tls.sendall(b"RCPT TO:<bob@example.org>\r\n")
        first = tf.readline()
        assert first.startswith(b"503"), first  # no EHLO/MAIL survived the handshake
        tls.sendall(b"EHLO x.test\r\n")
        line = tf.readline()
        while line[3:4] == b"-":
            line = tf.readline()
        assert line.startswith(b"250")
        tls.sendall(b"RCPT TO:<bob@example.org>\r\n")
        assert tf.readline().startswith(b"503")  # still no MAIL: it was never executed
        tls.close()


async def test_size_is_announced_and_enforced(stack: MailStack) -> None:
    before = count(stack, BOB)
    with smtplib.SMTP("127.0.0.1", stack.mx, timeout=30) as client:
        client.ehlo("x.test")
        assert int(client.esmtp_features["size"]) == 1_000_000
        assert client.docmd("MAIL FROM:<a@remote.example> SIZE=2000000")[0] == 552
        client.rset()
        client.mail("a@remote.example")
        client.rcpt(BOB)
        code, _ = client.data(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1100)
        assert code == 552
    assert count(stack, BOB) == before


async def test_refusal_budget_ends_the_session(stack: MailStack) -> None:
    codes: list[int] = []
    with smtplib.SMTP("127.0.0.1", stack.mx, timeout=20) as client:
        client.ehlo("x.test")
        client.mail("a@remote.example")

        def spend() -> None:
            for _ in range(40):
                codes.append(client.docmd("RCPT TO:<nobody@example.org>")[0])

        with pytest.raises(smtplib.SMTPServerDisconnected):
            spend()
    assert codes[0] == 550
    assert codes[-1] == 421  # the session ended once the error budget was spent
    assert len(codes) == 20


async def test_big_message_is_spooled_and_delivered_intact(stack: MailStack) -> None:
    body = b"Subject: big\r\n\r\n" + b"".join(
        b"%06d " % i + b"z" * 90 + b"\r\n" for i in range(8000)
    )
    assert len(body) > 256 * 1024  # beyond the in-memory part of the spool
    with smtplib.SMTP("127.0.0.1", stack.mx, timeout=60) as client:
        client.sendmail("s@remote.example", [BOB], body)
    newest = max(stack.messages(BOB), key=lambda p: p.stat().st_mtime_ns).read_bytes()
    assert newest.endswith(b"\r\n\r\n" + body.split(b"\r\n\r\n", 1)[1])


async def test_over_long_line_is_refused_and_the_session_stays_in_step(stack: MailStack) -> None:
    before = count(stack, BOB)
    with socket.create_connection(("127.0.0.1", stack.mx), timeout=20) as sock:
        f = sock.makefile("rb")

        def reply() -> bytes:
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
            return line

        assert reply().startswith(b"220")
        for cmd in (b"EHLO x.test", b"MAIL FROM:<a@remote.example>", b"RCPT TO:<bob@example.org>"):
            sock.sendall(cmd + b"\r\n")
            assert reply().startswith(b"250")
        sock.sendall(b"DATA\r\n")
        assert reply().startswith(b"354")
        sock.sendall(b"Subject: long\r\n\r\n" + b"A" * 70000 + b"\r\n.\r\n")
        assert reply().startswith(b"500 5.5.6")
        sock.sendall(b"NOOP\r\n")  # read as a command again: the session is in step
        assert reply().startswith(b"250")
        sock.sendall(b"RCPT TO:<bob@example.org>\r\n")
        assert reply().startswith(b"503")  # and the refused transaction is gone
    assert count(stack, BOB) == before


async def test_forwarded_message_keeps_its_dot_lines(stack: MailStack) -> None:
    with smtplib.SMTP("127.0.0.1", stack.mx, timeout=20) as client:
        client.sendmail("s@remote.example", ["fwd@example.org"],
                        b"Subject: dots\r\n\r\n.one\r\n..two\r\nthree\r\n")  # fmt: skip
    assert "\n.one\n..two\nthree" in stack.sunk().replace("\r\n", "\n")


async def test_recipient_limit(stack: MailStack) -> None:
    with smtplib.SMTP("127.0.0.1", stack.mx, timeout=60) as client:
        client.ehlo("x.test")
        client.mail("s@remote.example")
        codes = [client.rcpt(f"bob+{i}@example.org")[0] for i in range(101)]
        assert codes[:100] == [250] * 100
        assert codes[100] == 452  # 4.5.3: the rest in another transaction, not a bounce
        before = count(stack, BOB)
        assert client.data(b"Subject: many\r\n\r\nx\r\n")[0] == 250
    assert count(stack, BOB) == before + 1  # one mailbox: one copy
