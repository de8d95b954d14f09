"""The webmail's pages: ``create_app(settings)`` gives an ASGI app (serve it with uvicorn,
behind TLS).

Pages: ``/login``, ``/mail`` (folders, the folder's messages newest first with paging, search),
``/read`` (one message: plain text first, HTML sanitised in a sandboxed frame from ``/body``,
attachments from ``/part`` as downloads), ``/compose`` (new, reply, forward; attachments; sent
by SMTP submission and appended to Sent), ``/move``, ``/delete``, ``/logout``.

Security (docs/webmail.md): sessions as in :mod:`mailsvc.webmail.sessions`; every POST needs the
session's CSRF token and a same-origin ``Origin``/``Sec-Fetch-Site``; every page is under
``default-src 'none'`` with no script at all and ``frame-ancestors 'none'``; the HTML body is
cleaned by :mod:`mailsvc.webmail.sanitize` and served with its own CSP (``sandbox``, images only
from this origin) into ``<iframe sandbox>`` without ``allow-scripts``/``allow-same-origin``;
attachments are always ``Content-Disposition: attachment``, ``application/octet-stream`` (only
raster images of a ``cid:`` reference are served inline as themselves), ``nosniff``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiosmtplib
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import UploadFile

from mailsvc.webmail import imap, message
from mailsvc.webmail.config import WebmailSettings
from mailsvc.webmail.park import Park
from mailsvc.webmail.sanitize import clean_html
from mailsvc.webmail.sessions import Frame, Sessions, WebmailSession

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
COOKIE = "__Host-mailsvc"
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
BODY_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; base-uri 'none'; "
    "form-action 'none'; "
    "frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox"
)
FRAME_KEPT_FOR = 60.0  # seconds a /read page's cleaned body waits for its frame's /body
FRAME_KEPT_MAX = 2 * 1024 * 1024  # characters; a bigger body is cleaned again by /body
INLINE_IMAGES = {"image/png", "image/gif", "image/jpeg", "image/webp"}
FRAME_PAGE = '<!doctype html><meta charset="utf-8"><link rel="stylesheet" href="/static/frame.css">'


class Fail(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def _headers(response: Response, csp: str = PAGE_CSP) -> Response:
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    if "frame-ancestors 'none'" in csp:
        response.headers["X-Frame-Options"] = "DENY"
    return response


def create_app(settings: WebmailSettings | None = None) -> FastAPI:
    settings = settings or WebmailSettings.from_env()
    sessions = Sessions(
        idle=settings.session_idle,
        absolute=settings.session_absolute,
        max_sessions=settings.max_sessions,
    )
    templates = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    park = Park(settings.imap_keep, settings.max_sessions, imap.close)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await park.close()

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.park = park
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.state.sessions = sessions

    def current(request: Request) -> WebmailSession | None:
        return sessions.get(request.cookies.get(COOKIE))

    def user_session(request: Request) -> WebmailSession:
        s = current(request)
        if s is None or not s.user:
            raise Fail(401, "Please log in.")
        return s

    def render(request: Request, name: str, s: WebmailSession | None, status: int = 200,
               **values: Any) -> Response:  # fmt: skip
        body = templates.get_template(name).render(session=s, csrf=s.csrf if s else "", **values)
        response = _headers(HTMLResponse(body, status_code=status))
        if s is not None and request.cookies.get(COOKIE) != s.id:
            _cookie(response, s)
        return response

    def _cookie(response: Response, s: WebmailSession) -> None:
        response.set_cookie(COOKIE, s.id, httponly=True, secure=True, samesite="strict", path="/")

    def go(path: str, **query: Any) -> Response:
        url = path + ("?" + urlencode(query) if query else "")
        return _headers(RedirectResponse(url, status_code=303))

    async def form(request: Request, s: WebmailSession | None) -> dict[str, Any]:
        if s is None:
            raise Fail(403, "Your session has ended. Reload the page.")
        site = request.headers.get("sec-fetch-site")
        origin = request.headers.get("origin")
        if (site is not None and site not in ("same-origin", "none")) or (
            origin is not None
            and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()
        ):
            raise Fail(403, "Cross-site request refused.")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_upload + 1_000_000:
            raise Fail(413, "The message is too large.")
        fields: dict[str, Any] = {"_files": []}
        async with request.form(
            max_files=10, max_fields=50, max_part_size=settings.max_upload
        ) as data:
            for key, value in data.multi_items():
                if isinstance(value, UploadFile):
                    content = await value.read(settings.max_upload + 1)
                    if content or value.filename:
                        fields["_files"].append(
                            (value.filename or "attachment", value.content_type or "", content)
                        )
                else:
                    fields[key] = value
        if not s.csrf_ok(fields.get("csrf") or request.headers.get("x-csrf-token")):
            raise Fail(403, "The form has expired (CSRF token). Reload it.")
        return fields

    @app.exception_handler(Fail)
    async def _fail(request: Request, exc: Fail) -> Response:
        if exc.status == 401:
            return go("/login")
        return render(request, "error.html", current(request), status=exc.status,
                      message=str(exc))  # fmt: skip

    @app.exception_handler(imap.ImapError)
    async def _imap_fail(request: Request, exc: imap.ImapError) -> Response:
        log.warning("IMAP: %s", exc)
        return render(request, "error.html", current(request), status=502,
                      message="The mail server did not accept that. Try again.")  # fmt: skip

    def mailbox(s: WebmailSession) -> Any:
        return imap.session(settings, s.user, s.password, park=park, key=s.id)

    # -- login -------------------------------------------------------------------------------

    @app.get("/login")
    async def login_form(request: Request) -> Response:
        return render(request, "login.html", current(request) or sessions.new())

    @app.post("/login")
    async def login(request: Request) -> Response:
        s = current(request)
        fields = await form(request, s)
        assert s is not None
        user = message.single_line(str(fields.get("address", "")), "address", 320)
        password = str(fields.get("password", ""))
        try:
            async with imap.session(settings, user, password):
                pass
        except imap.LoginFailed:
            return render(request, "login.html", s, status=401, error="Login failed.")
        sessions.end(s)
        fresh = sessions.new()
        fresh.user, fresh.password = user, password
        response = go("/mail")
        _cookie(response, fresh)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        s = current(request)
        await form(request, s)
        assert s is not None
        park.drop(s.id)
        sessions.end(s)
        response = go("/login")
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    @app.get("/")
    async def home() -> Response:
        return go("/mail")

    # -- folders and lists ---------------------------------------------------------------------

    @app.get("/mail")
    async def folder(
        request: Request, folder: str = "INBOX", page: int = 0, q: str = ""
    ) -> Response:
        s = user_session(request)
        page = max(0, min(page, 1_000_000))
        async with mailbox(s) as box:
            folders = await box.folders()
            exists = await box.select(folder)
            if q.strip():
                items = await box.search(q.strip()[:200], settings.page_size)
            else:
                items = await box.page(exists, page, settings.page_size)
        rows = [_row(item) for item in items]
        notices = list(s.notices)
        s.notices.clear()
        more = not q and exists > (page + 1) * settings.page_size
        return render(request, "mail.html", s, folders=folders, folder=folder, rows=rows,
                      page=page, more=more, q=q, exists=exists, notices=notices,
                      qs=lambda **kw: urlencode(kw))  # fmt: skip

    # -- one message ------------------------------------------------------------------------------

    @app.get("/read")
    async def read(request: Request, folder: str, uid: int) -> Response:
        s = user_session(request)
        async with mailbox(s) as box:
            folders = await box.folders()
            await box.select(folder)
            raw = await box.message(uid)
        parsed = message.parse(raw)
        blocked = 0
        s.frame = None
        if parsed.html is not None:
            cleaned = clean_html(parsed.html, _cid_url(parsed, folder, uid))
            blocked = cleaned.blocked_images
            if len(cleaned.html) <= FRAME_KEPT_MAX:  # the frame asks for it next: keep it
                s.frame = Frame(folder, uid, cleaned.html, time.monotonic())
        return render(request, "read.html", s, m=parsed, folder=folder, uid=uid, folders=folders,
                      blocked=blocked, qs=lambda **kw: urlencode(kw))  # fmt: skip

    @app.get("/body")
    async def body(request: Request, folder: str, uid: int) -> Response:
        s = user_session(request)
        kept, s.frame = s.frame, None
        if (
            kept is not None
            and (kept.folder, kept.uid) == (folder, uid)
            and time.monotonic() - kept.made <= FRAME_KEPT_FOR
        ):
            html = kept.html
        else:
            async with mailbox(s) as box:
                await box.select(folder)
                raw = await box.message(uid)
            parsed = message.parse(raw)
            html = clean_html(parsed.html or "", _cid_url(parsed, folder, uid)).html
        return _headers(HTMLResponse(FRAME_PAGE + html), BODY_CSP)

    @app.get("/part")
    async def part(
        request: Request, folder: str, uid: int, index: int, inline: int = 0
    ) -> Response:
        s = user_session(request)
        async with mailbox(s) as box:
            await box.select(folder)
            raw = await box.message(uid)
        found = message.part_bytes(raw, index)
        if found is None:
            raise Fail(404, "No such attachment.")
        data, filename = found
        parsed = message.parse(raw)
        ctype = next((a.content_type for a in parsed.attachments if a.index == index), "")
        response = Response(data, media_type="application/octet-stream")
        if inline and ctype in INLINE_IMAGES:
            response = Response(data, media_type=ctype)
        else:
            safe = "".join(c for c in filename if c.isprintable() and c not in '"\\/')[:200]
            response.headers["Content-Disposition"] = (
                f'attachment; filename="{safe.encode("ascii", "replace").decode()}"; '
                f"filename*=UTF-8''{quote(safe)}"
            )
        return _headers(response, "default-src 'none'; sandbox")

    # -- changes ----------------------------------------------------------------------------------

    @app.post("/move")
    async def move(request: Request) -> Response:
        s = user_session(request)
        fields = await form(request, s)
        source, uid, target = str(fields.get("folder")), _uid(fields), str(fields.get("target"))
        async with mailbox(s) as box:
            await box.select(source)
            await box.move(uid, target)
        s.notices.append(f"Moved to {target}.")
        return go("/mail", folder=source)

    @app.post("/delete")
    async def delete(request: Request) -> Response:
        s = user_session(request)
        fields = await form(request, s)
        source, uid = str(fields.get("folder")), _uid(fields)
        async with mailbox(s) as box:
            trash = next((f.name for f in await box.folders() if f.special == "\\Trash"), None)
            await box.select(source)
            await box.delete(uid, trash)
        s.notices.append("Deleted.")
        return go("/mail", folder=source)

    # -- compose ----------------------------------------------------------------------------------

    @app.get("/compose")
    async def compose(request: Request, folder: str = "", uid: int = 0, mode: str = "") -> Response:
        s = user_session(request)
        draft = {"to": "", "cc": "", "subject": "", "body": "", "in_reply_to": "", "refs": ""}
        forward: list[message.Attachment] = []
        if uid and mode in ("reply", "forward"):
            async with mailbox(s) as box:
                await box.select(folder)
                parsed = message.parse(await box.message(uid))
            quoted = "\n".join("> " + line for line in (parsed.text or "").splitlines())
            if mode == "reply":
                draft["to"] = parsed.sender
                draft["subject"] = _prefixed("Re: ", parsed.subject)
                draft["in_reply_to"] = parsed.message_id
                draft["refs"] = parsed.references
                draft["body"] = f"\n\n{parsed.sender} wrote:\n{quoted}\n"
            else:
                draft["subject"] = _prefixed("Fwd: ", parsed.subject)
                draft["body"] = (
                    f"\n\n---------- Forwarded message ----------\nFrom: {parsed.sender}\n"
                    f"Date: {parsed.date}\nSubject: {parsed.subject}\n\n{parsed.text or ''}\n"
                )
                forward = parsed.attachments
        return render(request, "compose.html", s, d=draft, folder=folder, uid=uid, mode=mode,
                      forward=forward)  # fmt: skip

    @app.post("/compose")
    async def send(request: Request) -> Response:
        s = user_session(request)
        fields = await form(request, s)
        try:
            to = message.addresses(str(fields.get("to", "")), "To")
            cc = message.addresses(str(fields.get("cc", "")), "Cc")
            if not to:
                raise message.Refused("To: at least one address")
            draft = message.Draft(
                sender=s.user,
                to=to,
                cc=cc,
                subject=str(fields.get("subject", "")),
                body=str(fields.get("body", "")),
                in_reply_to=str(fields.get("in_reply_to", "")),
                references=str(fields.get("refs", "")),
            )
            total = 0
            for name, ctype, data in fields["_files"]:
                total += len(data)
                if total > settings.max_upload:
                    raise message.Refused("attachments are too large")
                draft.attachments.append((name, ctype, data))
            if fields.get("forward_uid") and fields.get("folder"):
                async with mailbox(s) as box:
                    await box.select(str(fields["folder"]))
                    raw = await box.message(int(str(fields["forward_uid"])))
                for a in message.parse(raw).attachments:
                    got = message.part_bytes(raw, a.index)
                    if got is not None:
                        draft.attachments.append((got[1], a.content_type, got[0]))
            built = message.build(draft, settings.mail_domain)
        except (message.Refused, ValueError) as exc:
            raise Fail(422, str(exc)) from exc
        await _submit(settings, s, built)
        async with mailbox(s) as box:
            sent = next((f.name for f in await box.folders() if f.special == "\\Sent"), "Sent")
            with contextlib.suppress(imap.ImapError):
                await box.append(sent, built.as_bytes())
        s.notices.append("Sent.")
        return go("/mail")

    return app


async def _submit(settings: WebmailSettings, s: WebmailSession, msg: Any) -> None:
    import ssl

    context = ssl.create_default_context(cafile=settings.ca_file)
    context.check_hostname = settings.tls_check_hostname
    try:
        await aiosmtplib.send(
            msg,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=s.user,
            password=s.password,
            use_tls=settings.smtp_tls == "tls",
            start_tls=settings.smtp_tls == "starttls",
            tls_context=context,
            timeout=30,
        )
    except aiosmtplib.SMTPException as exc:
        log.warning("SMTP submission failed: %s", type(exc).__name__)
        raise Fail(502, "The mail server did not accept the message.") from exc


def _uid(fields: dict[str, Any]) -> int:
    text = str(fields.get("uid", ""))
    if not text.isdigit() or len(text) > 10:
        raise Fail(400, "Bad message number.")
    return int(text)


def _prefixed(prefix: str, subject: str) -> str:
    return subject if subject.lower().startswith(prefix.lower()) else prefix + subject


def _cid_url(parsed: message.Parsed, folder: str, uid: int) -> Callable[[str], str | None]:
    """``cid:`` references of ``parsed`` → URLs of its inline parts (None: not ours)."""

    def cid_url(cid: str) -> str | None:
        index = parsed.cid_index(cid)
        if index is None:
            return None
        return "/part?" + urlencode({"folder": folder, "uid": uid, "index": index, "inline": 1})

    return cid_url


_HEADERS = BytesHeaderParser(policy=policy.compat32)


def _row(item: imap.Summary) -> dict[str, Any]:
    """One list row. The headers are decoded (RFC 2047) but not parsed as addresses: a list of
    50 rows through ``policy.default``'s address parser cost more than the IMAP round trip."""
    headers = _HEADERS.parsebytes(item.header)

    def get(name: str) -> str:
        value = headers.get(name)
        if value is None:
            return ""
        raw = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        try:
            text = str(make_header(decode_header(raw)))
        except (ValueError, LookupError, UnicodeError, HeaderParseError):
            text = raw
        return " ".join(text.split())  # folded lines, stray CR/LF: one line

    return {"uid": item.uid, "seen": item.seen, "size": item.size, "from": get("From"),
            "subject": get("Subject") or "(no subject)", "date": get("Date")}  # fmt: skip
