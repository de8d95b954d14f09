"""SCIM 2.0 endpoints under ``/scim/v2``: discovery, ``/Users`` and ``/Groups``.

Authentication and scopes are the REST API's (``idsvc.api.security``): the same bearer tokens; a
``domain_admin`` sees and changes only users and groups of its domains (others answer 404 like
absent ones); ``read_only`` tokens may only read. Every write goes through the ``Provisioner``
(audit, cache invalidation, hashing) with the token as actor.

Listings: ``startIndex`` (1-based) and ``count`` (capped at ``MAX_COUNT``). ``userName eq``,
``id eq``, ``externalId eq`` and ``emails… eq`` conjuncts use an index; any other filter scans
at most ``MAX_SCAN`` objects and answers ``400 tooMany`` beyond that.

How it fails: every error is a SCIM error document (``idsvc.api.scim.http``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Request, Response

from idsvc.api.context import context_of
from idsvc.api.problems import PreconditionFailed
from idsvc.api.scim import filter as scim_filter
from idsvc.api.scim import patch, resources
from idsvc.api.scim.http import PREFIX, ScimError, ScimRoute, scim_json
from idsvc.api.scim.schemas import (
    DEFAULT_COUNT,
    GROUP,
    LIST_RESPONSE,
    MAX_COUNT,
    RESOURCES,
    SCHEMAS,
    SEARCH_REQUEST,
    USER,
    service_provider_config,
)
from idsvc.api.scim.store import ScimStore
from idsvc.api.security import Principal, authenticate, ensure_not_outranked
from idsvc.errors import Conflict, InvalidInput, NotFound
from idsvc.model import (
    Account,
    Address,
    Alias,
    Page,
    Secret,
    canonical_alias_source,
    utcnow,
)
from idsvc.provisioning import Provisioner

MAX_SCAN = 10_000
SCAN_PAGE = 1000
CASE_EXACT = frozenset({"id", "externalid", "$ref"})
MAX_QUERY = 1024
T = TypeVar("T")

router = APIRouter(
    prefix=PREFIX,
    route_class=ScimRoute,
    include_in_schema=False,
    dependencies=[Depends(authenticate)],
)
Caller = Annotated[Principal, Depends(authenticate)]


# -- plumbing -----------------------------------------------------------------------------------


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


def store_of(request: Request) -> ScimStore:
    app_state = request.app.state
    store = getattr(app_state, "scim_store", None)
    if not isinstance(store, ScimStore):
        ctx = context_of(request)
        store = ScimStore(ctx.state.path.parent / "scim.db")
        app_state.scim_store = store
    return store


def prov_of(request: Request) -> Provisioner:
    return context_of(request).provisioner


async def json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise ScimError(400, "the body is not valid JSON", "invalidSyntax") from None


def _int_param(value: str | int | None, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if not text.lstrip("-").isdigit() or len(text) > 12:
        raise ScimError(400, f"{name} must be an integer", "invalidValue")
    return int(text)


def _check_if_match(request: Request, current: str) -> None:
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return
    if len(header) > MAX_QUERY or current not in {t.strip() for t in header.split(",")}:
        raise PreconditionFailed("the resource has changed; fetch it again (ETag)")


def _uid(text: str) -> Address:
    try:
        return Address.parse(text)
    except InvalidInput:
        raise NotFound("no such user") from None


def _gid(text: str) -> str:
    try:
        return canonical_alias_source(text)
    except InvalidInput:
        raise NotFound("no such group") from None


# -- discovery ----------------------------------------------------------------------------------


@router.get("/ServiceProviderConfig")
async def get_spc(request: Request) -> Response:
    return scim_json(service_provider_config(base_url(request)))


def _list(items: list[dict[str, Any]], total: int, start: int) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(items),
        "Resources": items,
    }


@router.get("/ResourceTypes")
async def list_resource_types(request: Request) -> Response:
    docs = [r.document(base_url(request)) for r in RESOURCES.values()]
    return scim_json(_list(docs, len(docs), 1))


@router.get("/ResourceTypes/{name}")
async def get_resource_type(request: Request, name: str) -> Response:
    spec = RESOURCES.get(name)
    if spec is None:
        raise NotFound("no such resource type")
    return scim_json(spec.document(base_url(request)))


@router.get("/Schemas")
async def list_schemas(request: Request) -> Response:
    docs = [s.document(base_url(request)) for s in SCHEMAS.values()]
    return scim_json(_list(docs, len(docs), 1))


@router.get("/Schemas/{urn}")
async def get_schema(request: Request, urn: str) -> Response:
    schema = SCHEMAS.get(urn)
    if schema is None:
        raise NotFound("no such schema")
    return scim_json(schema.document(base_url(request)))


# -- users --------------------------------------------------------------------------------------


async def _user_doc(request: Request, account: Account) -> dict[str, Any]:
    row = await store_of(request).get_user(str(account.address), account.created.isoformat())
    return resources.user_resource(account, row, base_url(request))


async def _visible_user(request: Request, caller: Principal, uid: str) -> Account:
    address = _uid(uid)
    caller.readable(address.domain, f"user {address} does not exist")
    return await prov_of(request).get_user(str(address))


async def _writable_user(request: Request, caller: Principal, uid: str) -> Account:
    account = await _visible_user(request, caller, uid)
    caller.writable(account.address.domain, f"user {account.address} does not exist")
    await ensure_not_outranked(request, caller, str(account.address))
    return account


def _doc_response(
    request: Request, doc: dict[str, Any], status: int = 200, *, location: bool = False
) -> Response:
    include = resources.attribute_list(request.query_params.get("attributes"))
    exclude = resources.attribute_list(request.query_params.get("excludedAttributes"))
    headers = {"ETag": doc["meta"]["version"]}
    if location:
        headers["Location"] = doc["meta"]["location"]
    return scim_json(resources.project(doc, include, exclude), status, headers)


@router.get("/Users/{uid}")
async def get_user(request: Request, uid: str, caller: Caller) -> Response:
    account = await _visible_user(request, caller, uid)
    return _doc_response(request, await _user_doc(request, account))


@router.post("/Users")
async def create_user(request: Request, caller: Caller) -> Response:
    parts = resources.split_user(resources.normalise_user(await json_body(request)))
    if not parts.user_name:
        raise ScimError(400, "userName (the mail address) is required", "invalidValue")
    address = Address.parse(parts.user_name)
    caller.require_writer()
    caller.writable(address.domain, f"domain {address.domain} is not hosted here")
    prov = prov_of(request)
    try:
        await prov.get_domain(address.domain)
    except NotFound:
        raise ScimError(
            400, f"domain {address.domain} is not hosted here", "invalidValue"
        ) from None
    # without a password the account gets an unguessable one: no login until one is set
    password = parts.password or secrets.token_urlsafe(32)
    account = await prov.create_user(
        str(address),
        actor=caller.actor,
        password=Secret(password),
        display_name=parts.display_name,
        enabled=True if parts.active is None else parts.active,
    )
    await _save_user_row(request, account, parts)
    return _doc_response(request, await _user_doc(request, account), 201, location=True)


async def _save_user_row(request: Request, account: Account, parts: resources.UserParts) -> None:
    await store_of(request).put_user(
        str(account.address),
        account.created.isoformat(),
        parts.external_id,
        parts.data,
        parts.emails,
    )


async def _apply_user(
    request: Request,
    caller: Principal,
    current: Account,
    before: dict[str, Any],
    after: dict[str, Any],
) -> Account:
    """Write the differences between two normalised User states."""
    parts = resources.split_user(after)
    old = resources.split_user(before)
    if parts.user_name is None or Address.parse(parts.user_name) != current.address:
        raise ScimError(400, "userName is the mailbox address and cannot change", "mutability")
    prov = prov_of(request)
    key = str(current.address)
    revision = current.revision if request.headers.get("if-match") else None
    account = current

    async def now() -> int:
        return (await prov.get_user(key)).revision

    async def guarded(write: Callable[[], Awaitable[Account]]) -> Account:
        try:
            return await write()
        except Conflict:
            if revision is not None and await now() != revision:
                raise PreconditionFailed("the resource has changed; fetch it again") from None
            raise

    active = parts.active if parts.active is not None else current.enabled
    if parts.display_name != current.display_name or active != current.enabled:
        account = await guarded(
            lambda: prov.update_user(
                key,
                actor=caller.actor,
                if_revision=revision,
                display_name=parts.display_name,
                enabled=active,
            )
        )
        revision = None if revision is None else account.revision
    if parts.password is not None:
        password = parts.password
        account = await guarded(
            lambda: prov.set_password(
                key, Secret(password), actor=caller.actor, if_revision=revision
            )
        )
    if (parts.external_id, parts.data) != (old.external_id, old.data):
        await _save_user_row(request, account, parts)
    return account


@router.put("/Users/{uid}")
async def replace_user(request: Request, uid: str, caller: Caller) -> Response:
    current = await _writable_user(request, caller, uid)
    before_doc = await _user_doc(request, current)
    _check_if_match(request, before_doc["meta"]["version"])
    after = resources.normalise_user(await json_body(request))
    before = resources.normalise_user(resources.user_state(before_doc))
    account = await _apply_user(request, caller, current, before, after)
    return _doc_response(request, await _user_doc(request, account))


@router.patch("/Users/{uid}")
async def patch_user(request: Request, uid: str, caller: Caller) -> Response:
    current = await _writable_user(request, caller, uid)
    before_doc = await _user_doc(request, current)
    _check_if_match(request, before_doc["meta"]["version"])
    operations = patch.parse_operations(await json_body(request))
    before = resources.normalise_user(resources.user_state(before_doc))
    after = patch.apply(USER, before, operations)
    if "active" not in after:
        raise ScimError(400, "active cannot be removed; replace it with false", "mutability")
    account = await _apply_user(request, caller, current, before, after)
    return _doc_response(request, await _user_doc(request, account))


@router.delete("/Users/{uid}")
async def delete_user(request: Request, uid: str, caller: Caller) -> Response:
    current = await _writable_user(request, caller, uid)
    _check_if_match(request, (await _user_doc(request, current))["meta"]["version"])
    await prov_of(request).delete_user(str(current.address), actor=caller.actor)
    await store_of(request).delete_user(str(current.address))
    return Response(status_code=204)


# -- listing ------------------------------------------------------------------------------------


def _domains(caller: Principal) -> list[str | None]:
    if caller.all_domains:
        return [None]
    return list(sorted(caller.domains))


async def _scan(
    caller: Principal,
    need: int,
    list_page: Callable[[str | None, str | None], Awaitable[Page[T]]],
) -> tuple[list[T], int]:
    """Objects visible to ``caller`` (domain by domain, each in listing order; one global order
    for a token that sees every domain): the first ``need`` and the total.
    ``list_page(domain, cursor)`` returns one page of users or aliases."""
    items: list[T] = []
    total = 0
    for domain in _domains(caller):
        cursor: str | None = None
        first = True
        while True:
            try:
                page = await list_page(domain, cursor)
            except NotFound:
                break
            if first:
                total += page.total if page.total is not None else 0
                first = False
            items.extend(page.items[: max(need - len(items), 0)])
            cursor = page.next_cursor
            if cursor is None or len(items) >= need:
                break
    return items, total


async def _scan_users(prov: Provisioner, caller: Principal, need: int) -> tuple[list[Account], int]:
    return await _scan(
        caller, need, lambda domain, cursor: prov.list_users(domain, cursor=cursor, limit=SCAN_PAGE)
    )


async def _scan_aliases(prov: Provisioner, caller: Principal, need: int) -> tuple[list[Alias], int]:
    return await _scan(
        caller,
        need,
        lambda domain, cursor: prov.list_aliases(domain, cursor=cursor, limit=SCAN_PAGE),
    )


async def _user_candidates(
    request: Request, caller: Principal, node: scim_filter.Filter
) -> list[Account] | None:
    """Accounts an indexed equality narrows the filter to, or None when a scan is needed."""
    prov = prov_of(request)
    store = store_of(request)
    for path, value in scim_filter.equalities(node):
        if not isinstance(value, str):
            continue
        if path in ("username", "id"):
            keys = [value]
        elif path == "externalid":
            keys = await store.users_by_external_id(value)
        elif path in ("emails", "emails.value"):
            keys = await store.users_by_email(value)
        else:
            continue
        found: list[Account] = []
        for key in keys:
            try:
                address = Address.parse(key)
            except InvalidInput:
                continue
            if not caller.can_read(address.domain):
                continue
            account = await prov.directory.find_account(address)
            if account is not None:
                found.append(account)
        return found
    return None


async def _page_params(request: Request, body: dict[str, Any] | None) -> dict[str, Any]:
    q = request.query_params if body is None else body
    params = {
        "filter": q.get("filter"),
        "startIndex": max(1, _int_param(q.get("startIndex"), 1, "startIndex")),
        "count": min(max(0, _int_param(q.get("count"), DEFAULT_COUNT, "count")), MAX_COUNT),
    }
    if params["filter"] is not None and not isinstance(params["filter"], str):
        raise ScimError(400, "filter must be a string", "invalidFilter")
    for name in ("attributes", "excludedAttributes"):
        value = q.get(name)
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        params[name] = resources.attribute_list(value)
    if body is None:
        for name in ("sortBy", "sortOrder"):
            if q.get(name):
                raise ScimError(400, "sorting is not supported", "invalidValue")
    return params


async def _list_users(request: Request, caller: Principal, body: dict[str, Any] | None) -> Response:
    p = await _page_params(request, body)
    start, count = p["startIndex"], p["count"]
    prov = prov_of(request)
    base = base_url(request)
    node = None if p["filter"] is None else scim_filter.parse(p["filter"])
    store = store_of(request)
    if node is None:
        accounts, total = await _scan_users(prov, caller, start - 1 + count)
        chosen = accounts[start - 1 : start - 1 + count]
        docs = [await _user_doc(request, a) for a in chosen]
    else:
        candidates = await _user_candidates(request, caller, node)
        if candidates is None:
            candidates, _seen = await _scan_users(prov, caller, MAX_SCAN + 1)
            if len(candidates) > MAX_SCAN:
                raise ScimError(400, f"the filter would scan more than {MAX_SCAN} users", "tooMany")
        matched: list[dict[str, Any]] = []
        for account in candidates:
            row = await store.get_user(str(account.address), account.created.isoformat())
            doc = resources.user_resource(account, row, base)
            if scim_filter.evaluate(node, doc, CASE_EXACT):
                matched.append(doc)
        total = len(matched)
        docs = matched[start - 1 : start - 1 + count]
    shown = [resources.project(d, p["attributes"], p["excludedAttributes"]) for d in docs]
    return scim_json(_list(shown, total, start))


@router.get("/Users")
async def list_users(request: Request, caller: Caller) -> Response:
    return await _list_users(request, caller, None)


async def _search_body(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict) or SEARCH_REQUEST not in (body.get("schemas") or []):
        raise ScimError(400, f"schemas must contain {SEARCH_REQUEST}", "invalidSyntax")
    return body


@router.post("/Users/.search")
async def search_users(request: Request, caller: Caller) -> Response:
    return await _list_users(request, caller, await _search_body(request))


@router.post("/.search")
async def search_root(request: Request) -> Response:
    raise ScimError(501, "search across resource types is not supported; use /Users/.search")


# -- groups -------------------------------------------------------------------------------------


async def _group_members(prov: Provisioner, alias: Alias | None) -> list[str]:
    if alias is None:
        return []
    members: list[str] = []
    for dest in alias.destinations:
        try:
            address = Address.parse(dest)
        except InvalidInput:
            continue
        if await prov.directory.find_account(address) is not None:
            members.append(str(address))
    return members


async def _group_state(request: Request, source: str) -> tuple[Alias | None, Any]:
    """The alias and mapping row of a group; NotFound when neither exists."""
    prov = prov_of(request)
    store = store_of(request)
    row = await store.get_group(source)
    alias = await prov.directory.find_alias(source)
    if alias is not None:
        if row is not None and (row.pending or row.created != alias.created.isoformat()):
            row = None  # a stale row from an earlier object of the same name
    elif row is None or not row.pending:
        raise NotFound(f"group {source} does not exist")
    return alias, row


async def _group_doc(request: Request, source: str, *, members: bool = True) -> dict[str, Any]:
    """The Group document; ``members=False`` skips resolving destinations (one lookup each)
    when the response will not show them (``excludedAttributes=members``, Entra ID)."""
    alias, row = await _group_state(request, source)
    listed = await _group_members(prov_of(request), alias) if members else []
    return resources.group_resource(source, alias, listed, row, base_url(request))


def _domain_of(source: str) -> str:
    return source.rpartition("@")[2]


def _visible_group(caller: Principal, gid: str) -> str:
    source = _gid(gid)
    caller.readable(_domain_of(source), f"group {source} does not exist")
    return source


async def _member_addresses(request: Request, caller: Principal, members: Any) -> list[str]:
    """Canonical addresses of the members of a normalised Group (each must be our user)."""
    prov = prov_of(request)
    out: list[str] = []
    for member in members or []:
        value = member.get("value") if isinstance(member, dict) else None
        if not isinstance(value, str) or not value:
            raise ScimError(400, "every member needs a value (a User id)", "invalidValue")
        account = None
        for text in dict.fromkeys((value, unquote(value))):
            try:
                address = Address.parse(text)
            except InvalidInput:
                continue
            account = await prov.directory.find_account(address)
            if account is not None:
                break
        if account is None or not caller.can_read(account.address.domain):
            raise ScimError(
                400, f"member {value[:80]!r} is not a user of this service", "invalidValue"
            )
        out.append(str(account.address))
    return list(dict.fromkeys(out))


@router.get("/Groups/{gid}")
async def get_group(request: Request, gid: str, caller: Caller) -> Response:
    source = _visible_group(caller, gid)
    include = resources.attribute_list(request.query_params.get("attributes"))
    exclude = resources.attribute_list(request.query_params.get("excludedAttributes"))
    doc = await _group_doc(request, source, members=resources.shows(include, exclude, "members"))
    return _doc_response(request, doc)


@router.post("/Groups")
async def create_group(request: Request, caller: Caller) -> Response:
    doc = resources.normalise_group(await json_body(request))
    name = doc.get("displayName")
    if not isinstance(name, str) or not name:
        raise ScimError(400, "displayName (the alias address) is required", "invalidValue")
    source = canonical_alias_source(name)
    caller.require_writer()
    caller.writable(_domain_of(source), f"domain {_domain_of(source)} is not hosted here")
    prov = prov_of(request)
    try:
        await prov.get_domain(_domain_of(source))
    except NotFound:
        raise ScimError(
            400, f"domain {_domain_of(source)} is not hosted here", "invalidValue"
        ) from None
    members = await _member_addresses(request, caller, doc.get("members"))
    store = store_of(request)
    existing = await store.get_group(source)
    if existing is not None and existing.pending:
        raise ScimError(409, f"group {source} already exists", "uniqueness")
    external = doc.get("externalId")
    if members:
        alias = await prov.create_alias(source, members, actor=caller.actor)
        await store.put_group(source, alias.created.isoformat(), external, pending=False)
    else:
        if await prov.directory.find_alias(source) is not None or (
            not source.startswith("@")
            and await prov.directory.find_account(Address.parse(source)) is not None
        ):
            raise ScimError(409, f"{source} is already an address here", "uniqueness")
        await store.put_group(source, utcnow().isoformat(), external, pending=True)
    return _doc_response(request, await _group_doc(request, source), 201, location=True)


async def _apply_group(
    request: Request, caller: Principal, source: str, before: dict[str, Any], after: dict[str, Any]
) -> None:
    name = after.get("displayName")
    if not isinstance(name, str) or canonical_alias_source(name) != source:
        raise ScimError(400, "displayName is the alias address and cannot change", "mutability")
    prov = prov_of(request)
    store = store_of(request)
    alias, row = await _group_state(request, source)
    old_members = [m["value"] for m in before.get("members", [])]
    new_members = await _member_addresses(request, caller, after.get("members"))
    external = after.get("externalId")
    if set(new_members) != set(old_members):
        others = [] if alias is None else [d for d in alias.destinations if d not in old_members]
        destinations = list(dict.fromkeys(others + new_members))
        revision = alias.revision if (alias and request.headers.get("if-match")) else None
        if alias is None:
            alias = await prov.create_alias(source, destinations, actor=caller.actor)
            await store.put_group(source, alias.created.isoformat(), external, pending=False)
            return
        if not destinations:
            await prov.delete_alias(source, actor=caller.actor)
            await store.put_group(source, utcnow().isoformat(), external, pending=True)
            return
        alias = await prov.update_alias(
            source, actor=caller.actor, if_revision=revision, destinations=destinations
        )
    if external != before.get("externalId") or row is None:
        created = (
            alias.created.isoformat() if alias else (row.created if row else utcnow().isoformat())
        )
        await store.put_group(source, created, external, pending=alias is None)


async def _writable_group(
    request: Request, caller: Principal, gid: str
) -> tuple[str, dict[str, Any]]:
    source = _visible_group(caller, gid)
    caller.writable(_domain_of(source), f"group {source} does not exist")
    doc = await _group_doc(request, source)
    _check_if_match(request, doc["meta"]["version"])
    return source, doc


@router.put("/Groups/{gid}")
async def replace_group(request: Request, gid: str, caller: Caller) -> Response:
    source, doc = await _writable_group(request, caller, gid)
    after = resources.normalise_group(await json_body(request))
    before = resources.normalise_group(resources.user_state(doc))
    await _apply_group(request, caller, source, before, after)
    return _doc_response(request, await _group_doc(request, source))


@router.patch("/Groups/{gid}")
async def patch_group(request: Request, gid: str, caller: Caller) -> Response:
    source, doc = await _writable_group(request, caller, gid)
    operations = patch.parse_operations(await json_body(request))
    before = resources.normalise_group(resources.user_state(doc))
    after = patch.apply(GROUP, before, operations)
    await _apply_group(request, caller, source, before, after)
    return _doc_response(request, await _group_doc(request, source))


@router.delete("/Groups/{gid}")
async def delete_group(request: Request, gid: str, caller: Caller) -> Response:
    source, _ = await _writable_group(request, caller, gid)
    prov = prov_of(request)
    if await prov.directory.find_alias(source) is not None:
        await prov.delete_alias(source, actor=caller.actor)
    await store_of(request).delete_group(source)
    return Response(status_code=204)


async def _list_groups(
    request: Request, caller: Principal, body: dict[str, Any] | None
) -> Response:
    p = await _page_params(request, body)
    start, count = p["startIndex"], p["count"]
    node = None if p["filter"] is None else scim_filter.parse(p["filter"])
    prov = prov_of(request)
    store = store_of(request)
    sources: list[str] | None = None
    if node is not None:
        for path, value in scim_filter.equalities(node):
            if isinstance(value, str) and path in ("displayname", "id"):
                try:
                    sources = [canonical_alias_source(value)]
                except InvalidInput:
                    sources = []
                break
            if isinstance(value, str) and path == "externalid":
                sources = await store.groups_by_external_id(value)
                break
    if sources is None:
        aliases, _ = await _scan_aliases(prov, caller, MAX_SCAN + 1)
        pending = await store.pending_groups(MAX_SCAN + 1)
        sources = sorted({a.source for a in aliases} | {g.source for g in pending})
        if len(sources) > MAX_SCAN:
            raise ScimError(400, f"more than {MAX_SCAN} groups to scan", "tooMany")
    docs: list[dict[str, Any]] = []
    wanted = None if node is None else MAX_SCAN
    with_members = resources.shows(p["attributes"], p["excludedAttributes"], "members") or (
        node is not None and "members" in p["filter"].lower()
    )
    for source in sources:
        if not caller.can_read(_domain_of(source)):
            continue
        if node is None and len(docs) >= start - 1 + count:
            docs.append({})  # counted only; not rendered
            continue
        try:
            doc = await _group_doc(request, source, members=with_members)
        except NotFound:
            continue
        if node is None or scim_filter.evaluate(node, doc, CASE_EXACT):
            docs.append(doc)
        if wanted is not None and len(docs) > wanted:
            break
    page = docs[start - 1 : start - 1 + count]
    shown = [resources.project(d, p["attributes"], p["excludedAttributes"]) for d in page]
    return scim_json(_list(shown, len(docs), start))


@router.get("/Groups")
async def list_groups(request: Request, caller: Caller) -> Response:
    return await _list_groups(request, caller, None)


@router.post("/Groups/.search")
async def search_groups(request: Request, caller: Caller) -> Response:
    return await _list_groups(request, caller, await _search_body(request))


# -- everything else ----------------------------------------------------------------------------

_KNOWN = ("ServiceProviderConfig", "ResourceTypes", "Schemas", "Users", "Groups", ".search")


@router.api_route(
    "/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
)
async def fallback(request: Request, rest: str) -> Response:
    """Known endpoints with another method answer 405; unknown paths 404 (SCIM errors)."""
    head = rest.split("/", 1)[0]
    if head in _KNOWN and rest.count("/") <= 1:
        raise ScimError(405, f"{request.method} is not supported on this endpoint")
    raise ScimError(404, "no such SCIM endpoint")
