"""nginx mail ``auth_http``: nginx asks before it proxies an IMAP/POP3/SMTP login (protocols.md §7).

What it does: :func:`parse_auth_request` turns nginx's request headers into an
:class:`NginxAuth` (``Auth-User`` and ``Auth-Pass`` are percent-decoded, then strict UTF-8);
:func:`reply_headers` maps an auth ``Outcome`` to nginx's response headers (one table per
protocol); :class:`NginxAuthHandler` ties both to the ``Authenticator``.

Outcome → reply:

* OK → ``Auth-Status: OK``, ``Auth-Server``/``Auth-Port`` from ``<protocol>_backend`` and
  ``Auth-User`` = the canonical account (nginx logs in to the backend with it and the password
  the client gave). A protocol without a backend is a temporary failure (configuration).
* every definite failure (wrong password, unknown user, disabled, expired, refused input) → one
  text per protocol, so clients cannot tell them apart; ``Auth-Wait: retry_wait`` lets an IMAP or
  POP3 client retry in the same session until ``Auth-Login-Attempt`` reaches ``max_attempts``,
  then nginx closes. The Authenticator's failure delay and penalty have already been slept
  before we answer, so ``Auth-Wait`` only adds the in-session pause.
* TEMPFAIL → a "try again later" text (``451 4.3.0`` for SMTP) with ``Auth-Wait:
  tempfail_wait`` for IMAP/POP3.
* SMTP never gets ``Auth-Wait`` (an SMTP client does not retry in-session, and nginx up to
  1.29.0 had CVE-2025-53859 in that path); it gets ``Auth-Error-Code``.

What it does not do: verify APOP/CRAM-MD5 digests (no cleartext to check: refused), route
unauthenticated SMTP (``Auth-Method: none``; refused with ``530 5.7.0``), or pick a backend per
user (one backend per protocol).

How it fails: a missing or malformed header gets a refusal without ``Auth-Wait`` (nginx closes
the client) and is logged without its value; nothing is sent to nginx that contains CR or LF.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from idsvc.auth.inputs import sanitize
from idsvc.auth.request import Authenticating, AuthRequest, Outcome
from idsvc.config import NginxAuthSettings
from idsvc.model import Secret
from idsvc.wire.listen import Peer
from idsvc.wire.mailhttp.protocol import HttpRequest
from idsvc.wire.mailhttp.server import HttpResponse

log = logging.getLogger(__name__)

PROTOCOLS = ("imap", "pop3", "smtp")
MAX_ATTEMPT = 1_000_000
MAX_FIELD = 4096  # escaped Auth-User / Auth-Pass

# protocol -> (Auth-Status text, Auth-Error-Code or None)
FAILED = {
    "imap": ("[AUTHENTICATIONFAILED] Authentication failed.", None),
    "pop3": ("[AUTH] Authentication failed.", None),
    "smtp": ("Authentication credentials invalid", "535 5.7.8"),
}
TEMPORARY = {
    "imap": ("[UNAVAILABLE] Temporary authentication failure, try again later.", None),
    "pop3": ("[SYS/TEMP] Temporary authentication failure, try again later.", None),
    "smtp": ("Temporary authentication failure, try again later", "451 4.3.0"),
}
UNSUPPORTED = {
    "imap": ("[AUTHENTICATIONFAILED] Unsupported authentication mechanism.", None),
    "pop3": ("[AUTH] Unsupported authentication mechanism.", None),
    "smtp": ("Authentication required", "530 5.7.0"),
}


class NginxRequestError(ValueError):
    """nginx's request lacks a header or carries a malformed one (message names the header)."""


@dataclass(frozen=True, slots=True)
class NginxAuth:
    method: str  # plain, apop, cram-md5, external, none
    protocol: str  # imap, pop3, smtp
    user: str
    password: Secret
    attempt: int
    client_ip: str | None
    secured: bool


def _decoded(request: HttpRequest, name: str) -> str:
    raw = request.header(name)
    if raw is None:
        raise NginxRequestError(f"missing {name}")
    if len(raw) > MAX_FIELD:
        raise NginxRequestError(f"{name} too long")
    try:
        return unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
    except UnicodeDecodeError:
        raise NginxRequestError(f"{name} is not UTF-8") from None


def parse_auth_request(request: HttpRequest) -> NginxAuth:
    """The login nginx asks about; raises NginxRequestError for missing/malformed headers."""
    method = (request.header("Auth-Method") or "").lower()
    if not method:
        raise NginxRequestError("missing Auth-Method")
    protocol = (request.header("Auth-Protocol") or "").lower()
    if protocol not in PROTOCOLS:
        raise NginxRequestError("missing or unknown Auth-Protocol")
    attempt_text = request.header("Auth-Login-Attempt") or "1"
    if not attempt_text.isascii() or not attempt_text.isdigit() or len(attempt_text) > 7:
        raise NginxRequestError("malformed Auth-Login-Attempt")
    client_ip = request.header("Client-IP")
    if client_ip is not None:
        try:
            client_ip = str(ipaddress.ip_address(client_ip))
        except ValueError:
            raise NginxRequestError("malformed Client-IP") from None
    user = _decoded(request, "Auth-User") if method != "none" else ""
    password = _decoded(request, "Auth-Pass") if method != "none" else ""
    return NginxAuth(
        method=method,
        protocol=protocol,
        user=user,
        password=Secret(password),
        attempt=max(1, int(attempt_text)),
        client_ip=client_ip,
        secured=(request.header("Auth-SSL") or "").lower() == "on",
    )


def reply_headers(
    outcome: Outcome,
    protocol: str,
    settings: NginxAuthSettings,
    *,
    attempt: int = 1,
    user: str | None = None,
) -> list[tuple[str, str]]:
    """nginx's answer for ``outcome`` (pure)."""
    if outcome is Outcome.OK:
        backend = getattr(settings, f"{protocol}_backend", None)
        if backend is not None and user is not None:
            host, _, port = backend.rpartition(":")
            return [
                ("Auth-Status", "OK"),
                ("Auth-Server", host.strip("[]")),
                ("Auth-Port", port),
                ("Auth-User", user),
            ]
        log.error("nginx_auth: no %s_backend configured; answering a temporary failure", protocol)
        outcome = Outcome.TEMPFAIL
    if outcome is Outcome.TEMPFAIL:
        text, code = TEMPORARY.get(protocol, TEMPORARY["imap"])
        wait = settings.tempfail_wait
    else:
        text, code = FAILED.get(protocol, FAILED["imap"])
        wait = settings.retry_wait if attempt < settings.max_attempts else 0
    headers = [("Auth-Status", text)]
    if code is not None:
        headers.append(("Auth-Error-Code", code))
    elif wait > 0:
        headers.append(("Auth-Wait", str(wait)))
    return headers


def refusal_headers(
    table: dict[str, tuple[str, str | None]], protocol: str
) -> list[tuple[str, str]]:
    """A final refusal (no ``Auth-Wait``: nginx closes the client's session)."""
    text, code = table.get(protocol, table["imap"])
    headers = [("Auth-Status", text)]
    if code is not None:
        headers.append(("Auth-Error-Code", code))
    return headers


class NginxAuthHandler:
    """``GET /auth``: ask the Authenticator, answer with nginx's headers (always status 200)."""

    def __init__(self, settings: NginxAuthSettings, authenticator: Authenticating) -> None:
        self.settings = settings
        self.authenticator = authenticator

    async def __call__(self, request: HttpRequest, peer: Peer) -> HttpResponse:
        try:
            auth = parse_auth_request(request)
        except NginxRequestError as exc:
            protocol = (request.header("Auth-Protocol") or "imap").lower()
            log.warning("nginx_auth: bad request from %s: %s", peer, exc)
            return HttpResponse(400, refusal_headers(TEMPORARY, protocol))
        if auth.method != "plain":
            log.info("nginx_auth: Auth-Method %s refused", sanitize(auth.method, 16))
            return HttpResponse(200, refusal_headers(UNSUPPORTED, auth.protocol))
        result = await self.authenticator.authenticate(
            AuthRequest(
                login=auth.user,
                password=auth.password,
                service=auth.protocol,
                remote_ip=auth.client_ip,
                secured=auth.secured,
                mechanism="PLAIN",
                protocol="nginx",
            )
        )
        headers = reply_headers(
            result.outcome, auth.protocol, self.settings, attempt=auth.attempt, user=result.user
        )
        return HttpResponse(200, headers)
