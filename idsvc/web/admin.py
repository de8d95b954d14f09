"""The admin console at ``/admin``: domains, users, aliases, tokens and the audit trail.

Who may log in (docs/web.md): whoever holds an API token of scope ``admin``, ``domain_admin`` or
``read_only`` — by pasting the token, or as the directory user who *owns* such a token (``idsvc
token create --owner``), with the mail password (and the TOTP code once enrolled). A session
carries the token's id, never its secret; the token is looked up again on every request, so
revoking it ends the sessions that use it.

Authority is exactly the REST API's: :class:`idsvc.api.security.Principal` decides, so a domain
admin sees only its domains, a foreign domain's page answers 404 like an absent one, and a
mailbox that outranks the caller cannot be changed. Every write goes through the provisioning use
cases with the revision the form was rendered from (the ETag): when someone else changed the
object meanwhile, the write is refused with a conflict page instead of overwriting their change.
Lists are paged in the directory (a page at a time, prefix search), never loaded whole.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from idsvc.api.common import slice_names
from idsvc.api.security import Principal, client_key, ensure_not_outranked, import_role
from idsvc.audit import AuditEvent
from idsvc.errors import Conflict, InvalidInput, NotFound
from idsvc.model import ALL_SERVICES, Address, Secret, canonical_alias_source, canonical_domain
from idsvc.state import Scope, TokenInfo, check_scope, create_token
from idsvc.web.core import (
    PageError,
    api_context,
    checked_form,
    current_session,
    logged_out,
    many,
    page,
    path_of,
    redirect,
    render,
    web_of,
)
from idsvc.web.login import password_login
from idsvc.web.sessions import Session

router = APIRouter(prefix="/admin", include_in_schema=False)
PAGE_SIZE = 50
SERVICES = sorted(s.value for s in ALL_SERVICES)
CONFLICT = (
    "Someone else changed this object after you opened the page. Nothing was saved. "
    "Reload to see the current values and apply your change again."
)


async def _principal(request: Request) -> tuple[Session, Principal]:
    """The admin session's principal, or PageError (the handler redirects to the login)."""
    session = current_session(request)
    if session is None or session.kind != "admin":
        raise _LoginNeeded
    state = api_context(request).state
    try:
        info = await state.get_token(session.token_id)
    except NotFound:
        info = None
    if info is None or not info.active:
        web_of(request).sessions.end(session)
        raise _LoginNeeded
    return session, Principal(info, client_key(request))


class _LoginNeeded(PageError):
    def __init__(self) -> None:
        super().__init__(401, "Please log in.")


def _int(fields: dict[str, str], name: str, default: int | None = None) -> int:
    text = fields.get(name, "").strip()
    if not text and default is not None:
        return default
    if not text.isdigit() or len(text) > 19:
        raise InvalidInput(f"{name} must be a whole number")
    return int(text)


def _words(text: str) -> list[str]:
    """A comma- or space-separated list from a text field."""
    return [w for w in text.replace(",", " ").split() if w]


def _revision(fields: dict[str, str]) -> int:
    return _int(fields, "revision")


def _read_only(request: Request) -> bool:
    from idsvc.directory.ldap.corporate import CorporateDirectory

    return isinstance(api_context(request).runtime.directory, CorporateDirectory)


async def _conflicting(write: Any) -> Any:
    try:
        return await write
    except Conflict as exc:
        raise PageError(409, CONFLICT) from exc


def _view(
    request: Request, template: str, session: Session, who: Principal, **values: Any
) -> Response:
    return render(
        request,
        template,
        session,
        who=who,
        read_only=_read_only(request),
        status=values.pop("status", 200),
        **values,
    )


def guarded(handler: Any) -> Any:
    """``page`` plus: no admin session, or one whose token was revoked, goes to the login."""
    inner = page(handler)

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Response:
        session = current_session(kwargs["request"])
        if session is None or session.kind != "admin":
            return redirect("/admin/login")
        result: Response = await inner(*args, **kwargs)
        return redirect("/admin/login") if result.status_code == 401 else result

    return wrapped


# -- login / logout -------------------------------------------------------------------------------


@router.get("/login")
@page
async def login_form(request: Request) -> Response:
    session = current_session(request)
    if session is None:
        session = web_of(request).sessions.new()
    return render(request, "admin/login.html", session)


@router.post("/login")
@page
async def login(request: Request) -> Response:
    web = web_of(request)
    session = current_session(request)
    fields = await checked_form(request, session)
    assert session is not None
    state = api_context(request).state
    info: TokenInfo | None = None
    user = ""
    if fields.get("token"):
        info = await state.verify_token(fields["token"].strip())
        if info is None:
            wait = api_context(request).token_failures.take(client_key(request))
            message = "Too many failed attempts; wait and retry." if wait else "Login failed."
            return render(request, "admin/login.html", session, status=401, error=message)
    else:
        user = await password_login(request, fields)  # PageError on failure (penalties apply)
        info = _widest(await state.tokens_of_owner(user))
        if info is None:
            return render(request, "admin/login.html", session, status=401, error="Login failed.")
    fresh = web.sessions.rotate(session)
    fresh.kind, fresh.token_id, fresh.user = "admin", info.id, user
    api_context(request).audit.emit(
        AuditEvent(
            "web.login",
            "ok",
            actor=info.actor,
            target=user or f"token:{info.id}",
            remote=client_key(request),
            service="admin",
        )
    )
    return redirect("/admin/domains", fresh)


def _widest(tokens: list[TokenInfo]) -> TokenInfo | None:
    """The owned token with the most authority: admin, then the domain admin token over the
    most domains, then read-only."""
    rank = {Scope.ADMIN: 3, Scope.DOMAIN_ADMIN: 2, Scope.READ_ONLY: 1}
    live = [t for t in tokens if t.active]
    if not live:
        return None
    return max(live, key=lambda t: (rank[t.scope], not t.domains, len(t.domains), t.id))


@router.post("/logout")
@page
async def logout(request: Request) -> Response:
    return await logged_out(request, "/admin/login")


@router.get("")
async def home(request: Request) -> Response:
    return redirect("/admin/domains")


# -- domains --------------------------------------------------------------------------------------


@router.get("/domains")
@guarded
async def domains(request: Request, prefix: str = "", cursor: str | None = None) -> Response:
    session, who = await _principal(request)
    prov = api_context(request).provisioner
    prefix = prefix.strip().lower()[:256]
    if who.all_domains:
        result = await prov.list_domains(prefix=prefix, cursor=cursor, limit=PAGE_SIZE)
        items, next_cursor = result.items, result.next_cursor
    else:
        names, next_cursor = slice_names(who.domains, prefix=prefix, cursor=cursor, limit=PAGE_SIZE)
        items = []
        for name in names:
            with contextlib.suppress(NotFound):
                items.append(await prov.get_domain(name))
    return _view(
        request,
        "admin/domains.html",
        session,
        who,
        domains=items,
        prefix=prefix,
        next_cursor=next_cursor,
    )


@router.post("/domains")
@guarded
async def create_domain(request: Request) -> Response:
    session, who = await _principal(request)
    fields = await checked_form(request, session)
    who.require_admin()
    name = canonical_domain(fields.get("name", ""))
    await api_context(request).provisioner.create_domain(
        name,
        actor=who.actor,
        default_quota=_int(fields, "default_quota", 0),
        description=fields.get("description", ""),
    )
    return redirect(path_of("admin", "domains", name))


@router.get("/domains/{domain}")
@guarded
async def domain_page(
    request: Request, domain: str, prefix: str = "", cursor: str | None = None
) -> Response:
    session, who = await _principal(request)
    name = canonical_domain(domain)
    who.readable(name, f"domain {name} does not exist")
    prov = api_context(request).provisioner
    found = await prov.get_domain(name)
    prefix = prefix.strip().lower()[:256]
    users = await prov.list_users(name, prefix=prefix, cursor=cursor, limit=PAGE_SIZE)
    return _view(
        request,
        "admin/domain.html",
        session,
        who,
        domain=found,
        users=users.items,
        prefix=prefix,
        next_cursor=users.next_cursor,
        services=SERVICES,
        writable=who.can_write(name),
    )


@router.post("/domains/{domain}")
@guarded
async def update_domain(request: Request, domain: str) -> Response:
    session, who = await _principal(request)
    fields = await checked_form(request, session)
    name = canonical_domain(domain)
    who.writable(name, f"domain {name} does not exist")
    await _conflicting(
        api_context(request).provisioner.update_domain(
            name,
            actor=who.actor,
            if_revision=_revision(fields),
            enabled="enabled" in fields,
            default_quota=_int(fields, "default_quota", 0),
            description=fields.get("description", ""),
            alias_domains=_words(fields.get("alias_domains", "")) if who.is_admin else None,
        )
    )
    return redirect(path_of("admin", "domains", name))


@router.post("/domains/{domain}/users")
@guarded
async def create_user(request: Request, domain: str) -> Response:
    session, who = await _principal(request)
    fields = await checked_form(request, session)
    name = canonical_domain(domain)
    who.writable(name, f"domain {name} does not exist")
    address = Address.parse(fields.get("local", "").strip(), default_domain=name)
    if address.domain != name:
        raise InvalidInput("the address must be in this domain")
    quota = fields.get("quota", "").strip()
    account = await api_context(request).provisioner.create_user(
        str(address),
        actor=who.actor,
        password=Secret(fields.get("password", "")),
        role=import_role(who),
        display_name=fields.get("display_name", ""),
        quota=int(quota) if quota.isdigit() else None,
        services=many(fields, "services") or None,
    )
    return redirect(path_of("admin", "users", str(account.address)))


# -- users ----------------------------------------------------------------------------------------


async def _visible_user(request: Request, who: Principal, address: str) -> Any:
    parsed = Address.parse(address)
    who.readable(parsed.domain, f"user {parsed} does not exist")
    return await api_context(request).provisioner.get_user(str(parsed))


async def _writable_user(request: Request, who: Principal, address: str) -> Any:
    account = await _visible_user(request, who, address)
    who.writable(account.address.domain, f"user {account.address} does not exist")
    await ensure_not_outranked(request, who, str(account.address))
    return account


@router.get("/users/{address}")
@guarded
async def user_page(request: Request, address: str) -> Response:
    session, who = await _principal(request)
    account = await _visible_user(request, who, address)
    return _view(
        request,
        "admin/user.html",
        session,
        who,
        account=account,
        services=SERVICES,
        writable=who.can_write(account.address.domain),
    )


@router.post("/users/{address}")
@guarded
async def update_user(request: Request, address: str) -> Response:
    session, who = await _principal(request)
    fields = await checked_form(request, session)
    account = await _writable_user(request, who, address)
    await _conflicting(
        api_context(request).provisioner.update_user(
            str(account.address),
            actor=who.actor,
            if_revision=_revision(fields),
            display_name=fields.get("display_name", ""),
            enabled="enabled" in fields,
            quota=_int(fields, "quota", 0),
            services=many(fields, "services"),
        )
    )
    return redirect(path_of("admin", "users", str(account.address)))


@router.post("/users/{address}/password")
@guarded
async def set_password(request: Request, address: str) -> Response:
    session, who = await _principal(request)
    fields = await checked_form(request, session)
    account = await _writable_user(request, who, address)
    await _conflicting(
        api_context(request).provisioner.set_password(
            str(account.address),
            Secret(fields.get("password", "")),
            actor=who.actor,
            if_revision=_revision(fields),
        )
    )
    session.flash.append("Password changed.")
    return redirect(path_of("admin", "users", str(account.address)))


@router.post("/users/{address}/delete")
@guarded
async def delete_user(request: Request, address: str) -> Response:
    session, who = await _principal(request)
    fields = await checked_form(request, session)
    account = await _writable_user(request, who, address)
    if account.revision != _revision(fields):
        raise PageError(409, CONFLICT)
    await api_context(request).provisioner.delete_user(str(account.address), actor=who.actor)
    return redirect(path_of("admin", "domains", account.address.domain))


# -- aliases --------------------------------------------------------------------------------------


def _alias_domain(source: str) -> str:
    return source.rpartition("@")[2]


@router.get("/domains/{domain}/aliases")
@guarded
async def aliases(
    request: Request, domain: str, prefix: str = "", cursor: str | None = None
) -> Response:
    session, who = await _principal(request)
    name = canonical_domain(domain)
    who.readable(name, f"domain {name} does not exist")
    prov = api_context(request).provisioner
    await prov.get_domain(name)
    found = await prov.list_aliases(name, prefix=prefix[:256], cursor=cursor, limit=PAGE_SIZE)
    return _view(
        request,
        "admin/aliases.html",
        session,
        who,
        domain=name,
        aliases=found.items,
        prefix=prefix,
        next_cursor=found.next_cursor,
        writable=who.can_write(name),
    )


@router.post("/domains/{domain}/aliases")
@guarded
async def create_alias(request: Request, domain: str) -> Response:
    session, who = await _principal(request)
    fields = await checked_form(request, session)
    name = canonical_domain(domain)
    who.writable(name, f"domain {name} does not exist")
    local = fields.get("source", "").strip()
    source = canonical_alias_source(f"{local}@{name}" if "@" not in local else local)
    if _alias_domain(source) != name:
        raise InvalidInput("the alias must be in this domain")
    destinations = _words(fields.get("destinations", ""))
    await api_context(request).provisioner.create_alias(source, destinations, actor=who.actor)
    return redirect(path_of("admin", "domains", name, "aliases"))


@router.post("/aliases/{source}/delete")
@guarded
async def delete_alias(request: Request, source: str) -> Response:
    session, who = await _principal(request)
    await checked_form(request, session)
    canonical = canonical_alias_source(source)
    name = _alias_domain(canonical)
    who.writable(name, f"alias {canonical} does not exist")
    await api_context(request).provisioner.delete_alias(canonical, actor=who.actor)
    return redirect(path_of("admin", "domains", name, "aliases"))


# -- tokens ---------------------------------------------------------------------------------------


@router.get("/tokens")
@guarded
async def tokens(request: Request, cursor: str | None = None) -> Response:
    session, who = await _principal(request)
    who.require_writer()
    found = await api_context(request).state.list_tokens(
        cursor=cursor, limit=PAGE_SIZE, where=who.covers
    )
    shown = list(session.flash)
    session.flash.clear()
    return _view(
        request,
        "admin/tokens.html",
        session,
        who,
        tokens=found.items,
        next_cursor=found.next_cursor,
        created=shown,
    )


@router.post("/tokens")
@guarded
async def create_token_page(request: Request) -> Response:
    session, who = await _principal(request)
    fields = await checked_form(request, session)
    who.require_writer()
    domains = _words(fields.get("domains", ""))
    scope, canonical = check_scope(fields.get("scope", ""), domains)
    wanted = TokenInfo("0" * 16, "wanted", scope, canonical, None, who.token.created, "")
    if not who.covers(wanted):
        raise PageError(403, "A token cannot grant more than the token that creates it.")
    owner_text = fields.get("owner", "").strip()
    owner = Address.parse(owner_text) if owner_text else None
    if owner is not None and not who.can_write(owner.domain):
        raise PageError(403, "The owner must be a mailbox in a domain you administer.")
    ctx = api_context(request)
    _info, secret = await create_token(
        ctx.state,
        name=fields.get("name", ""),
        scope=scope,
        domains=canonical,
        owner=None if owner is None else str(owner),
        created_by=who.actor,
        audit=ctx.audit,
    )
    session.flash.append(secret)  # shown once, on the next page
    return redirect("/admin/tokens")


@router.post("/tokens/{token_id}/revoke")
@guarded
async def revoke_token(request: Request, token_id: str) -> Response:
    session, who = await _principal(request)
    await checked_form(request, session)
    who.require_writer()
    ctx = api_context(request)
    info = await ctx.state.get_token(token_id)
    if not who.covers(info):
        raise NotFound("token does not exist")
    await ctx.state.revoke_token(info.id)
    ctx.audit.emit(AuditEvent("token.revoke", "ok", actor=who.actor, target=f"token:{info.id}"))
    return redirect("/admin/tokens")


# -- audit ----------------------------------------------------------------------------------------


@router.get("/audit")
@guarded
async def audit(request: Request, cursor: str | None = None) -> Response:
    session, who = await _principal(request)
    domains = None if who.all_domains else list(who.domains)
    found = await api_context(request).state.query_audit(
        domains=domains, cursor=cursor, limit=PAGE_SIZE
    )
    return _view(
        request,
        "admin/audit.html",
        session,
        who,
        records=found.items,
        next_cursor=found.next_cursor,
    )
