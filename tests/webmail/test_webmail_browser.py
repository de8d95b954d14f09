"""The webmail in Debian's Chromium (Playwright) against the real Dovecot and Postfix: a user
reads a message and replies (the reply arrives), and a corpus of hostile HTML mails renders with
no script executed in the page or in the message frame. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from playwright.sync_api import Browser, Page

from mailsvc.webmail.app import create_app
from mailsvc.webmail.config import WebmailSettings
from tests.fixtures.postfix import free_port
from tests.web.live import chromium, new_context
from tests.web.test_browser import unlabelled
from tests.webmail.conftest import ALICE, BOB, BOB_PASSWORD, PASSWORD, MailStack, mail

T = TypeVar("T")
# Screenshots go to $IDSVC_SCREENSHOTS when set (``IDSVC_SCREENSHOTS=docs/screenshots`` refreshes
# the committed ones), else to a directory of their own under /tmp, so an ordinary run does not
# rewrite tracked files.
SHOTS = Path(os.environ.get("IDSVC_SCREENSHOTS") or tempfile.gettempdir()) / (
    "" if os.environ.get("IDSVC_SCREENSHOTS") else "idsvc-screenshots"
)
XSS_MAILS = {
    "script": "<p>a</p><script>window.parent.__xss=1;window.__xss=1</script>",
    "handler": '<img src=x onerror="window.__xss=2"><body onload="window.__xss=2">',
    "svg": "<svg><script>window.__xss=3</script><circle onload=window.__xss=3 /></svg>",
    "mxss": "<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=4>",
    "mxss2": '<noscript><p title="</noscript><img src=x onerror=window.__xss=5>">',
    "jsurl": '<a id="l" href="javascript:window.__xss=6">click</a>',
    "css": '<style>*{background:url(http://127.0.0.1:9/x)}</style><p style="color:red">s</p>',
    "refresh": '<meta http-equiv="refresh" content="0;url=javascript:window.__xss=7">',
    "frame": '<iframe srcdoc="<script>parent.__xss=8</script>"></iframe>',
    "form": '<form action="http://127.0.0.1:9/"><input name=p><button>go</button></form>',
}


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a thread of its own (Playwright's sync API owns this
    thread's event loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(60)


class LiveWebmail:
    """The webmail app under uvicorn on a thread, on a loopback port."""

    def __init__(self, settings: WebmailSettings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                log_config=None, access_log=False, lifespan="on")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveWebmail:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            threading.Event().wait(0.05)
        raise RuntimeError("webmail did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def login(page: Page, url: str, address: str = ALICE, password: str = PASSWORD) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("Address").fill(address)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/mail$"))


def no_script_ran(page: Page) -> None:
    for frame in page.frames:
        assert frame.evaluate("() => window.__xss") is None, frame.url


def test_read_and_reply_in_the_browser(browser: Browser, mail_stack: MailStack) -> None:
    run(mail_stack.deliver(mail("Dinner on Friday?", "Shall we meet at eight?",
                                        html="<p>Shall we meet at <b>eight</b>?</p>")))  # fmt: skip
    with LiveWebmail(mail_stack.settings) as live:
        for phone in (False, True):
            context = new_context(browser, phone=phone)
            page = context.new_page()
            suffix = "phone" if phone else "desktop"
            login(page, live.url)
            assert unlabelled(page) == []
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / f"webmail-inbox-{suffix}.png"), full_page=True)
            page.get_by_role("link", name="Dinner on Friday?").click()
            assert page.locator("pre.body").inner_text().startswith("Shall we meet at eight?")
            frame = page.frame_locator("iframe.html")
            assert frame.locator("b").inner_text() == "eight"
            page.screenshot(path=str(SHOTS / f"webmail-read-{suffix}.png"), full_page=True)
            assert unlabelled(page) == []
            if not phone:
                page.get_by_role("link", name="Reply").click()
                assert page.get_by_label("Subject").input_value() == "Re: Dinner on Friday?"
                assert unlabelled(page) == []
                page.get_by_label("Message").fill("Eight is fine.")
                page.get_by_role("button", name="Send").click()
                page.wait_for_url(re.compile(r"/mail$"))
                assert page.get_by_role("status").inner_text() == "Sent."
            context.close()
    assert mail_stack.postfix is not None
    mail_stack.postfix.wait_for_log(r"to=<bob@example\.test>.*status=sent", timeout=20)
    assert "Re: Dinner on Friday?" in run(mail_stack.subjects(BOB, BOB_PASSWORD))
    assert run(mail_stack.subjects(ALICE, PASSWORD, "Sent")) == ["Re: Dinner on Friday?"]


def test_xss_corpus_runs_no_script(browser: Browser, mail_stack: MailStack) -> None:
    async def plant() -> None:
        for name, html in XSS_MAILS.items():
            await mail_stack.deliver(mail(f"xss {name}", f"plain {name}", html=html))
        await mail_stack.deliver(mail("<script>window.__xss=99</script>", "subject attack"))

    run(plant())
    with LiveWebmail(mail_stack.settings) as live:
        context = new_context(browser)
        page = context.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        login(page, live.url)
        no_script_ran(page)
        hrefs: list[str | None] = []
        for listing in ("/mail", "/mail?folder=INBOX&page=1"):  # 10 a page
            page.goto(live.url + listing)
            no_script_ran(page)
            links = page.locator("a[href^='/read?']")
            hrefs += [links.nth(i).get_attribute("href") for i in range(links.count())]
        assert len(hrefs) == len(XSS_MAILS) + 1
        for href in hrefs:
            assert href is not None
            page.goto(live.url + href)
            page.wait_for_load_state("load")
            page.wait_for_timeout(100)
            no_script_ran(page)
            assert page.url.startswith(live.url + "/read")  # no refresh took us away
            frames = [f for f in page.frames if f != page.main_frame]
            for frame in frames:
                assert frame.locator("script, svg, math, iframe, form, style").count() == 0
        assert dialogs == []
        context.close()
