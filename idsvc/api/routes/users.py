"""Mail accounts: ``/api/v1/domains/{domain}/users`` (list, create) and
``/api/v1/users/{address}`` (read, patch, delete, password, password-hash import).

An address outside a scoped token's domains answers 404 like an absent one; a write to a mailbox
that outranks the caller (see ``idsvc.api.security``) answers 403. Password bodies are never
logged or echoed; responses never contain hashes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from idsvc.api.common import (
    API_PREFIX,
    Cursor,
    Limit,
    Prefix,
    conditional,
    if_match,
    location,
    page_body,
    set_etag,
)
from idsvc.api.context import context_of
from idsvc.api.problems import error_responses
from idsvc.api.schemas import ListOf, PasswordHashIn, PasswordIn, UserCreate, UserOut, UserPatch
from idsvc.api.security import Principal, authenticate, ensure_not_outranked, import_role
from idsvc.errors import InvalidInput
from idsvc.model import Account, Address, Secret, canonical_domain
from idsvc.provisioning import account_view

router = APIRouter(prefix=API_PREFIX, tags=["users"], dependencies=[Depends(authenticate)])
Caller = Annotated[Principal, Depends(authenticate)]
READ_ERRORS = error_responses(401, 404, 422, 429, 503)
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 429, 503)


@router.get("/domains/{domain}/users", response_model=ListOf[UserOut], responses=READ_ERRORS)
async def list_users(
    request: Request,
    domain: str,
    caller: Caller,
    limit: Limit = 100,
    cursor: Cursor = None,
    prefix: Prefix = "",
) -> dict[str, Any]:
    """Accounts of a domain ordered by address, one page at a time (paged in the directory)."""
    name = canonical_domain(domain)
    caller.readable(name, f"domain {name} does not exist")
    prov = context_of(request).provisioner
    await prov.get_domain(name)
    page = await prov.list_users(name, prefix=prefix, cursor=cursor, limit=limit)
    return page_body(page, account_view)


@router.post(
    "/domains/{domain}/users", status_code=201, response_model=UserOut, responses=WRITE_ERRORS
)
async def create_user(
    request: Request, response: Response, domain: str, body: UserCreate, caller: Caller
) -> dict[str, Any]:
    """Create an account in ``domain``. 201 with ``Location`` and ``ETag``. ``password`` and
    ``password_hash`` follow the password policy (see the password routes): 422
    ``password-policy`` with the broken rule in ``detail``."""
    name = canonical_domain(domain)
    caller.writable(name, f"domain {name} does not exist")
    address = Address.parse(body.address, default_domain=name)
    if address.domain != name:
        raise InvalidInput("the address must be in the domain of the URL")
    ctx = context_of(request)
    account = await ctx.provisioner.create_user(
        str(address),
        actor=caller.actor,
        password=None if body.password is None else Secret(body.password),
        password_hash=body.password_hash,
        role=import_role(caller),
        display_name=body.display_name,
        enabled=body.enabled,
        quota=body.quota,
        services=body.services,
    )
    location(response, "/users", str(account.address))
    set_etag(response, account.revision)
    return account_view(account)


def _absent(address: Address) -> str:
    return f"user {address} does not exist"


async def _visible(request: Request, caller: Principal, address: str) -> Account:
    parsed = Address.parse(address)
    caller.readable(parsed.domain, _absent(parsed))
    return await context_of(request).provisioner.get_user(str(parsed))


async def _writable(request: Request, caller: Principal, address: str) -> Account:
    account = await _visible(request, caller, address)
    caller.writable(account.address.domain, _absent(account.address))
    await ensure_not_outranked(request, caller, str(account.address))
    return account


@router.get("/users/{address}", response_model=UserOut, responses=READ_ERRORS)
async def get_user(
    request: Request, response: Response, address: str, caller: Caller
) -> dict[str, Any]:
    account = await _visible(request, caller, address)
    set_etag(response, account.revision)
    return account_view(account)


@router.patch("/users/{address}", response_model=UserOut, responses=WRITE_ERRORS)
async def patch_user(
    request: Request, response: Response, address: str, body: UserPatch, caller: Caller
) -> dict[str, Any]:
    """Merge-patch: ``display_name``, ``enabled``, ``quota``, ``services``. Honours
    ``If-Match``. Disabling takes effect for authentication at once (the cache is dropped)."""
    current = await _writable(request, caller, address)
    prov = context_of(request).provisioner
    revision = if_match(request, current.revision)
    key = str(current.address)

    async def now() -> int:
        return (await prov.get_user(key)).revision

    updated = await conditional(
        lambda: prov.update_user(
            key,
            actor=caller.actor,
            if_revision=revision,
            display_name=body.display_name,
            enabled=body.enabled,
            quota=body.quota,
            services=body.services,
        ),
        revision,
        now,
    )
    set_etag(response, updated.revision)
    return account_view(updated)


@router.delete("/users/{address}", status_code=204, responses=WRITE_ERRORS)
async def delete_user(request: Request, address: str, caller: Caller) -> Response:
    current = await _writable(request, caller, address)
    if_match(request, current.revision)
    await context_of(request).provisioner.delete_user(str(current.address), actor=caller.actor)
    return Response(status_code=204)


@router.put("/users/{address}/password", status_code=204, responses=WRITE_ERRORS)
async def set_password(
    request: Request, address: str, body: PasswordIn, caller: Caller
) -> Response:
    """Set a new password (plaintext in, hashed with the configured scheme). 204 + new ETag.
    422 ``password-policy`` (the detail names the rule) unless the password has 12 to 1024
    characters (defaults of ``passwords.min_length``/``max_length``), no control characters,
    is not the address and not a common password."""
    current = await _writable(request, caller, address)
    prov = context_of(request).provisioner
    revision = if_match(request, current.revision)
    key = str(current.address)

    async def now() -> int:
        return (await prov.get_user(key)).revision

    password = Secret(body.password)
    updated = await conditional(
        lambda: prov.set_password(key, password, actor=caller.actor, if_revision=revision),
        revision,
        now,
    )
    response = Response(status_code=204)
    set_etag(response, updated.revision)
    return response


@router.post("/users/{address}/password-hash", status_code=204, responses=WRITE_ERRORS)
async def import_password_hash(
    request: Request, address: str, body: PasswordHashIn, caller: Caller
) -> Response:
    """Import an existing ``{SCHEME}`` hash (migration). 204 + new ETag. 422 ``password-policy``
    unless the caller's role may import the scheme: domain admins only slow salted schemes
    (ARGON2ID/ARGON2I, BLF-CRYPT, SHA512/SHA256-CRYPT, passlib PBKDF2-SHA256/512 and
    bcrypt-sha256); global admins also salted fast ones (SSHA*, SMD5, MD5-CRYPT, PBKDF2, SCRAM);
    unsalted and cleartext schemes never, unless ``passwords.allow_weak_imports`` lets a global
    admin migrate them (a ``{PLAIN}`` value is then hashed, never stored). 422
    ``invalid-password-hash`` when the hash is unusable."""
    current = await _writable(request, caller, address)
    prov = context_of(request).provisioner
    revision = if_match(request, current.revision)
    key = str(current.address)

    async def now() -> int:
        return (await prov.get_user(key)).revision

    updated = await conditional(
        lambda: prov.import_password_hash(
            key,
            body.password_hash,
            actor=caller.actor,
            if_revision=revision,
            role=import_role(caller),
        ),
        revision,
        now,
    )
    response = Response(status_code=204)
    set_etag(response, updated.revision)
    return response
