"""Per-device app passwords of one account: ``/api/v1/users/{address}/app-passwords``.

Same access rules as the account itself: a scoped token sees only its domains (404 otherwise)
and cannot write to a mailbox that outranks it (403). The secret is in the 201 response of
``POST`` and nowhere else, ever; ``DELETE`` revokes at once on every socket.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from idsvc.api.common import API_PREFIX
from idsvc.api.context import context_of
from idsvc.api.problems import error_responses
from idsvc.api.routes.users import _visible, _writable
from idsvc.api.schemas import AppPasswordCreate, AppPasswordCreated, AppPasswordOut, ListOf
from idsvc.api.security import Principal, authenticate
from idsvc.app_passwords import AppPasswords, app_password_view
from idsvc.errors import NotFound

router = APIRouter(prefix=API_PREFIX, tags=["app passwords"], dependencies=[Depends(authenticate)])
Caller = Annotated[Principal, Depends(authenticate)]
READ_ERRORS = error_responses(401, 404, 422, 429, 503)
WRITE_ERRORS = error_responses(401, 403, 404, 409, 413, 415, 422, 429, 503)


def _apps(request: Request) -> AppPasswords:
    apps = context_of(request).app_passwords
    if apps is None:
        raise NotFound("app passwords are disabled on this server")
    return apps


@router.get(
    "/users/{address}/app-passwords",
    response_model=ListOf[AppPasswordOut],
    responses=READ_ERRORS,
)
async def list_app_passwords(request: Request, address: str, caller: Caller) -> dict[str, Any]:
    account = await _visible(request, caller, address)
    items = await _apps(request).list_of(str(account.address))
    views = [app_password_view(a) for a in items]
    return {"items": views, "next_cursor": None, "total": len(views)}


@router.post(
    "/users/{address}/app-passwords",
    status_code=201,
    response_model=AppPasswordCreated,
    responses=WRITE_ERRORS,
)
async def create_app_password(
    request: Request, address: str, body: AppPasswordCreate, caller: Caller
) -> dict[str, Any]:
    """Create one; the response's ``secret`` is the only time it is shown."""
    account = await _writable(request, caller, address)
    app, secret = await _apps(request).create(
        str(account.address), body.name, actor=caller.actor, services=body.services,
        networks=body.networks, expires=body.expires,
    )  # fmt: skip
    return {**app_password_view(app), "secret": secret}


@router.delete("/users/{address}/app-passwords/{app_id}", status_code=204, responses=WRITE_ERRORS)
async def revoke_app_password(
    request: Request, address: str, app_id: str, caller: Caller
) -> Response:
    """Revoke at once: the next login with it fails on every socket."""
    account = await _writable(request, caller, address)
    await _apps(request).revoke(str(account.address), app_id, actor=caller.actor)
    return Response(status_code=204)
