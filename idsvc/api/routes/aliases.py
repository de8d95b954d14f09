"""Aliases: ``/api/v1/domains/{domain}/aliases`` (list, create) and
``/api/v1/aliases/{source}`` (read, patch, delete). ``source`` is ``local@domain`` or the
catch-all ``@domain``; destinations may be anywhere (forwarding), the source may not: a domain
admin creates aliases only in its own domains.
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
from idsvc.api.schemas import AliasCreate, AliasOut, AliasPatch, ListOf
from idsvc.api.security import Principal, authenticate
from idsvc.errors import InvalidInput
from idsvc.model import Alias, canonical_alias_source, canonical_domain
from idsvc.provisioning import alias_view

router = APIRouter(prefix=API_PREFIX, tags=["aliases"], dependencies=[Depends(authenticate)])
Caller = Annotated[Principal, Depends(authenticate)]
READ_ERRORS = error_responses(401, 404, 422, 429, 503)
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 429, 503)


@router.get("/domains/{domain}/aliases", response_model=ListOf[AliasOut], responses=READ_ERRORS)
async def list_aliases(
    request: Request,
    domain: str,
    caller: Caller,
    limit: Limit = 100,
    cursor: Cursor = None,
    prefix: Prefix = "",
) -> dict[str, Any]:
    name = canonical_domain(domain)
    caller.readable(name, f"domain {name} does not exist")
    prov = context_of(request).provisioner
    await prov.get_domain(name)
    page = await prov.list_aliases(name, prefix=prefix, cursor=cursor, limit=limit)
    return page_body(page, alias_view)


def _source_in(domain: str, text: str) -> str:
    if text == "@" or text.startswith("@"):
        source = canonical_alias_source(text if text != "@" else "@" + domain)
    elif "@" in text:
        source = canonical_alias_source(text)
    else:
        source = canonical_alias_source(f"{text}@{domain}")
    if source.rpartition("@")[2] != domain:
        raise InvalidInput("the alias source must be in the domain of the URL")
    return source


@router.post(
    "/domains/{domain}/aliases", status_code=201, response_model=AliasOut, responses=WRITE_ERRORS
)
async def create_alias(
    request: Request, response: Response, domain: str, body: AliasCreate, caller: Caller
) -> dict[str, Any]:
    """Create an alias (or the catch-all ``@domain``) with one or more destinations."""
    name = canonical_domain(domain)
    caller.writable(name, f"domain {name} does not exist")
    source = _source_in(name, body.source)
    prov = context_of(request).provisioner
    await prov.get_domain(name)
    alias = await prov.create_alias(
        source, body.destinations, actor=caller.actor, enabled=body.enabled
    )
    location(response, "/aliases", alias.source)
    set_etag(response, alias.revision)
    return alias_view(alias)


async def _visible(request: Request, caller: Principal, source: str) -> Alias:
    canonical = canonical_alias_source(source)
    domain = canonical.rpartition("@")[2]
    caller.readable(domain, f"alias {canonical} does not exist")
    return await context_of(request).provisioner.get_alias(canonical)


@router.get("/aliases/{source}", response_model=AliasOut, responses=READ_ERRORS)
async def get_alias(
    request: Request, response: Response, source: str, caller: Caller
) -> dict[str, Any]:
    alias = await _visible(request, caller, source)
    set_etag(response, alias.revision)
    return alias_view(alias)


@router.patch("/aliases/{source}", response_model=AliasOut, responses=WRITE_ERRORS)
async def patch_alias(
    request: Request, response: Response, source: str, body: AliasPatch, caller: Caller
) -> dict[str, Any]:
    current = await _visible(request, caller, source)
    caller.writable(current.domain, f"alias {current.source} does not exist")
    prov = context_of(request).provisioner
    revision = if_match(request, current.revision)

    async def now() -> int:
        return (await prov.get_alias(current.source)).revision

    updated = await conditional(
        lambda: prov.update_alias(
            current.source,
            actor=caller.actor,
            if_revision=revision,
            destinations=body.destinations,
            enabled=body.enabled,
        ),
        revision,
        now,
    )
    set_etag(response, updated.revision)
    return alias_view(updated)


@router.delete("/aliases/{source}", status_code=204, responses=WRITE_ERRORS)
async def delete_alias(request: Request, source: str, caller: Caller) -> Response:
    current = await _visible(request, caller, source)
    caller.writable(current.domain, f"alias {current.source} does not exist")
    if_match(request, current.revision)
    await context_of(request).provisioner.delete_alias(current.source, actor=caller.actor)
    return Response(status_code=204)
