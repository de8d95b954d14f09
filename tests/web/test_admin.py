"""The admin console over HTTP: login, domains, users with search and paging, ETag conflicts,
the rank rule (404 for a foreign domain), tokens, audit, logout."""

from __future__ import annotations

import html
import re

from idsvc.errors import NotFound
from idsvc.model import Account, Address
from tests.web.conftest import PASSWORD, WebEnv, admin_login

NEXT = re.compile(r'<a rel="next" href="([^"]+)"')


async def test_login_page_is_secure_and_labelled(web: WebEnv) -> None:
    b = web.browser()
    page = await b.get("/admin/login")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    cookie = page.headers["set-cookie"]
    for flag in ("__Host-idsvc-web=", "HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert flag.lower() in cookie.lower(), cookie


async def test_without_session_pages_redirect_to_login(web: WebEnv) -> None:
    b = web.browser()
    for path in ("/admin/domains", "/admin/tokens", "/admin/audit", "/admin/users/a@b.test"):
        answer = await b.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/admin/login"


async def test_bad_token_fails_and_session_rotates_at_login(web: WebEnv) -> None:
    b = web.browser()
    bad = await b.submit("/admin/login", "/admin/login", {"token": "idsvc_nope_nope"})
    assert bad.status_code == 401
    assert "Login failed" in bad.text
    before = b.client.cookies.get("__Host-idsvc-web")
    await admin_login(b, web.admin_token)
    after = b.client.cookies.get("__Host-idsvc-web")
    assert before
    assert after
    assert before != after


async def test_admin_creates_domain_and_user(web: WebEnv) -> None:
    b = web.browser()
    await admin_login(b, web.admin_token)
    made = await b.submit("/admin/domains", "/admin/domains", {"name": "Example.TEST"})
    assert made.status_code == 303
    assert made.headers["location"] == "/admin/domains/example.test"
    user = await b.submit(
        "/admin/domains/example.test",
        "/admin/domains/example.test/users",
        {"local": "alice", "password": PASSWORD, "display_name": "Alice", "services": "imap"},
    )
    assert user.status_code == 303, user.text[:300]
    account = await web.runtime.provisioner.get_user("alice@example.test")
    assert account.display_name == "Alice"
    assert sorted(s.value for s in account.services) == ["imap"]
    page = await b.get("/admin/users/alice@example.test")
    assert "alice@example.test" in page.text
    weak = await b.submit(
        "/admin/domains/example.test",
        "/admin/domains/example.test/users",
        {"local": "bob", "password": "short"},
    )
    assert weak.status_code == 422
    assert "password" in weak.text.lower()


async def test_search_and_paging_never_loads_everything(web: WebEnv) -> None:
    await web.runtime.provisioner.create_domain("big.test", actor="t")
    for i in range(120):  # straight into the directory: hashing 120 passwords is not the point
        await web.runtime.directory.add_account(Account(Address.parse(f"u{i:03d}@big.test"), None))
    b = web.browser()
    await admin_login(b, web.admin_token)
    first = await b.get("/admin/domains/big.test")
    assert first.text.count('href="/admin/users/u') == 50
    assert "u049@big.test" in first.text
    assert "u050@big.test" not in first.text
    link = NEXT.search(first.text)
    assert link is not None
    nxt = await b.get(html.unescape(link.group(1)))
    assert "u050@big.test" in nxt.text
    assert "u049@big.test" not in nxt.text
    found = await b.get("/admin/domains/big.test?prefix=u11")
    assert found.text.count('href="/admin/users/u11') == 10


async def test_two_admins_editing_one_user_get_a_conflict(web: WebEnv) -> None:
    await web.user("carol@example.test")
    one, two = web.browser(), web.browser()
    await admin_login(one, web.admin_token)
    await admin_login(two, web.admin_token)
    page = "/admin/users/carol@example.test"
    token_one, token_two = await one.csrf(page), await two.csrf(page)  # both see revision 1
    form = {"revision": "1", "quota": "0", "services": "imap", "enabled": "on"}
    saved = await one.post(page, {**form, "display_name": "Carol One"}, csrf=token_one)
    assert saved.status_code == 303
    lost = await two.post(page, {**form, "display_name": "Carol Two"}, csrf=token_two)
    assert lost.status_code == 409
    assert "Someone else changed this" in lost.text
    account = await web.runtime.provisioner.get_user("carol@example.test")
    assert account.display_name == "Carol One"


async def test_domain_admin_sees_only_its_domain(web: WebEnv) -> None:
    await web.user("dan@mine.test")
    await web.user("eve@foreign.test")
    token = await web.token("domain_admin", ("mine.test",))
    b = web.browser()
    await admin_login(b, token)
    listing = await b.get("/admin/domains")
    assert "mine.test" in listing.text
    assert "foreign.test" not in listing.text
    for path in (
        "/admin/domains/foreign.test",
        "/admin/users/eve@foreign.test",
        "/admin/domains/foreign.test/aliases",
        "/admin/domains/absent.test",
    ):
        answer = await b.get(path)
        assert answer.status_code == 404, path
    csrf = await b.csrf("/admin/domains/mine.test")
    write = await b.post(
        "/admin/users/eve@foreign.test", {"revision": "1", "display_name": "x"}, csrf=csrf
    )
    assert write.status_code == 404
    made = await b.post("/admin/domains", {"name": "new.test"}, csrf=csrf)
    assert made.status_code == 403
    with_user = await b.post(
        "/admin/domains/mine.test/users", {"local": "fay", "password": PASSWORD}, csrf=csrf
    )
    assert with_user.status_code == 303


async def test_domain_admin_cannot_touch_an_outranking_mailbox(web: WebEnv) -> None:
    await web.user("boss@mine.test")
    await web.token("admin", owner="boss@mine.test")
    b = web.browser()
    await admin_login(b, await web.token("domain_admin", ("mine.test",)))
    page = "/admin/users/boss@mine.test"
    assert (await b.get(page)).status_code == 200  # reading is fine
    answer = await b.post(f"{page}/password", {"revision": "1", "password": PASSWORD + "x"},
                          csrf=await b.csrf(page))  # fmt: skip
    assert answer.status_code == 403


async def test_directory_user_owning_a_token_logs_in_with_mail_password(web: WebEnv) -> None:
    await web.user("gina@mine.test")
    await web.token("domain_admin", ("mine.test",), owner="gina@mine.test")
    await web.user("hank@mine.test")  # owns nothing
    b = web.browser()
    ok = await b.submit("/admin/login", "/admin/login",
                        {"address": "gina@mine.test", "password": PASSWORD})  # fmt: skip
    assert ok.status_code == 303
    assert "gina@mine.test" in (await b.get("/admin/domains")).text
    other = web.browser()
    refused = await other.submit("/admin/login", "/admin/login",
                                 {"address": "hank@mine.test", "password": PASSWORD})  # fmt: skip
    assert refused.status_code == 401
    wrong = await other.submit("/admin/login", "/admin/login",
                               {"address": "gina@mine.test", "password": "wrong" * 3})  # fmt: skip
    assert wrong.status_code == 401


async def test_csrf_and_origin_are_required(web: WebEnv) -> None:
    b = web.browser()
    await admin_login(b, web.admin_token)
    good = await b.csrf("/admin/domains")
    assert (await b.post("/admin/domains", {"name": "a.test"}, csrf=None)).status_code == 403
    assert (await b.post("/admin/domains", {"name": "a.test"}, csrf="x" * 43)).status_code == 403
    evil = await b.post("/admin/domains", {"name": "a.test"}, csrf=good,
                        origin="https://evil.test")  # fmt: skip
    assert evil.status_code == 403
    cross = await b.client.post(
        "/admin/domains",
        data={"name": "a.test", "csrf": good},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    json = await b.client.post("/admin/domains", json={"name": "a.test", "csrf": good})
    assert json.status_code == 415
    try:
        await web.runtime.provisioner.get_domain("a.test")
        raise AssertionError("a refused request created the domain")
    except NotFound:
        pass
    assert (await b.post("/admin/domains", {"name": "a.test"}, csrf=good)).status_code == 303


async def test_logout_kills_the_session_and_replay_fails(web: WebEnv) -> None:
    b = web.browser()
    await admin_login(b, web.admin_token)
    sid = b.client.cookies.get("__Host-idsvc-web")
    csrf = await b.csrf("/admin/domains")
    out = await b.post("/admin/logout", {}, csrf=csrf)
    assert out.status_code == 303
    replay = web.browser()
    replay.client.cookies.set("__Host-idsvc-web", sid or "", domain="idsvc.test")
    answer = await replay.get("/admin/domains")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/login"


async def test_revoked_token_ends_its_sessions(web: WebEnv) -> None:
    token = await web.token("admin")
    b = web.browser()
    await admin_login(b, token)
    assert (await b.get("/admin/domains")).status_code == 200
    token_id = token.split("_")[1]
    await web.state.revoke_token(token_id)
    assert (await b.get("/admin/domains")).status_code == 303


async def test_tokens_shown_once_and_audit_lists_changes(web: WebEnv) -> None:
    b = web.browser()
    await admin_login(b, web.admin_token)
    made = await b.submit("/admin/tokens", "/admin/tokens",
                          {"name": "ops", "scope": "read_only", "domains": ""})  # fmt: skip
    assert made.status_code == 303
    first = await b.get("/admin/tokens")
    assert "New token (shown only now" in first.text
    again = await b.get("/admin/tokens")
    assert "New token (shown only now" not in again.text
    assert "ops" in again.text
    trail = await b.get("/admin/audit")
    assert "token.create" in trail.text


async def test_aliases_catch_all_and_alias_domains(web: WebEnv) -> None:
    await web.user("ivy@mine.test")
    b = web.browser()
    await admin_login(b, web.admin_token)
    page = "/admin/domains/mine.test/aliases"
    made = await b.submit(page, page, {"source": "sales", "destinations": "ivy@mine.test"})
    assert made.status_code == 303
    catch = await b.submit(page, page, {"source": "", "destinations": "ivy@mine.test"})
    assert catch.status_code == 303
    listing = await b.get(page)
    assert "sales@mine.test" in listing.text
    assert "(catch-all)" in listing.text
    domain = await web.runtime.provisioner.get_domain("mine.test")
    saved = await b.submit("/admin/domains/mine.test", "/admin/domains/mine.test",
                           {"revision": str(domain.revision), "enabled": "on",
                            "default_quota": "0", "alias_domains": "mine.example"})  # fmt: skip
    assert saved.status_code == 303
    assert (await web.runtime.provisioner.get_domain("mine.test")).alias_domains == (
        "mine.example",
    )
    gone = await b.submit(page, "/admin/aliases/sales@mine.test/delete", {})
    assert gone.status_code == 303
    assert "sales@mine.test" not in (await b.get(page)).text
