"""A real webmail on mailsvc: Debian's Roundcube 1.6 (PHP's built-in server, its own config dir
and SQLite database in a temp dir) pointed at mailsvc's IMAPS and submissions listeners, driven
by Playwright on Debian's Chromium: log in, list, read, send, find the copy in Sent, move a
message to Trash. Roundcube fetches quoted-printable and base64 parts with ``BINARY.PEEK`` when
the server offers BINARY (RFC 3516): reading a quoted-printable message checks that path (the
text shown decoded, the command in Roundcube's IMAP log)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.mailcorpus import CORPUS
from tests.fixtures.mailstack import BOB, PASSWORD, MailStack, free_port, mail_stack
from tests.fixtures.roundcube import ROUNDCUBE, roundcube_config
from tests.integration.test_mailsvc_imap import imap
from tests.integration.test_mailsvc_pop3 import seed

QUOTED_PRINTABLE = (
    b"From: Carol <carol@example.org>\r\nTo: bob@example.org\r\nSubject: quoted printable note\r\n"
    b"Date: Mon, 01 Dec 2025 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    b"\r\nSch=C3=B6ne Gr=C3=BC=C3=9Fe, decoded=\r\n by the server\r\n"
)
CHROMIUM = "/usr/bin/chromium"


def stack_roundcube_config(stack: MailStack, work: Path) -> Path:
    """Roundcube on the stack's IMAPS and submission (self-signed: not verified), IMAP log on."""
    tls = "['ssl' => ['verify_peer' => false, 'verify_peer_name' => false]]"
    return roundcube_config(
        work,
        {
            "imap_host": f"'ssl://127.0.0.1:{stack.imaps}'",
            "imap_conn_options": tls,
            "smtp_host": f"'ssl://127.0.0.1:{stack.submissions}'",
            "smtp_conn_options": tls,
            "smtp_user": "'%u'",
            "smtp_pass": "'%p'",
            "smtp_auth_type": "'PLAIN'",
            "des_key": "'test-only-24-byte-key!!!'",
            "imap_debug": "true",
        },
    )


def wait_for_subject(stack: MailStack, folder: str, subject: str) -> None:
    """Poll over IMAP until ``folder`` holds a message with ``subject`` (10 s at most)."""
    client = imap(stack, BOB)
    try:
        deadline = time.monotonic() + 10
        while True:
            client.select(folder)
            if client.search(None, "SUBJECT", f'"{subject}"')[1] != [b""]:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{subject!r} never reached {folder}")
            time.sleep(0.3)
    finally:
        client.logout()


@pytest.fixture(scope="module")
def stack() -> Iterator[MailStack]:
    with mail_stack() as running:
        yield running


def test_roundcube_login_list_read_send_sent_copy_and_trash(stack: MailStack) -> None:
    from playwright.sync_api import sync_playwright

    seed(stack, BOB, [*CORPUS[:3], QUOTED_PRINTABLE])
    work = stack.workdir / "roundcube"
    work.mkdir()
    conf = stack_roundcube_config(stack, work)
    port = free_port()
    php_log = (work / "php.log").open("wb")
    server = subprocess.Popen(
        ["php", "-S", f"127.0.0.1:{port}", "-t", str(ROUNDCUBE / "public_html")],
        env={"ROUNDCUBE_CONFIG_DIR": str(conf), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL, stderr=php_log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail("php -S did not start")
            time.sleep(0.1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            )  # fmt: skip
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                page.set_default_timeout(20_000)
                page.goto(f"http://127.0.0.1:{port}/")
                page.fill("#rcmloginuser", BOB)
                page.fill("#rcmloginpwd", PASSWORD)
                page.click("#rcmloginsubmit")
                page.wait_for_selector("#messagelist tbody tr")
                rows = page.inner_text("#messagelist")
                assert "plain hello" in rows
                assert "Grüße aus Berlin" in rows
                page.click("#messagelist tbody tr:has-text('quoted printable note')")
                page.frame_locator("#messagecontframe").locator(
                    "text=Schöne Grüße, decoded by the server"
                ).wait_for()
                page.click("#messagelist tbody tr:has-text('plain hello')")
                frame = page.frame_locator("#messagecontframe")
                frame.locator("text=this line starts with a dot").wait_for()
                page.locator("#toolbar-menu a.delete").click()  # moves it to Trash
                wait_for_subject(stack, "Trash", "plain hello")
                page.goto(f"http://127.0.0.1:{port}/?_task=mail&_action=compose")
                page.fill("input[name=_to_input], #_to", BOB)
                page.fill("#compose-subject", "from the webmail")
                page.fill("#composebody", "sent through mailsvc submission")
                page.click("button.btn.send, a.send")
                page.wait_for_url("**_task=mail**", timeout=30_000)
                time.sleep(2)
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
        php_log.close()
    imap_log = (work / "logs" / "imap.log").read_text(errors="replace")
    assert "BINARY.PEEK[1]" in imap_log  # the part came decoded from mailsvc
    client = imap(stack, BOB)
    typ, _ = client.select("Sent")
    assert typ == "OK"
    found = client.search(None, "SUBJECT", '"from the webmail"')[1]
    assert found != [b""]
    assert client.select("Trash")[0] == "OK"
    assert client.search(None, "SUBJECT", '"plain hello"')[1] == [b"1"]
    client.select("INBOX")
    assert client.search(None, "SUBJECT", '"plain hello"')[1] == [b""]
    deadline = time.monotonic() + 10
    while client.search(None, "SUBJECT", '"from the webmail"')[1] == [b""]:
        assert time.monotonic() < deadline, "the sent message never arrived"
        time.sleep(0.5)
        client.noop()
    client.logout()
