"""What every web page shares: the context, sessions in cookies, CSRF and origin checks, security
headers, rendering and error pages.

Rules (docs/web.md):

* The session id travels only in the ``__Host-idsvc-web`` cookie (``HttpOnly; Secure;
  SameSite=Strict; Path=/``). Sessions live in :class:`idsvc.web.sessions.SessionStore`.
* Every state-changing request is a POST that must carry the session's CSRF token (form field
  ``csrf`` or header ``X-CSRF-Token``, the one htmx sends), and whose ``Origin`` (when sent) is
  this host and whose ``Sec-Fetch-Site`` (when sent) is ``same-origin`` or ``none``. Anything
  else is a 403 before the handler does any work.
* Every page answers with ``Content-Security-Policy: default-src 'none'`` plus what the pages use
  (scripts, styles and images from this origin only, forms to this origin), ``frame-ancestors
  'none'``, ``nosniff``, ``Referrer-Policy: same-origin`` and ``Cache-Control: no-store``.
* Values a browser sends are never put into a header: redirects go to fixed paths or to paths
  built from canonical names (percent-encoded).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idsvc.api.context import ApiContext, context_of
from idsvc.api.problems import classify
from idsvc.errors import IdsvcError
from idsvc.web.sessions import Session, SessionStore

if TYPE_CHECKING:
    from idsvc.web.second_factor import SecondFactors

log = logging.getLogger(__name__)

COOKIE = "__Host-idsvc-web"
PAGE_PREFIXES = ("/admin", "/account")
STATIC_PREFIX = "/web-static"
MAX_FIELD = 4096  # characters of one form field
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make Origin "null"
    (b"cross-origin-opener-policy", b"same-origin"),
)
NO_STORE = (b"cache-control", b"no-store")
HERE = Path(__file__).parent
P = ParamSpec("P")


@dataclass
class WebContext:
    api: ApiContext
    sessions: SessionStore
    templates: Environment
    factors: SecondFactors | None  # TOTP and recovery codes (None: no second factor store)


def build_templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        auto_reload=False,
    )
    env.filters["q"] = lambda value: quote(str(value), safe="@")
    return env


def web_of(request: Request) -> WebContext:
    web = request.app.state.web
    assert isinstance(web, WebContext)
    return web


class SecurityHeaders:
    """Pure ASGI middleware: the security headers on every page and static file."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith((*PAGE_PREFIXES, STATIC_PREFIX)):
            await self.app(scope, receive, send)
            return
        page = not path.startswith(STATIC_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in PAGE_HEADERS}
                if page:
                    names.add(NO_STORE[0])
                headers = [(k, v) for k, v in message.get("headers", []) if k not in names]
                headers.extend(PAGE_HEADERS)
                if page:
                    headers.append(NO_STORE)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class PageError(Exception):
    """Ends a request with an error page (``status``, a message safe to show)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- sessions ---------------------------------------------------------------------------------


def current_session(request: Request) -> Session | None:
    return web_of(request).sessions.get(request.cookies.get(COOKIE))


def set_session_cookie(response: Response, session: Session) -> None:
    response.set_cookie(COOKIE, session.id, httponly=True, secure=True, samesite="strict", path="/")


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")


async def logged_out(request: Request, login_path: str) -> Response:
    """End the request's session (its form checked like any change) and go to ``login_path``."""
    session = current_session(request)
    await checked_form(request, session)
    assert session is not None  # checked_form refuses a request without one
    web_of(request).sessions.end(session)
    response = redirect(login_path)
    clear_session_cookie(response)
    return response


# -- requests that change state -----------------------------------------------------------------


def _same_origin(request: Request) -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-site request (browsers send Origin on POST)
    if origin == "null":
        return False
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


async def checked_form(request: Request, session: Session | None) -> dict[str, str]:
    """The POSTed form of a request whose origin and CSRF token are right, else PageError 403.
    Field values are stripped of nothing but limited to ``MAX_FIELD`` characters."""
    if session is None:
        raise PageError(403, "Your session has ended. Reload the page and try again.")
    if not _same_origin(request):
        raise PageError(403, "Cross-site request refused.")
    raw = await request.form(max_files=0, max_fields=64)
    fields: dict[str, str] = {}
    for key, value in raw.multi_items():
        if not isinstance(value, str):
            raise PageError(400, "File uploads are not accepted here.")
        if len(value) > MAX_FIELD:
            raise PageError(400, "A field is too long.")
        if key in fields:  # repeated fields (checkbox groups) are joined by NUL
            fields[key] += "\0" + value
        else:
            fields[key] = value
    presented = fields.get("csrf") or request.headers.get("x-csrf-token")
    if not session.csrf_ok(presented):
        raise PageError(403, "The form has expired (missing or wrong CSRF token). Reload it.")
    return fields


def many(fields: dict[str, str], name: str) -> list[str]:
    """A repeated form field (checkboxes) as a list."""
    value = fields.get(name, "")
    return [v for v in value.split("\0") if v] if value else []


# -- rendering ------------------------------------------------------------------------------------


def render(
    request: Request,
    template: str,
    session: Session | None,
    *,
    status: int = 200,
    **values: Any,
) -> HTMLResponse:
    web = web_of(request)
    body = web.templates.get_template(template).render(
        session=session,
        csrf=session.csrf if session else "",
        request_path=request.url.path,
        **values,
    )
    response = HTMLResponse(body, status_code=status)
    if session is not None and request.cookies.get(COOKIE) != session.id:
        set_session_cookie(response, session)
    return response


def redirect(path: str, session: Session | None = None, request: Request | None = None) -> Response:
    """303 to a path of ours (never a value taken from the request)."""
    if not path.startswith("/") or path.startswith("//") or any(c in path for c in "\r\n\\"):
        raise PageError(400, "Refused an unsafe redirect.")
    response = RedirectResponse(path, status_code=303)
    if session is not None and (request is None or request.cookies.get(COOKIE) != session.id):
        set_session_cookie(response, session)
    return response


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    session = current_session(request)
    return render(
        request, "error.html", session, status=status, status_code=status, message=message
    )


def path_of(*parts: str) -> str:
    """A path of ours from fixed parts and names, each name percent-encoded."""
    return "/" + "/".join(quote(p, safe="@") for p in parts)


def page(
    handler: Callable[P, Awaitable[Response]],
) -> Callable[P, Awaitable[Response]]:
    """Turn PageError and our own errors (NotFound, Conflict, ReadOnlyDirectory …) raised by a
    page handler into an HTML error page with the REST API's status for the same error."""

    @functools.wraps(handler)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> Response:
        request = kwargs.get("request")
        assert isinstance(request, Request)
        try:
            return await handler(*args, **kwargs)
        except PageError as exc:
            return error_page(request, exc.status, str(exc))
        except IdsvcError as exc:
            status, _kind, title, detail = classify(exc)
            return error_page(request, status, detail or title)

    return wrapped


def api_context(request: Request) -> ApiContext:
    return context_of(request)
