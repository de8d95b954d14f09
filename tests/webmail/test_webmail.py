"""The webmail against a real Dovecot (IMAP) and Postfix (submission → LMTP → Dovecot)."""

from __future__ import annotations

import re

from tests.webmail.conftest import (
    ALICE,
    BASE,
    BOB,
    BOB_PASSWORD,
    PASSWORD,
    MailStack,
    Tab,
    mail,
)


async def test_login_list_page_read_logout(mail_stack: MailStack, webmail: Tab) -> None:
    for i in range(23):
        await mail_stack.deliver(mail(f"message {i:02d}", f"body of {i:02d}"))
    assert (await webmail.login(ALICE, "wrong")).status_code == 401
    ok = await webmail.login()
    assert ok.status_code == 303
    assert "__Host-mailsvc" in ok.headers["set-cookie"]
    first = await webmail.client.get("/mail")
    assert first.status_code == 200
    assert first.text.count('href="/read?') == 10
    assert "message 22" in first.text
    assert "message 12" not in first.text
    assert "default-src 'none'" in first.headers["content-security-policy"]
    third = await webmail.client.get("/mail?folder=INBOX&page=2")
    assert third.text.count('href="/read?') == 3
    assert "message 00" in third.text
    uid = re.search(r'href="/read\?folder=INBOX&amp;uid=(\d+)"', first.text)
    assert uid is not None
    read = await webmail.client.get(f"/read?folder=INBOX&uid={uid.group(1)}")
    assert "body of 22" in read.text
    sid = webmail.client.cookies.get("__Host-mailsvc")
    out = await webmail.post("/logout", {}, csrf=await webmail.csrf("/mail"))
    assert out.status_code == 303
    webmail.client.cookies.set("__Host-mailsvc", sid or "", domain="webmail.test")
    assert (await webmail.client.get("/mail")).headers["location"] == "/login"


async def test_search_move_delete(mail_stack: MailStack, webmail: Tab) -> None:
    await mail_stack.deliver(mail("invoice March", "pay me"))
    await mail_stack.deliver(mail("lunch", "pizza?"))
    await webmail.login()
    found = await webmail.client.get("/mail?folder=INBOX&q=pizza")
    assert "lunch" in found.text
    assert "invoice" not in found.text
    uid = re.search(r"uid=(\d+)", found.text)
    assert uid is not None
    csrf = await webmail.csrf("/mail")
    moved = await webmail.post("/move", {"folder": "INBOX", "uid": uid.group(1),
                                         "target": "Archive"}, csrf=csrf)  # fmt: skip
    assert moved.status_code == 303
    assert await mail_stack.subjects(ALICE, PASSWORD, "Archive") == ["lunch"]
    inbox = await webmail.client.get("/mail")
    uid2 = re.search(r"uid=(\d+)", inbox.text)
    assert uid2 is not None
    await webmail.post("/delete", {"folder": "INBOX", "uid": uid2.group(1)}, csrf=csrf)
    assert await mail_stack.subjects(ALICE, PASSWORD, "Trash") == ["invoice March"]
    assert await mail_stack.subjects(ALICE, PASSWORD, "INBOX") == []


async def test_reply_with_attachment_arrives_and_is_in_sent(
    mail_stack: MailStack, webmail: Tab
) -> None:
    await mail_stack.deliver(mail("question", "are you there?"))
    await webmail.login()
    inbox = await webmail.client.get("/mail")
    uid = re.search(r"uid=(\d+)", inbox.text)
    assert uid is not None
    form = await webmail.client.get(f"/compose?folder=INBOX&uid={uid.group(1)}&mode=reply")
    assert 'value="Re: question"' in form.text
    assert BOB in form.text
    in_reply_to = re.search(r'name="in_reply_to" value="([^"]*)"', form.text)
    assert in_reply_to is not None
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    sent = await webmail.post(
        "/compose",
        {"to": BOB, "cc": "", "subject": "Re: question", "body": "yes, here",
         "in_reply_to": in_reply_to.group(1).replace("&lt;", "<").replace("&gt;", ">")},
        csrf=csrf.group(1),
        files=[("files", ("notes.txt", b"attached text", "text/plain"))],
    )  # fmt: skip
    assert sent.status_code == 303, sent.text[:400]
    mail_stack.postfix.wait_for_log(r"to=<bob@example\.test>.*status=sent", timeout=20)  # type: ignore[union-attr]
    assert "Re: question" in await mail_stack.subjects(BOB, BOB_PASSWORD)
    assert await mail_stack.subjects(ALICE, PASSWORD, "Sent") == ["Re: question"]


async def test_header_injection_and_bad_addresses_refused(
    mail_stack: MailStack, webmail: Tab
) -> None:
    await webmail.login()
    csrf = await webmail.csrf("/compose")
    for fields in (
        {"to": BOB, "subject": "hi\r\nBcc: victim@example.test"},
        {"to": f"{BOB}\r\nBcc: victim@example.test", "subject": "x"},
        {"to": "not an address", "subject": "x"},
        {"to": "", "subject": "x"},
    ):
        answer = await webmail.post("/compose", {**fields, "body": "b"}, csrf=csrf)
        assert answer.status_code == 422, fields
    assert (await webmail.post("/compose", {"to": BOB, "body": "b"}, csrf=None)).status_code == 403
    evil = await webmail.post("/compose", {"to": BOB, "body": "b"}, csrf=csrf,
                              origin="https://evil.test")  # fmt: skip
    assert evil.status_code == 403


async def test_html_mail_is_sanitised_and_framed(mail_stack: MailStack, webmail: Tab) -> None:
    html = ('<p>Hi <b>there</b><script>alert(1)</script><img src="https://track.test/p.gif">'
            '<a href="javascript:alert(2)">x</a></p>')  # fmt: skip
    await mail_stack.deliver(mail("html", "plain version", html=html))
    await webmail.login()
    inbox = await webmail.client.get("/mail")
    uid = re.search(r"uid=(\d+)", inbox.text)
    assert uid is not None
    read = await webmail.client.get(f"/read?folder=INBOX&uid={uid.group(1)}")
    assert "plain version" in read.text
    assert '<iframe class="html" title="Formatted message" sandbox="allow-popups' in read.text
    assert "1 remote image(s) blocked" in read.text
    body = await webmail.client.get(f"/body?folder=INBOX&uid={uid.group(1)}")
    csp = body.headers["content-security-policy"]
    assert "sandbox" in csp
    assert "default-src 'none'" in csp
    assert "<b>there</b>" in body.text
    for bad in ("<script", "alert(", "track.test", "javascript:"):
        assert bad not in body.text


async def test_list_rows_decode_encoded_headers(mail_stack: MailStack, webmail: Tab) -> None:
    msg = mail("Grüße aus Berlin — 東京", "hallo")
    del msg["From"]
    msg["From"] = f"Zoë Ümlaut <{BOB}>"
    await mail_stack.deliver(msg)
    await webmail.login()
    inbox = await webmail.client.get("/mail")
    assert "Grüße aus Berlin — 東京" in inbox.text
    assert "Zoë Ümlaut" in inbox.text
    assert "=?utf-8?" not in inbox.text.lower()


async def test_frame_body_kept_from_the_read_page_once(mail_stack: MailStack, webmail: Tab) -> None:
    """``/read`` cleans the HTML once and keeps it for the frame's ``/body``: that request needs
    no IMAP conversation (shown by expunging the message in between), and only once."""
    import aioimaplib

    await mail_stack.deliver(mail("first", "p", html="<p>first <i>html</i></p>"))
    await mail_stack.deliver(mail("second", "p", html="<p>second <i>html</i></p>"))
    await webmail.login()
    inbox = await webmail.client.get("/mail")
    uids = [int(u) for u in re.findall(r"uid=(\d+)\">", inbox.text)]
    first, second = sorted(set(uids))
    await webmail.client.get(f"/read?folder=INBOX&uid={first}")
    other = await webmail.client.get(f"/body?folder=INBOX&uid={second}")  # not the kept one
    assert "second <i>html</i>" in other.text
    await webmail.client.get(f"/read?folder=INBOX&uid={first}")
    c = aioimaplib.IMAP4(host="127.0.0.1", port=mail_stack.imap_port, timeout=20)
    await c.wait_hello_from_server()
    await c.login(ALICE, PASSWORD)
    await c.select("INBOX")
    await c.uid("store", str(first), "+FLAGS.SILENT", "(\\Deleted)")
    await c.expunge()
    await c.logout()
    kept = await webmail.client.get(f"/body?folder=INBOX&uid={first}")
    assert kept.status_code == 200
    assert "first <i>html</i>" in kept.text
    assert "sandbox" in kept.headers["content-security-policy"]
    again = await webmail.client.get(f"/body?folder=INBOX&uid={first}")  # gone: fetched anew
    assert "first <i>html</i>" not in again.text


async def test_imap_conversation_parked_between_pages(mail_stack: MailStack) -> None:
    """A page's logged-in IMAP conversation is reused by the session's next page, replaced when
    it stopped answering, closed at logout and after ``imap_keep`` seconds; ``imap_keep = 0``
    parks nothing."""
    import asyncio
    import dataclasses

    import httpx

    from mailsvc.webmail.app import create_app

    await mail_stack.deliver(mail("parked", "p"))
    for keep in (30.0, 0.3, 0.0):
        app = create_app(dataclasses.replace(mail_stack.settings, imap_keep=keep))
        park = app.state.park
        transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 40000))
        try:
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                tab = Tab(client)
                assert (await tab.login()).status_code == 303
                sid = client.cookies.get("__Host-mailsvc")
                assert sid
                assert "parked" in (await client.get("/mail")).text
                if keep == 0.0:
                    assert len(park) == 0
                    continue
                if keep == 0.3:
                    await asyncio.sleep(0.6)
                    assert len(park) == 0  # expired and logged out
                    continue
                first = park.take(sid)
                assert first is not None
                assert park.put(sid, first)
                assert (await client.get("/mail")).status_code == 200
                second = park.take(sid)
                assert second is first  # the same conversation served the second page
                second.protocol.transport.close()  # the server "restarted"
                assert park.put(sid, second)
                assert "parked" in (await client.get("/mail")).text  # NOOP failed: reconnected
                third = park.take(sid)
                assert third is not None
                assert third is not first
                assert park.put(sid, third)
                out = await tab.post("/logout", {}, csrf=await tab.csrf("/mail"))
                assert out.status_code == 303
                assert len(park) == 0
        finally:
            await park.close()
