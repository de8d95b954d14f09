"""The web's password login: one check through the auth core, then the second factor.

The mail password is checked by ``idsvc.auth.engine.Authenticator`` like every other login, so
its brute-force penalties (per client address and per account), its timing pad and its audit
event apply to the web too. The service is ``web`` (``idsvc.auth.engine.WEB_SERVICE``): no mail
service's enablement is required, and the auth core never accepts an **app password** for it —
an app password is for one mail client, it must not open the console that creates more of them.

When the account has enrolled TOTP, the code (or a recovery code) is required in the same form;
a wrong code is a failure like a wrong password (it feeds the same penalties) and the answer does
not say which of the two was wrong.
"""

from __future__ import annotations

import asyncio

from fastapi import Request

from idsvc.api.security import client_key
from idsvc.auth.engine import WEB_SERVICE
from idsvc.auth.request import AuthRequest, Outcome
from idsvc.model import Address, Secret
from idsvc.web.core import PageError, api_context, web_of
from idsvc.web.second_factor import Owner

FAILED = "Login failed. Check the address, the password and the code."


async def check_password(request: Request, user: str, password: str) -> str | None:
    """The canonical account if ``password`` is ``user``'s own password, else None; PageError
    503 when the directory cannot answer."""
    auth = api_context(request).runtime.authenticator
    result = await auth.authenticate(
        AuthRequest(
            login=user.strip(),
            password=Secret(password),
            service=WEB_SERVICE,
            remote_ip=client_key(request),
            secured=True,
            protocol="web",
        )
    )
    if result.outcome is Outcome.TEMPFAIL:
        raise PageError(503, "The directory is not answering. Try again in a minute.")
    if not result.ok or result.user is None:
        return None
    return result.user


async def factor_owner(request: Request, user: str) -> Owner | None:
    """Whose second factor ``user`` (a canonical address) has: its account's subject and
    generation (``idsvc.web.second_factor.Owner``); None when the account is gone."""
    from idsvc.directory.ldap.corporate import CorporateDirectory

    directory = api_context(request).runtime.directory
    account = await directory.find_account(Address.parse(user))
    if account is None:
        return None
    return Owner.of(account, read_only=isinstance(directory, CorporateDirectory))


async def password_login(request: Request, fields: dict[str, str]) -> str:
    """The canonical account for a login form's ``address``, ``password`` and ``code``, or
    PageError 401 (one message for every failure)."""
    user = await check_password(request, fields.get("address", ""), fields.get("password", ""))
    if user is None:
        raise PageError(401, FAILED)
    factors = web_of(request).factors
    if factors is None:
        return user
    owner = await factor_owner(request, user)
    if owner is None:  # deleted between the two look-ups
        raise PageError(401, FAILED)
    if await factors.enrolled(owner):
        code = fields.get("code", "")
        if not code or not await factors.verify(owner, code):
            auth = api_context(request).runtime.authenticator
            delay = auth.penalties.record_failure(client_key(request), (user,))
            await asyncio.sleep(api_context(request).settings.auth.failure_delay + delay)
            raise PageError(401, FAILED)
    return user
