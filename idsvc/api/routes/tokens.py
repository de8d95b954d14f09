"""``/api/v1/tokens``: create (the secret is in the 201 body, once), list, read, revoke.

Admins and domain admins only (read-only tokens get 403). A caller creates, sees and revokes
only tokens it *covers* (``idsvc.api.security``): a domain admin can hand out domain admin or
read-only tokens for a subset of its domains, owned by mailboxes in those domains. Tokens it does
not cover answer 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from idsvc.api.common import API_PREFIX, Cursor, Limit, location, page_body
from idsvc.api.context import context_of
from idsvc.api.problems import Forbidden, error_responses
from idsvc.api.schemas import ListOf, TokenCreate, TokenCreated, TokenOut
from idsvc.api.security import Principal, authenticate
from idsvc.audit import AuditEvent
from idsvc.errors import NotFound
from idsvc.model import Address
from idsvc.state import TokenInfo, check_scope, create_token, token_view

router = APIRouter(
    prefix=API_PREFIX + "/tokens", tags=["tokens"], dependencies=[Depends(authenticate)]
)
Caller = Annotated[Principal, Depends(authenticate)]
READ_ERRORS = error_responses(401, 403, 404, 422, 429, 503)
WRITE_ERRORS = error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503)


@router.post("", status_code=201, response_model=TokenCreated, responses=WRITE_ERRORS)
async def create(
    request: Request, response: Response, body: TokenCreate, caller: Caller
) -> dict[str, Any]:
    """Create a token. The ``token`` field of the answer is the only time the secret is shown."""
    caller.require_writer()
    scope, domains = check_scope(body.scope, body.domains)
    owner = None if body.owner is None else Address.parse(body.owner)
    wanted = TokenInfo("0" * 16, "wanted", scope, domains, None, caller.token.created, "")
    if not caller.covers(wanted):
        raise Forbidden("a token cannot grant more than the token that creates it")
    if owner is not None and not caller.can_write(owner.domain):
        raise Forbidden("the owner must be a mailbox in a domain this token administers")
    ctx = context_of(request)
    info, secret = await create_token(
        ctx.state,
        name=body.name,
        scope=scope,
        domains=domains,
        owner=None if owner is None else str(owner),
        created_by=caller.actor,
        audit=ctx.audit,
    )
    location(response, "/tokens", info.id)
    return {**token_view(info), "token": secret}


@router.get("", response_model=ListOf[TokenOut], responses=READ_ERRORS)
async def list_tokens(
    request: Request, caller: Caller, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    """Tokens this caller covers, ordered by id (revoked ones included, marked)."""
    caller.require_writer()
    page = await context_of(request).state.list_tokens(
        cursor=cursor, limit=limit, where=caller.covers
    )
    return page_body(page, token_view)


async def _covered(request: Request, caller: Principal, token_id: str) -> TokenInfo:
    caller.require_writer()
    info = await context_of(request).state.get_token(token_id)
    if not caller.covers(info):
        raise NotFound("token does not exist")
    return info


@router.get("/{token_id}", response_model=TokenOut, responses=READ_ERRORS)
async def get_token(request: Request, token_id: str, caller: Caller) -> dict[str, Any]:
    return token_view(await _covered(request, caller, token_id))


@router.delete("/{token_id}", status_code=204, responses=WRITE_ERRORS)
async def revoke(request: Request, token_id: str, caller: Caller) -> Response:
    """Revoke a token at once (idempotent). Revoked tokens stay listed for the audit trail."""
    info = await _covered(request, caller, token_id)
    ctx = context_of(request)
    await ctx.state.revoke_token(info.id)
    ctx.audit.emit(AuditEvent("token.revoke", "ok", actor=caller.actor, target=f"token:{info.id}"))
    return Response(status_code=204)
