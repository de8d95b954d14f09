"""``POST /api/v1/auth/test``: check a credential through the Authenticator (admin diagnostic).

It goes through the same decision point as saslauthd and Dovecot auth (cache, penalties, failure
delay, audit), so it shows what a mail client would get. Admin and domain admin tokens only; a
domain admin may test only logins in its domains (others answer 404). Calls are limited per
token (``api.auth_test_per_minute``) so the route cannot serve as a password-guessing oracle.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from idsvc.api.common import API_PREFIX
from idsvc.api.context import context_of
from idsvc.api.problems import TooManyRequests, error_responses
from idsvc.api.schemas import AuthTestIn, AuthTestOut
from idsvc.api.security import Principal, authenticate
from idsvc.auth.request import AuthRequest
from idsvc.model import Address, Secret

router = APIRouter(
    prefix=API_PREFIX + "/auth", tags=["diagnostics"], dependencies=[Depends(authenticate)]
)
Caller = Annotated[Principal, Depends(authenticate)]


@router.post(
    "/test",
    response_model=AuthTestOut,
    responses=error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503),
)
async def auth_test(request: Request, body: AuthTestIn, caller: Caller) -> dict[str, Any]:
    """Answer the outcome the Authenticator gives for this login, password and service."""
    caller.require_writer()
    ctx = context_of(request)
    address = Address.parse(body.login, default_domain=ctx.settings.auth.default_domain)
    caller.writable(address.domain, f"user {address} does not exist")
    wait = ctx.auth_tests.take(caller.token.id)
    if wait is not None:
        raise TooManyRequests("too many credential tests with this token", retry_after=wait)
    result = await ctx.runtime.authenticator.authenticate(
        AuthRequest(
            login=str(address),
            password=Secret(body.password),
            service=body.service.value,
            remote_ip=caller.remote,
            secured=True,
            protocol="api",
        )
    )
    return {"outcome": result.outcome.value, "user": result.user if result.ok else None}
