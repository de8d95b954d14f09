"""App password use cases, shared by the REST API and the CLI: create (the secret is returned
once), list, revoke — each audited (never with the secret) and each dropping the account's cached
auth decisions at once, so a revoked app password fails on every socket on its next use.

An app password belongs to an account found in the directory (any backend, read-only ones
included): it is stored in the local overlay (``idsvc.overlay``) under the account's
``subject`` (stable id), so a rename in a corporate directory keeps it.

How it fails: ``NotFound`` for an unknown account or app password, ``InvalidInput`` for a bad
name, service, network or expiry, ``TemporaryFailure`` when the overlay or directory cannot
answer; each failure is audited like every other provisioning change.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from idsvc.audit import AuditEvent, AuditSink
from idsvc.auth.app_password import AppPassword
from idsvc.directory.base import AccountLookup
from idsvc.errors import IdsvcError, InvalidInput, NotFound
from idsvc.model import Account, Address, Service
from idsvc.overlay import OverlayStore
from idsvc.provisioning import Invalidator, parse_services


def app_password_view(app: AppPassword) -> dict[str, Any]:
    """An app password as plain data (never its secret or digest)."""

    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "id": app.id,
        "name": app.name,
        "user": app.owner,
        "services": sorted(s.value for s in app.services),
        "networks": list(app.networks),
        "created": iso(app.created),
        "expires": iso(app.expires),
        "revoked": iso(app.revoked),
        "last_used": iso(app.last_used),
        "last_ip": app.last_ip,
        "active": app.revoked is None and (app.expires is None or app.expires > datetime.now(UTC)),
    }


class AppPasswords:
    """The use cases over one overlay store (see the module docstring)."""

    def __init__(
        self,
        directory: AccountLookup,
        overlay: OverlayStore,
        *,
        audit: AuditSink,
        invalidator: Invalidator | None = None,
    ) -> None:
        self._directory = directory
        self._overlay = overlay
        self._audit = audit
        self._invalidator = invalidator

    async def _account(self, user: str) -> Account:
        account = await self._directory.find_account(Address.parse(user))
        if account is None:
            raise NotFound(f"user {user} does not exist")
        return account

    def _emit(self, action: str, outcome: str, actor: str, target: str, **detail: Any) -> None:
        self._audit.emit(AuditEvent(action, outcome, actor=actor, target=target, detail=detail))

    async def create(
        self,
        user: str,
        name: str,
        *,
        actor: str,
        services: Iterable[str | Service] = (),
        networks: Iterable[str] = (),
        expires: datetime | None = None,
    ) -> tuple[AppPassword, str]:
        """A new app password for ``user``; returns it and the secret to show once."""
        try:
            account = await self._account(user)
            if expires is not None and expires <= datetime.now(UTC):
                raise InvalidInput("expires must be in the future")
            app, secret = await self._overlay.create(
                account.subject,
                str(account.address),
                name,
                services=parse_services(services),
                networks=networks,
                expires=expires,
            )
        except IdsvcError as exc:
            self._emit("app_password.create", type(exc).__name__, actor, user, error=str(exc))
            raise
        self._emit("app_password.create", "ok", actor, str(account.address),
                   after=app_password_view(app))  # fmt: skip
        return app, secret

    async def list_of(self, user: str) -> list[AppPassword]:
        account = await self._account(user)
        return await self._overlay.list_for(account.subject)

    async def revoke(self, user: str, app_id: str, *, actor: str) -> AppPassword:
        try:
            account = await self._account(user)
            app = await self._overlay.revoke(account.subject, app_id)
        except IdsvcError as exc:
            self._emit("app_password.revoke", type(exc).__name__, actor, user, error=str(exc))
            raise
        if self._invalidator is not None:  # cached OK decisions for it must go now
            self._invalidator.invalidate(str(account.address))
        self._emit("app_password.revoke", "ok", actor, str(account.address),
                   after=app_password_view(app))  # fmt: skip
        return app
