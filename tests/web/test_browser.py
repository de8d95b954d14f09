"""The web pages in a real browser (Debian's Chromium driven by Playwright): the happy paths a
person takes, the hostile ones (XSS in every field an admin or user can fill, CSRF, a foreign
domain, a replayed cookie), labels on every input, and screenshots at desktop and phone widths
written to docs/screenshots/ for reviewers."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, Page

from idsvc.model import Account, Address
from tests.integration.test_app_passwords import imap, smtp
from tests.web.conftest import PASSWORD
from tests.web.live import LiveIdsvc, chromium, new_context

# Screenshots go to $IDSVC_SCREENSHOTS when set (``IDSVC_SCREENSHOTS=docs/screenshots`` refreshes
# the committed ones), else to a directory of their own under /tmp, so an ordinary run does not
# rewrite tracked files.
SHOTS = Path(os.environ.get("IDSVC_SCREENSHOTS") or tempfile.gettempdir()) / (
    "" if os.environ.get("IDSVC_SCREENSHOTS") else "idsvc-screenshots"
)
XSS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=2">',
    "<svg><script>window.__xss=3</script></svg>",
    '<svg onload="window.__xss=4">',
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=5>",
    '"><a href="javascript:window.__xss=6" id="jsl">x</a>',
    "<style>body{background:url(//evil.test/x)}</style>",
    '<meta http-equiv="refresh" content="0;url=javascript:window.__xss=8">',
    "{{7*7}}<iframe srcdoc='<script>parent.__xss=9</script>'></iframe>",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveIdsvc]:
    server = LiveIdsvc(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


def unlabelled(page: Page) -> list[str]:
    """Visible form controls without a label (``<label for>``, wrapping label or aria-label)."""
    return list(
        page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
                .filter(e => e.type !== 'hidden')
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                .map(e => e.name || e.id || e.outerHTML)"""
        )
    )


def check_page(page: Page) -> None:
    assert unlabelled(page) == []
    assert page.locator("h1").count() == 1
    assert page.evaluate("() => window.__xss") is None


def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def admin_login(page: Page, live: LiveIdsvc, token: str | None = None) -> None:
    page.goto(f"{live.url}/admin/login")
    page.get_by_label("Token", exact=True).fill(token or live.admin_token)
    page.get_by_role("button", name="Log in with token").click()
    page.wait_for_url(re.compile(r"/admin/domains$"))


def test_admin_creates_a_domain_and_a_user(browser: Browser, live: LiveIdsvc) -> None:
    for phone in (False, True):
        context = new_context(browser, phone=phone)
        page = context.new_page()
        suffix = "phone" if phone else "desktop"
        page.goto(f"{live.url}/admin/login")
        check_page(page)
        shoot(page, f"admin-login-{suffix}")
        admin_login(page, live)
        domain = f"{suffix}.example.test"
        page.get_by_label("Domain name").fill(domain)
        page.get_by_label("Description", exact=True).fill("Mail for the " + suffix)
        page.get_by_role("button", name="Create domain").click()
        page.wait_for_url(re.compile(re.escape(domain) + "$"))
        check_page(page)
        page.get_by_label("Address (local part)").fill("alice")
        page.get_by_label("Display name", exact=True).fill("Alice Example")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Create user").click()
        page.wait_for_url(re.compile(r"/admin/users/alice@"))
        check_page(page)
        assert page.get_by_label("Display name", exact=True).input_value() == "Alice Example"
        shoot(page, f"admin-user-{suffix}")
        page.goto(f"{live.url}/admin/domains/{domain}")
        shoot(page, f"admin-domain-{suffix}")
        page.goto(f"{live.url}/admin/domains")
        assert page.get_by_role("link", name=domain).is_visible()
        shoot(page, f"admin-domains-{suffix}")
        page.goto(f"{live.url}/admin/audit")
        check_page(page)
        assert page.get_by_role("cell", name="account.create").first.is_visible()
        context.close()


def test_user_enrols_totp_and_an_smtp_only_app_password(browser: Browser, live: LiveIdsvc) -> None:
    user = "bob@example.test"
    live.user(user)
    context = new_context(browser)
    page = context.new_page()
    page.goto(f"{live.url}/account/login")
    check_page(page)
    shoot(page, "account-login-desktop")
    page.get_by_label("Address", exact=True).fill(user)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/account$"))
    check_page(page)
    # TOTP
    page.get_by_role("link", name="Set up an authenticator app").click()
    check_page(page)
    assert page.locator("figure.qr svg").is_visible()
    shoot(page, "account-totp-desktop")
    totp = pyotp.TOTP(page.locator("#totp-secret").inner_text())
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Turn on").click()
    assert page.locator("ul.codes li").count() == 10
    recovery = page.locator("ul.codes li").first.inner_text()
    page.get_by_role("link", name="Done").click()
    # an app password for SMTP only, shown once
    page.get_by_label("Name (e.g. “phone”)").fill("scanner")
    page.get_by_label("smtp", exact=True).check()
    page.get_by_role("button", name="Create app password").click()
    shown = page.locator("code.secret").inner_text()
    secret = shown.rsplit(": ", 1)[1]
    check_page(page)
    shoot(page, "account-overview-desktop")
    page.reload()
    assert page.locator("code.secret").count() == 0
    assert live.run(smtp(live.sockets, user, secret))  # testsaslauthd, service smtp
    assert not live.run(imap(live.sockets, user, secret))  # doveadm auth test, imap
    assert live.run(imap(live.sockets, user, PASSWORD))
    # log out; the password alone no longer opens the page, the recovery code does
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/account/login$"))
    page.get_by_label("Address", exact=True).fill(user)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text().startswith("Login failed")
    page.get_by_label("Address", exact=True).fill(user)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Authenticator code or recovery code (if enrolled)").fill(recovery)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/account$"))
    context.close()
    phone = new_context(browser, phone=True).new_page()
    phone.goto(f"{live.url}/account/login")
    shoot(phone, "account-login-phone")
    phone.context.close()


def test_xss_in_every_field_runs_no_script(browser: Browser, live: LiveIdsvc) -> None:
    assert live.runtime is not None
    prov = live.runtime.provisioner
    directory = live.runtime.directory

    async def plant() -> None:
        await prov.create_domain("xss.test", actor="test", description=" ".join(XSS)[:1000])
        for i, payload in enumerate(XSS):
            await directory.add_account(
                Account(Address.parse(f"u{i}@xss.test"), None, display_name=payload[:256])
            )
        await prov.create_alias("list@xss.test", ["u0@xss.test"], actor=XSS[0])

    live.run(plant())
    context = new_context(browser)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    admin_login(page, live)
    for path in (
        "/admin/domains",
        "/admin/domains/xss.test",
        "/admin/domains/xss.test/aliases",
        "/admin/audit",
        *(f"/admin/users/u{i}@xss.test" for i in range(len(XSS))),
    ):
        page.goto(live.url + path)
        page.wait_for_load_state("load")
        check_page(page)
        assert page.locator("#jsl").count() == 0
    assert page.url.startswith(live.url)  # no meta refresh took us anywhere
    assert dialogs == []
    context.close()


def test_csrf_and_cross_site_posts_are_refused(browser: Browser, live: LiveIdsvc) -> None:
    context = new_context(browser)
    page = context.new_page()
    admin_login(page, live)
    status = page.evaluate(
        """async () => (await fetch('/admin/domains', {method: 'POST',
              headers: {'Content-Type': 'application/x-www-form-urlencoded'},
              body: 'name=nocsrf.test'})).status"""
    )
    assert status == 403
    # a page on another site (localhost is not 127.0.0.1) posts a form to the console
    other = live.url.replace("127.0.0.1", "localhost")
    page.goto(f"{other}/admin/login")
    page.evaluate(
        """(target) => { const f = document.createElement('form'); f.method = 'post';
              f.action = target; const i = document.createElement('input'); i.name = 'name';
              i.value = 'crosssite.test'; f.appendChild(i); document.body.appendChild(f);
              f.submit(); }""",
        f"{live.url}/admin/domains",
    )
    page.wait_for_load_state("load")
    assert "crosssite.test" not in page.content()
    page.goto(f"{live.url}/admin/domains")
    assert page.get_by_role("link", name="nocsrf.test").count() == 0
    assert page.get_by_role("link", name="crosssite.test").count() == 0
    context.close()


def test_domain_admin_cannot_reach_a_foreign_domain(browser: Browser, live: LiveIdsvc) -> None:
    live.user("ann@mine.test")
    live.user("zed@foreign.test")
    assert live.state is not None
    from idsvc.state import create_token

    _info, token = live.run(
        create_token(live.state, name="da", scope="domain_admin", domains=("mine.test",))
    )
    context = new_context(browser)
    page = context.new_page()
    admin_login(page, live, token)
    assert page.get_by_role("link", name="mine.test").is_visible()
    assert page.get_by_role("link", name="foreign.test").count() == 0
    for path in ("/admin/domains/foreign.test", "/admin/users/zed@foreign.test"):
        answer = page.goto(live.url + path)
        assert answer is not None
        assert answer.status == 404
        check_page(page)
    context.close()


def test_session_cookie_replayed_after_logout_is_refused(browser: Browser, live: LiveIdsvc) -> None:
    context = new_context(browser)
    page = context.new_page()
    admin_login(page, live)
    cookies = context.cookies()
    [session] = [c for c in cookies if c["name"] == "__Host-idsvc-web"]
    assert session["httpOnly"]
    assert session["secure"]
    assert session["sameSite"] == "Strict"
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/admin/login$"))
    thief = new_context(browser)
    thief.add_cookies([session])
    stolen = thief.new_page()
    stolen.goto(f"{live.url}/admin/domains")
    assert stolen.url.endswith("/admin/login")
    thief.close()
    context.close()
