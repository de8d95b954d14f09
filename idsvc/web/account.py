"""Self-service at ``/account``: a mailbox owner changes the password, manages app passwords,
enrols TOTP and sees recent logins.

Login is the mail password through the auth core (``idsvc.web.login``: penalties, no app
passwords, the TOTP code once enrolled). Every change goes through the same use cases as the CLI
and the REST API (``Provisioner.set_password`` with the password policy, ``AppPasswords``), with
the actor ``user:<address>`` in the audit trail. A password change needs the current password
(checked through the auth core again) and ends the account's other web sessions.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any

import segno
from fastapi import APIRouter, Request
from fastapi.responses import Response

from idsvc.api.security import client_key
from idsvc.audit import AuditEvent
from idsvc.errors import InvalidInput
from idsvc.model import ALL_SERVICES, Secret
from idsvc.web.core import (
    PageError,
    api_context,
    checked_form,
    current_session,
    logged_out,
    many,
    page,
    redirect,
    render,
    web_of,
)
from idsvc.web.login import check_password, factor_owner, password_login
from idsvc.web.second_factor import Owner, matching_step, new_secret, provisioning_uri
from idsvc.web.sessions import Session

router = APIRouter(prefix="/account", include_in_schema=False)
SERVICES = sorted(s.value for s in ALL_SERVICES)
RECENT = 20
MAX_EXPIRY_DAYS = 3650


def _user(request: Request) -> tuple[Session, str]:
    session = current_session(request)
    if session is None or session.kind != "account":
        raise PageError(401, "Please log in.")
    return session, session.user


async def _owner(request: Request, user: str) -> Owner:
    owner = await factor_owner(request, user)
    if owner is None:
        raise PageError(404, "Your account no longer exists.")
    return owner


def guarded(handler: Any) -> Any:
    """``page`` plus: without an account session, go to the login form."""
    inner = page(handler)

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Response:
        session = current_session(kwargs["request"])
        if session is None or session.kind != "account":
            return redirect("/account/login")
        result: Response = await inner(*args, **kwargs)
        return result

    return wrapped


def _actor(user: str) -> str:
    return f"user:{user}"


# -- login / logout -------------------------------------------------------------------------------


@router.get("/login")
@page
async def login_form(request: Request) -> Response:
    session = current_session(request) or web_of(request).sessions.new()
    return render(request, "account/login.html", session)


@router.post("/login")
@page
async def login(request: Request) -> Response:
    session = current_session(request)
    fields = await checked_form(request, session)
    assert session is not None
    try:
        user = await password_login(request, fields)
    except PageError as exc:
        if exc.status != 401:
            raise
        return render(request, "account/login.html", session, status=401, error=str(exc))
    fresh = web_of(request).sessions.rotate(session)
    fresh.kind, fresh.user = "account", user
    api_context(request).audit.emit(
        AuditEvent(
            "web.login",
            "ok",
            actor=_actor(user),
            target=user,
            remote=client_key(request),
            service="account",
        )
    )
    return redirect("/account", fresh)


@router.post("/logout")
@page
async def logout(request: Request) -> Response:
    return await logged_out(request, "/account/login")


# -- overview -------------------------------------------------------------------------------------


@router.get("")
@guarded
async def overview(request: Request) -> Response:
    session, user = _user(request)
    ctx = api_context(request)
    apps = [] if ctx.app_passwords is None else await ctx.app_passwords.list_of(user)
    factors = web_of(request).factors
    owner = await _owner(request, user) if factors is not None else None
    enrolled = factors is not None and owner is not None and await factors.enrolled(owner)
    left = await factors.recovery_left(owner) if factors and owner and enrolled else 0
    trail = await ctx.state.query_audit(target=user, limit=100)
    logins = [r for r in trail.items if r.action in ("auth", "web.login")][:RECENT]
    shown = list(session.flash)
    session.flash.clear()
    return render(
        request,
        "account/overview.html",
        session,
        user=user,
        apps=apps,
        app_passwords=ctx.app_passwords is not None,
        services=SERVICES,
        enrolled=enrolled,
        recovery_left=left,
        logins=logins,
        shown=shown,
        totp_available=factors is not None,
    )


# -- password -------------------------------------------------------------------------------------


@router.post("/password")
@guarded
async def change_password(request: Request) -> Response:
    session, user = _user(request)
    fields = await checked_form(request, session)
    if fields.get("new", "") != fields.get("confirm", ""):
        raise PageError(422, "The new password and its confirmation differ.")
    if await check_password(request, user, fields.get("current", "")) != user:
        raise PageError(403, "The current password is wrong.")
    ctx = api_context(request)
    await ctx.provisioner.set_password(user, Secret(fields.get("new", "")), actor=_actor(user))
    web_of(request).sessions.end_where(
        lambda s: s.kind == "account" and s.user == user and s.id != session.id
    )
    session.flash.append("Your password was changed. Other browsers were logged out.")
    return redirect("/account")


# -- app passwords --------------------------------------------------------------------------------


@router.post("/app-passwords")
@guarded
async def create_app_password(request: Request) -> Response:
    session, user = _user(request)
    fields = await checked_form(request, session)
    apps = api_context(request).app_passwords
    if apps is None:
        raise PageError(404, "App passwords are not enabled on this server.")
    days = fields.get("expires_days", "").strip()
    expires = None
    if days:
        if not days.isdigit() or not 1 <= int(days) <= MAX_EXPIRY_DAYS:
            raise InvalidInput(f"expiry must be 1 to {MAX_EXPIRY_DAYS} days")
        expires = datetime.now(UTC) + timedelta(days=int(days))
    networks = [n for n in fields.get("networks", "").replace(",", " ").split() if n]
    app, secret = await apps.create(
        user,
        fields.get("name", ""),
        actor=_actor(user),
        services=many(fields, "services"),
        networks=networks,
        expires=expires,
    )
    session.flash.append(f"New app password “{app.name}”: {secret}")
    return redirect("/account")


@router.post("/app-passwords/{app_id}/revoke")
@guarded
async def revoke_app_password(request: Request, app_id: str) -> Response:
    session, user = _user(request)
    await checked_form(request, session)
    apps = api_context(request).app_passwords
    if apps is None:
        raise PageError(404, "App passwords are not enabled on this server.")
    await apps.revoke(user, app_id, actor=_actor(user))
    return redirect("/account")


# -- TOTP -----------------------------------------------------------------------------------------


@router.get("/totp")
@guarded
async def totp_start(request: Request) -> Response:
    session, user = _user(request)
    if web_of(request).factors is None:
        raise PageError(404, "Two-factor login is not enabled on this server.")
    if not session.pending_totp:
        session.pending_totp = new_secret()
    issuer = api_context(request).settings.web.totp_issuer
    uri = provisioning_uri(session.pending_totp, user, issuer)
    qr = segno.make(uri, error="m").svg_inline(scale=5, title="QR code of the TOTP secret")
    return render(
        request, "account/totp.html", session, user=user, qr=qr, secret=session.pending_totp
    )


@router.post("/totp")
@guarded
async def totp_enrol(request: Request) -> Response:
    session, user = _user(request)
    fields = await checked_form(request, session)
    factors = web_of(request).factors
    if factors is None or not session.pending_totp:
        raise PageError(409, "Start the enrolment again.")
    step = matching_step(session.pending_totp, fields.get("code", ""))
    if step is None:
        raise PageError(422, "That code is not right. Check the time on your phone and retry.")
    codes = await factors.enrol(await _owner(request, user), session.pending_totp, step)
    session.pending_totp = ""
    api_context(request).audit.emit(
        AuditEvent("web.totp.enrol", "ok", actor=_actor(user), target=user)
    )
    return render(request, "account/recovery.html", session, user=user, codes=codes)


@router.post("/totp/remove")
@guarded
async def totp_remove(request: Request) -> Response:
    session, user = _user(request)
    fields = await checked_form(request, session)
    factors = web_of(request).factors
    if factors is None:
        raise PageError(404, "Two-factor login is not enabled on this server.")
    if await check_password(request, user, fields.get("current", "")) != user:
        raise PageError(403, "The current password is wrong.")
    await factors.remove(await _owner(request, user))
    api_context(request).audit.emit(
        AuditEvent("web.totp.remove", "ok", actor=_actor(user), target=user)
    )
    session.flash.append("Two-factor login is off.")
    return redirect("/account")
