"""mailsvc under faults, with real processes: idsvc killed mid-session (lookups 451 4.3.0, AUTH
454 4.7.0, never a 5xx; accepted again once idsvc is back), a SIGKILL at each step of a delivery
(never a partial message visible, never an acknowledged one lost), a real full filesystem (a small
tmpfs as the vmail root: 452 4.3.1 at MAIL, 451 at DATA with nothing partial left) and quota
(552 5.2.2 at DATA, 452 4.2.2 at RCPT, in the maildirsize file Dovecot also keeps)."""

from __future__ import annotations

import contextlib
import os
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailsvc.maildir import CRASH_STEPS
from mailsvc.smtp.handler import FREE_TTL
from tests.fixtures.mailstack import ALICE, ALICE_QUOTA, BOB, PASSWORD, MailStack, mail_stack
from tests.integration.test_mailsvc_smtp import tls_client


def send(port: int, rcpt: str, body: bytes = b"Subject: t\r\n\r\nhello\r\n") -> tuple[int, bytes]:
    """One message over MX; (DATA reply code, text), or the first refusal on the way."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("fault.test")
        code, text = client.mail("s@remote.example")
        if code != 250:
            return code, text
        code, text = client.rcpt(rcpt)
        if code != 250:
            return code, text
        return client.data(body)


def only_complete_files(stack: MailStack, body: bytes) -> list[Path]:
    """Every visible message is whole (ends with the body sent) and matches its S= size."""
    files = stack.visible()
    for path in files:
        data = path.read_bytes()
        assert data.endswith(body), path
        assert f",S={len(data)}," in path.name
    return files


# --- idsvc goes away --------------------------------------------------------------------------


async def test_idsvc_killed_mid_session_gives_4xx_then_mail_is_accepted() -> None:
    with mail_stack() as stack:
        assert stack.idsvc is not None
        with smtplib.SMTP("127.0.0.1", stack.mx, timeout=30) as client:
            client.ehlo("fault.test")
            assert client.mail("s@remote.example")[0] == 250
            assert client.rcpt(BOB)[0] == 250
            stack.idsvc.stop(9)  # SIGKILL: no goodbye on the sockets
            code, text = client.rcpt(ALICE)
            assert (code, text[:5]) == (451, b"4.3.0"), text
            assert client.rcpt("nobody@example.org")[0] == 451  # never a 550 while down
        with smtplib.SMTP("127.0.0.1", stack.submission, timeout=30) as client:
            client.starttls(context=tls_client())
            client.ehlo("fault.test")
            with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                client.login(ALICE, PASSWORD)
            assert err.value.smtp_code == 454
        stack.start_idsvc()  # the same store, the same sockets
        assert send(stack.mx, ALICE)[0] == 250
        with smtplib.SMTP("127.0.0.1", stack.submission, timeout=30) as client:
            client.starttls(context=tls_client())
            client.login(ALICE, PASSWORD)
            assert client.sendmail(ALICE, [BOB], b"Subject: back\r\n\r\nback\r\n") == {}


# --- a crash at each delivery step ---------------------------------------------------------------


@pytest.mark.parametrize("step", CRASH_STEPS)
async def test_crash_at_each_delivery_step(step: str) -> None:
    body = b"Subject: crash\r\n\r\n" + (b"0123456789" * 99 + b"\r\n") * 50
    with mail_stack(mailsvc_env={"MAILSVC_TEST_CRASH_AT": step}) as stack:
        assert stack.mailsvc is not None
        with pytest.raises(smtplib.SMTPServerDisconnected):
            send(stack.mx, BOB, body)  # the process dies before any reply to DATA
        assert stack.mailsvc.wait_exit() == -9
        visible = only_complete_files(stack, body)
        if step in ("tmp-open", "tmp-written", "tmp-synced"):
            assert visible == []  # at most a file in tmp/, which no reader looks at
        else:
            assert len(visible) == 1  # renamed: whole (never acknowledged; the client retries)
        stack.mailsvc_env = {}
        stack.start_mailsvc()
        assert send(stack.mx, BOB, body)[0] == 250  # the client's retry
        after = only_complete_files(stack, body)
        assert len(after) == len(visible) + 1


# --- disk full on a real filesystem --------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs (root needed): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True, timeout=30, check=False)


def fill(root: Path, leave: int) -> None:
    """Fill the filesystem of ``root`` until about ``leave`` bytes stay free."""
    st = os.statvfs(root)
    free = st.f_bavail * st.f_frsize
    (root / "filler").write_bytes(b"\0" * max(free - leave, 0))


async def test_disk_full_gives_4xx_and_nothing_partial() -> None:
    limit = 300_000
    with mail_stack(smtp={"max_message_size": limit}) as stack:
        stack.mailsvc and stack.mailsvc.stop()
        with small_filesystem(stack.vmail, "4m"):
            stack.start_mailsvc()
            assert send(stack.mx, BOB)[0] == 250  # creates the mailbox
            # MAIL passes the space check; the disk fills up before DATA (another writer)
            big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 290
            with smtplib.SMTP("127.0.0.1", stack.mx, timeout=30) as client:
                client.ehlo("fault.test")
                assert client.mail("s@remote.example")[0] == 250
                assert client.rcpt(BOB)[0] == 250
                fill(stack.vmail, 100_000)
                code, text = client.data(big)
            assert code == 451, text
            assert text.startswith(b"4.3.0")
            only_complete_files(stack, b"hello\r\n")
            assert os.listdir(stack.maildir(BOB) / "tmp") == []
            # under 1.5 x the limit: refused at MAIL (once the last reading has aged out)
            (stack.vmail / "filler").unlink()
            fill(stack.vmail, limit)
            time.sleep(FREE_TTL + 0.1)
            code, text = send(stack.mx, BOB)
            assert (code, text[:5]) == (452, b"4.3.1"), text
            # space back: accepted again
            (stack.vmail / "filler").unlink()
            time.sleep(FREE_TTL + 0.1)
            assert send(stack.mx, BOB)[0] == 250
            stack.mailsvc and stack.mailsvc.stop()


# --- quota ---------------------------------------------------------------------------------------


async def test_quota_at_data_and_at_rcpt() -> None:
    with mail_stack() as stack:
        first = b"Subject: q\r\n\r\n" + (b"a" * 998 + b"\r\n") * (ALICE_QUOTA // 2000)
        assert send(stack.mx, ALICE, first)[0] == 250
        maildirsize = stack.maildir(ALICE) / "maildirsize"
        assert maildirsize.read_text().splitlines()[0] == f"{ALICE_QUOTA}S"
        code, text = send(stack.mx, ALICE, first + first)  # would go over: refused whole
        assert (code, text[:5]) == (552, b"5.2.2"), text
        assert len(stack.messages(ALICE)) == 1
        # another writer (Dovecot's quota plugin, an IMAP APPEND) fills it up
        with maildirsize.open("a") as f:
            f.write(f"{ALICE_QUOTA} 1\n")
        code, text = send(stack.mx, ALICE)
        assert (code, text[:5]) == (452, b"4.2.2"), text
        assert send(stack.mx, BOB)[0] == 250  # others are not affected


# --- the directory itself goes away (idsvc stays up) ---------------------------------------------


async def test_slapd_killed_mid_session_gives_4xx_then_mail_is_accepted(own_slapd: Any) -> None:
    ldap = own_slapd.settings(own_slapd.new_subtree("mailsvc-fault"))
    with mail_stack(ldap=ldap) as stack:
        assert send(stack.mx, BOB)[0] == 250
        with smtplib.SMTP("127.0.0.1", stack.mx, timeout=60) as client:
            client.ehlo("fault.test")
            assert client.mail("s@remote.example")[0] == 250
            own_slapd.kill()
            code, text = client.rcpt(ALICE)
            assert (code, text[:5]) == (451, b"4.3.0"), (
                text
            )  # never 550 while the directory is down
        with smtplib.SMTP("127.0.0.1", stack.submission, timeout=60) as client:
            client.starttls(context=tls_client())
            client.ehlo("fault.test")
            with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                client.login(ALICE, PASSWORD)
            assert err.value.smtp_code == 454
        own_slapd.restart()
        deadline = time.monotonic() + 30
        while (code := send(stack.mx, ALICE)[0]) != 250 and time.monotonic() < deadline:
            assert code == 451
            time.sleep(0.5)
        assert code == 250  # accepted once the directory is back, nothing restarted on our side


# --- the lookup cache (identity.cache_ttl) -------------------------------------------------------


async def test_cached_answers_survive_an_idsvc_outage_failures_are_never_cached() -> None:
    """With ``identity.cache_ttl`` a recipient looked up moments ago is still accepted while idsvc
    is down; one never looked up gets 451 4.3.0 (nothing is guessed), and that failure is not
    kept: once idsvc is back the same recipient is accepted."""
    with mail_stack(identity={"cache_ttl": 300.0}) as stack:
        assert stack.idsvc is not None
        assert send(stack.mx, BOB)[0] == 250
        assert send(stack.mx, "nobody@example.org")[0] == 550
        stack.idsvc.stop(9)
        assert send(stack.mx, BOB)[0] == 250  # every answer for bob is cached
        assert send(stack.mx, "nobody@example.org")[0] == 550  # "not found" is an answer too
        code, text = send(stack.mx, ALICE)
        assert (code, text[:5]) == (451, b"4.3.0"), text
        stack.start_idsvc()
        assert send(stack.mx, ALICE)[0] == 250
        assert len(stack.messages(BOB)) == 2
        assert len(stack.messages(ALICE)) == 1
