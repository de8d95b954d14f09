"""``/api/v1/domains``: list, create, read, patch, delete mail domains.

Admins do everything. A domain admin reads and patches its own domains (not ``alias_domains``:
re-pointing alias domains would claim names outside its grant) and can neither create nor delete
domains. A domain outside a scoped token's grant answers 404, like an absent one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

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
    slice_names,
)
from idsvc.api.context import context_of
from idsvc.api.problems import error_responses
from idsvc.api.schemas import DomainCreate, DomainOut, DomainPatch, ListOf
from idsvc.api.security import Principal, authenticate
from idsvc.errors import NotFound
from idsvc.model import Domain, canonical_domain
from idsvc.provisioning import domain_view

router = APIRouter(
    prefix=API_PREFIX + "/domains", tags=["domains"], dependencies=[Depends(authenticate)]
)
Caller = Annotated[Principal, Depends(authenticate)]
READ_ERRORS = error_responses(401, 404, 422, 429, 503)
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 429, 503)


def _absent(name: str) -> str:
    return f"domain {name} does not exist"


@router.get("", response_model=ListOf[DomainOut], responses=READ_ERRORS)
async def list_domains(
    request: Request,
    caller: Caller,
    limit: Limit = 100,
    cursor: Cursor = None,
    prefix: Prefix = "",
) -> dict[str, Any]:
    """Domains ordered by name; a scoped token sees only its own."""
    prov = context_of(request).provisioner
    if caller.all_domains:
        page = await prov.list_domains(prefix=prefix, cursor=cursor, limit=limit)
        return page_body(page, domain_view)
    names, next_cursor = slice_names(
        caller.domains, prefix=prefix.lower(), cursor=cursor, limit=limit
    )
    items: list[dict[str, Any]] = []
    for name in names:
        try:
            items.append(domain_view(await prov.get_domain(name)))
        except NotFound:
            continue
    return {"items": items, "next_cursor": next_cursor, "total": None}


@router.post(
    "",
    status_code=201,
    response_model=DomainOut,
    responses=WRITE_ERRORS,
)
async def create_domain(
    request: Request, response: Response, body: DomainCreate, caller: Caller
) -> dict[str, Any]:
    """Create a domain (admin only). 201 with ``Location`` and ``ETag``."""
    caller.require_admin()
    domain = await context_of(request).provisioner.create_domain(
        body.name,
        actor=caller.actor,
        enabled=body.enabled,
        default_quota=body.default_quota,
        alias_domains=body.alias_domains,
        description=body.description,
    )
    location(response, "/domains", domain.name)
    set_etag(response, domain.revision)
    return domain_view(domain)


async def _visible(request: Request, caller: Principal, domain: str) -> Domain:
    name = canonical_domain(domain)
    caller.readable(name, _absent(name))
    return await context_of(request).provisioner.get_domain(name)


@router.get("/{domain}", response_model=DomainOut, responses=READ_ERRORS)
async def get_domain(
    request: Request, response: Response, domain: str, caller: Caller
) -> dict[str, Any]:
    found = await _visible(request, caller, domain)
    set_etag(response, found.revision)
    return domain_view(found)


@router.patch("/{domain}", response_model=DomainOut, responses=WRITE_ERRORS)
async def patch_domain(
    request: Request, response: Response, domain: str, body: DomainPatch, caller: Caller
) -> dict[str, Any]:
    """Merge-patch a domain: ``enabled``, ``default_quota``, ``description``, and (admins only)
    ``alias_domains``. Honours ``If-Match``."""
    current = await _visible(request, caller, domain)
    caller.writable(current.name, _absent(current.name))
    if body.alias_domains is not None:
        caller.require_admin()
    prov = context_of(request).provisioner
    revision = if_match(request, current.revision)

    async def now() -> int:
        return (await prov.get_domain(current.name)).revision

    updated = await conditional(
        lambda: prov.update_domain(
            current.name,
            actor=caller.actor,
            if_revision=revision,
            enabled=body.enabled,
            default_quota=body.default_quota,
            alias_domains=body.alias_domains,
            description=body.description,
        ),
        revision,
        now,
    )
    set_etag(response, updated.revision)
    return domain_view(updated)


@router.delete("/{domain}", status_code=204, responses=WRITE_ERRORS)
async def delete_domain(
    request: Request,
    domain: str,
    caller: Caller,
    cascade: Annotated[bool, Query(description="also delete its users and aliases")] = False,
) -> Response:
    """Delete a domain (admin only); 409 while it has users or aliases unless ``cascade``."""
    current = await _visible(request, caller, domain)
    caller.require_admin()
    if_match(request, current.revision)
    await context_of(request).provisioner.delete_domain(
        current.name, actor=caller.actor, cascade=cascade
    )
    return Response(status_code=204)
