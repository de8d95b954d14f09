"""Self-service over HTTP: login through the auth core (penalties, no app passwords), password
change, app passwords shown once and usable only for their service, TOTP enrolment with replay
protection and recovery codes, recent logins, logout."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pyotp

from idsvc.auth.request import AuthRequest, Outcome
from idsvc.model import Secret
from idsvc.web.second_factor import STEP
from tests.web.conftest import PASSWORD, WebEnv, account_login, open_web

USER = "alice@example.test"
SECRET_SHOWN = re.compile(r'<code class="secret">New app password “[^”]+”: ([^<]+)</code>')


async def auth(web: WebEnv, password: str, service: str) -> Outcome:
    result = await web.runtime.authenticator.authenticate(
        AuthRequest(login=USER, password=Secret(password), service=service, secured=True)
    )
    return result.outcome


async def test_login_and_overview(web: WebEnv) -> None:
    await web.user(USER)
    b = web.browser()
    assert (await b.get("/account")).headers["location"] == "/account/login"
    bad = await account_login(b, USER, "wrong password!")
    assert bad.status_code == 401
    assert "Login failed" in bad.text
    ok = await account_login(b, USER)
    assert ok.status_code == 303
    page = await b.get("/account")
    assert page.status_code == 200
    assert "Recent logins" in page.text
    assert "web.login" not in page.text  # shown as a login, not as an action name
    assert "account" in page.text


async def test_app_password_cannot_open_the_web_pages(web: WebEnv) -> None:
    await web.user(USER)
    apps = web.runtime.app_passwords
    assert apps is not None
    _app, secret = await apps.create(USER, "any", actor="test")  # no service scope at all
    assert await auth(web, secret, "imap") is Outcome.OK
    answer = await account_login(web.browser(), USER, secret)
    assert answer.status_code == 401


async def test_disabled_mail_services_do_not_block_self_service(web: WebEnv) -> None:
    await web.user(USER)
    await web.runtime.provisioner.update_user(USER, actor="t", services=[])
    assert (await account_login(web.browser(), USER)).status_code == 303
    await web.runtime.provisioner.update_user(USER, actor="t", enabled=False)
    assert (await account_login(web.browser(), USER)).status_code == 401


async def test_password_change_needs_current_and_policy(web: WebEnv) -> None:
    await web.user(USER)
    b, other = web.browser(), web.browser()
    await account_login(b, USER)
    await account_login(other, USER)
    new = "a much longer new passphrase"
    wrong = await b.submit("/account", "/account/password",
                           {"current": "not it at all", "new": new, "confirm": new})  # fmt: skip
    assert wrong.status_code == 403
    weak = await b.submit("/account", "/account/password",
                          {"current": PASSWORD, "new": "short", "confirm": "short"})  # fmt: skip
    assert weak.status_code == 422
    ok = await b.submit("/account", "/account/password",
                        {"current": PASSWORD, "new": new, "confirm": new})  # fmt: skip
    assert ok.status_code == 303
    assert await auth(web, new, "imap") is Outcome.OK
    assert await auth(web, PASSWORD, "imap") is Outcome.MISMATCH
    assert (await other.get("/account")).status_code == 303  # the other browser is logged out
    assert (await b.get("/account")).status_code == 200


async def test_app_password_shown_once_scoped_and_revoked(web: WebEnv) -> None:
    await web.user(USER)
    b = web.browser()
    await account_login(b, USER)
    made = await b.submit("/account", "/account/app-passwords",
                          {"name": "laptop smtp", "services": "smtp"})  # fmt: skip
    assert made.status_code == 303
    page = await b.get("/account")
    found = SECRET_SHOWN.search(page.text)
    assert found is not None
    secret = found.group(1)
    assert secret not in (await b.get("/account")).text  # once
    assert await auth(web, secret, "smtp") is Outcome.OK
    assert await auth(web, secret, "imap") is Outcome.MISMATCH
    apps = web.runtime.app_passwords
    assert apps is not None
    [app] = await apps.list_of(USER)
    gone = await b.submit("/account", f"/account/app-passwords/{app.id}/revoke", {})
    assert gone.status_code == 303
    assert await auth(web, secret, "smtp") is Outcome.MISMATCH


async def test_totp_enrolment_then_required(web: WebEnv) -> None:
    await web.user(USER)
    b = web.browser()
    await account_login(b, USER)
    setup = await b.get("/account/totp")
    assert "<svg" in setup.text
    key = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', setup.text)
    assert key is not None
    totp = pyotp.TOTP(key.group(1))
    wrong = await b.submit("/account/totp", "/account/totp", {"code": "000000"})
    assert wrong.status_code == 422
    done = await b.submit("/account/totp", "/account/totp", {"code": totp.now()})
    assert done.status_code == 200
    codes = re.findall(r"<li><code>([0-9a-f-]+)</code></li>", done.text)
    assert len(codes) == 10
    # now the password alone is not enough, a used code is not accepted twice
    assert (await account_login(web.browser(), USER)).status_code == 401
    fresh = totp.at(time.time() + STEP)  # the next step: the enrolment used the current one
    assert (await account_login(web.browser(), USER, code=fresh)).status_code == 303
    assert (await account_login(web.browser(), USER, code=fresh)).status_code == 401  # replay
    assert (await account_login(web.browser(), USER, code=codes[0])).status_code == 303
    assert (await account_login(web.browser(), USER, code=codes[0])).status_code == 401  # spent
    wrong_pw = await account_login(web.browser(), USER, "wrong password!", code=codes[1])
    assert wrong_pw.status_code == 401
    assert (await account_login(web.browser(), USER, code=codes[1])).status_code == 303


async def test_penalties_of_the_auth_core_apply(embedded_directory: Any, tmp_path: Path) -> None:
    """Failures (a wrong password or a wrong TOTP code) feed the auth core's penalties: from the
    third failure on, the answer is delayed."""
    async with open_web(embedded_directory, tmp_path, penalty=True, penalty_max=0.4) as web:
        await web.user(USER)
        b = web.browser("203.0.113.9")
        for _ in range(2):
            assert (await account_login(b, USER, "wrong password!")).status_code == 401
        started = time.monotonic()
        assert (await account_login(b, USER, "wrong password!")).status_code == 401
        assert time.monotonic() - started >= 0.35
        assert web.runtime.authenticator.penalties.delay("203.0.113.9", (USER,)) > 0


async def test_logout_then_replayed_cookie_is_refused(web: WebEnv) -> None:
    await web.user(USER)
    b = web.browser()
    await account_login(b, USER)
    sid = b.client.cookies.get("__Host-idsvc-web")
    out = await b.submit("/account", "/account/logout", {})
    assert out.status_code == 303
    replay = web.browser()
    replay.client.cookies.set("__Host-idsvc-web", sid or "", domain="idsvc.test")
    assert (await replay.get("/account")).status_code == 303
