"""The webmail against our own front ends, in Debian's Chromium: ``idsvc serve`` with
``[mailsvc] enabled`` (IMAPS and submission on loopback, users made with the CLI, mail delivered
through mailsvc's MX). Alice lists and reads a message, replies (the reply reaches Bob's Maildir
through our submission), finds the copy in Sent, moves a message to Trash and searches."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from mailsvc.webmail.config import WebmailSettings
from tests.fixtures.mailstack import IDSVC, PASSWORD, Process, short_workdir, swaks
from tests.integration.test_mailsvc_serve import idsvc_cli, quickstart
from tests.web.live import new_context
from tests.web.test_browser import unlabelled
from tests.webmail.test_webmail_browser import LiveWebmail, browser, login, run

ALICE, BOB = "alice@example.org", "bob@example.org"
__all__ = ["browser"]  # a fixture
PORT = re.compile(r"mailsvc.serve: (\w+): listening on 127\.0\.0\.1:(\d+)")


@dataclass
class Served:
    workdir: Path
    vmail: Path
    ports: dict[str, int]

    def settings(self) -> WebmailSettings:
        return WebmailSettings(
            imap_host="127.0.0.1",
            imap_port=self.ports["imaps"],
            imap_tls="tls",
            smtp_host="127.0.0.1",
            smtp_port=self.ports["submission"],
            smtp_tls="starttls",
            ca_file=str(self.workdir / "tls" / "cert.pem"),  # mailsvc's self-signed certificate
            tls_check_hostname=False,  # it names mx.example.org; we dial 127.0.0.1
            page_size=10,
            mail_domain="example.org",
        )

    def deliver(self, subject: str, body: str) -> None:
        """Bob → Alice through mailsvc's MX listener."""
        out = run(swaks(self.ports["mx"], "--to", ALICE, "--from", BOB,
                        "--header", f"Subject: {subject}", "--body", body))  # fmt: skip
        assert "250 2.0.0" in out, out

    def wait_in_maildir(self, address: str, needle: bytes, timeout: float = 20) -> bytes:
        local, _, domain = address.partition("@")
        new = self.vmail / domain / local / "Maildir" / "new"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in new.iterdir() if new.is_dir() else ():
                data = path.read_bytes()
                if needle in data:
                    return data
            time.sleep(0.2)
        pytest.fail(f"{needle!r} never reached {address}'s Maildir")


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with short_workdir() as workdir:
        env, vmail = quickstart(workdir)
        proc = Process([str(IDSVC), "serve"], env, "idsvc")
        try:
            proc.wait_for(r"mailsvc.serve: ready: \d+ listener")
            ports = {name: int(port) for name, port in PORT.findall(proc.log)}
            idsvc_cli(env, "domain", "add", "example.org")
            for user in (ALICE, BOB):
                idsvc_cli(env, "user", "add", user, "--password-stdin", stdin=PASSWORD + "\n")
            yield Served(workdir, vmail, ports)
        finally:
            proc.stop()


def listed(page: Page) -> list[str]:
    links = page.locator("a[href^='/read?']")
    return [links.nth(i).inner_text() for i in range(links.count())]


def test_read_reply_sent_trash_search_on_our_front_ends(browser: Browser, served: Served) -> None:
    served.deliver("Lunch on Tuesday?", "Shall we try the new place at noon?")
    served.deliver("Quarterly figures", "The spreadsheet is attached to the wiki page.")
    served.wait_in_maildir(ALICE, b"Quarterly figures")
    with LiveWebmail(served.settings()) as live:
        context = new_context(browser)
        page = context.new_page()
        login(page, live.url, ALICE, PASSWORD)
        assert unlabelled(page) == []
        assert listed(page) == ["Quarterly figures", "Lunch on Tuesday?"]
        # read
        page.get_by_role("link", name="Lunch on Tuesday?").click()
        assert page.locator("pre.body").inner_text().startswith("Shall we try the new place")
        # reply: through our submission listener into Bob's Maildir
        page.get_by_role("link", name="Reply").click()
        assert page.get_by_label("Subject").input_value() == "Re: Lunch on Tuesday?"
        page.get_by_label("Message").fill("Noon works for me.")
        page.get_by_role("button", name="Send").click()
        page.wait_for_url(re.compile(r"/mail$"))
        assert page.get_by_role("status").inner_text() == "Sent."
        reply = served.wait_in_maildir(BOB, b"Re: Lunch on Tuesday?")
        assert b"Noon works for me." in reply
        assert f"From: {ALICE}".encode() in reply or ALICE.encode() in reply
        # the copy in Sent
        page.locator("nav.folders").get_by_role("link", name="Sent").click()
        assert listed(page) == ["Re: Lunch on Tuesday?"]
        # delete = move to Trash
        page.goto(live.url + "/mail")
        page.get_by_role("link", name="Lunch on Tuesday?").click()
        page.get_by_role("button", name="Delete").click()
        page.wait_for_url(re.compile(r"/mail"))
        assert listed(page) == ["Quarterly figures"]
        page.locator("nav.folders").get_by_role("link", name="Trash").click()
        assert listed(page) == ["Lunch on Tuesday?"]
        # search (IMAP SEARCH TEXT on our server)
        page.goto(live.url + "/mail")
        page.get_by_label("Search this folder").fill("spreadsheet")
        page.get_by_role("button", name="Search").click()
        page.wait_for_url(re.compile(r"q=spreadsheet"))
        assert listed(page) == ["Quarterly figures"]
        page.get_by_label("Search this folder").fill("no-such-word-anywhere")
        page.get_by_role("button", name="Search").click()
        page.wait_for_url(re.compile(r"q=no-such-word"))
        assert listed(page) == []
        context.close()
