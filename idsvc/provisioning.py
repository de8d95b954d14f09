"""Provisioning use cases shared by the CLI, the REST API and SCIM.

Every write goes through here: inputs are canonicalised and validated; new passwords and imported
hashes must pass the password policy (``idsvc.password_policy``: length, control characters,
blocklist; hash imports by scheme and role), and new passwords are hashed (plaintext never
reaches a directory); the auth cache is invalidated at once for the users a change affects, and
an audit event (who, what, before/after without secrets) is emitted for every attempted change,
successful or not. Hashing runs on a small bounded thread pool, so a slow scheme (ARGON2ID) never
stalls the event loop that also serves the auth sockets. Reads raise ``NotFound`` instead of
returning None so every front end maps "absent" the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from idsvc.audit import AuditEvent, AuditSink
from idsvc.config import Settings
from idsvc.directory.base import (
    MAX_PAGE,
    AccountChanges,
    AliasChanges,
    Directory,
    DomainChanges,
)
from idsvc.errors import IdsvcError, InvalidInput, NotFound
from idsvc.model import (
    ALL_SERVICES,
    Account,
    Address,
    Alias,
    Domain,
    Page,
    Secret,
    Service,
    canonical_address,
    canonical_alias_source,
    canonical_domain,
)
from idsvc.password_policy import PasswordPolicy, PolicyViolation, Role
from idsvc.passwords import PasswordHasher, cleartext_of, validate_hash

MAX_DISPLAY_NAME = 256
MAX_DESCRIPTION = 1024
MAX_DESTINATIONS = 1000
MAX_QUOTA = 2**62
HASH_WORKERS = 2  # concurrent password hashes for provisioning (each ARGON2ID takes 64 MiB)

T = TypeVar("T")

log = logging.getLogger(__name__)


class Invalidator(Protocol):
    """What provisioning needs from the auth cache (``idsvc.auth.engine.Authenticator``)."""

    def invalidate(self, user: str | None = None) -> None: ...

    def invalidate_domain(self, domain: str) -> None: ...


def _text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(f"{what} longer than {limit} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidInput(f"{what} contains control characters")
    return value


def _quota(value: int, what: str = "quota") -> int:
    if not 0 <= value <= MAX_QUOTA:
        raise InvalidInput(f"{what} must be between 0 and {MAX_QUOTA} bytes (0 = unlimited)")
    return value


def parse_services(values: Iterable[str | Service]) -> frozenset[Service]:
    out: set[Service] = set()
    for value in values:
        service = Service.parse(str(value))
        if service is None:
            raise InvalidInput(f"unknown service {str(value)[:32]!r}")
        out.add(service)
    return frozenset(out)


def _limit(limit: int) -> int:
    if limit < 1:
        raise InvalidInput("limit must be at least 1")
    return min(limit, MAX_PAGE)


def domain_view(domain: Domain) -> dict[str, Any]:
    return {
        "name": domain.name,
        "enabled": domain.enabled,
        "default_quota": domain.default_quota,
        "alias_domains": list(domain.alias_domains),
        "description": domain.description,
        "created": domain.created.isoformat(),
        "updated": domain.updated.isoformat(),
        "revision": domain.revision,
    }


def account_view(account: Account) -> dict[str, Any]:
    """An account as plain data, without its password hash (safe for logs, audit and output)."""
    return {
        "address": str(account.address),
        "display_name": account.display_name,
        "enabled": account.enabled,
        "quota": account.quota,
        "services": sorted(s.value for s in account.services),
        "maildir": account.maildir,
        "created": account.created.isoformat(),
        "updated": account.updated.isoformat(),
        "revision": account.revision,
    }


def alias_view(alias: Alias) -> dict[str, Any]:
    return {
        "source": alias.source,
        "destinations": list(alias.destinations),
        "enabled": alias.enabled,
        "created": alias.created.isoformat(),
        "updated": alias.updated.isoformat(),
        "revision": alias.revision,
    }


class Provisioner:
    """The use cases. ``actor`` names who acts (``token:<id>``, ``cli:<user>``, ``scim:<id>``)."""

    def __init__(
        self,
        directory: Directory,
        hasher: PasswordHasher,
        *,
        audit: AuditSink,
        invalidator: Invalidator | None = None,
        policy: PasswordPolicy | None = None,
    ) -> None:
        self.directory = directory
        self._hasher = hasher
        self.policy = policy or PasswordPolicy.from_settings(Settings())
        self._audit = audit
        self._invalidator = invalidator
        self._hash_pool = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="provision-hash")
        # called with each account deleted here (e.g. the web drops its second factor); a
        # failing hook is logged, the deletion stands
        self.deletion_hooks: list[Callable[[Account], Awaitable[None]]] = []

    def close(self) -> None:
        """Stop the hashing threads (idempotent)."""
        self._hash_pool.shutdown(wait=False, cancel_futures=True)

    async def _hash(self, password: Secret, address: Address) -> str:
        """The stored form of a new password, once the policy accepted it."""
        plain = password.reveal()
        self.policy.check_password(plain, context=(str(address), address.local))
        return await self._hash_plain(plain)

    async def _hash_plain(self, plain: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._hash_pool, self._hasher.hash, plain)

    async def _import(self, stored: str, role: Role) -> str:
        """The stored form of an imported hash the policy lets ``role`` import: canonical, and
        a (migration-only) ``{PLAIN}`` value hashed with the configured scheme."""
        self.policy.check_import(stored, role)
        plain = cleartext_of(stored)
        return validate_hash(stored) if plain is None else await self._hash_plain(plain)

    # -- plumbing ---------------------------------------------------------------------------

    async def _policy_checked(
        self, action: str, target: str, actor: str, stored: Awaitable[str]
    ) -> str:
        """Await ``stored``; a password-policy refusal is audited (rule only) and re-raised."""
        try:
            return await stored
        except PolicyViolation as exc:
            self._audit.emit(
                AuditEvent(
                    action,
                    type(exc).__name__,
                    actor=actor,
                    target=target,
                    detail={"error": str(exc)},
                )
            )
            raise

    async def _audited(
        self,
        action: str,
        target: str,
        actor: str,
        change: Callable[[], Awaitable[T]],
        *,
        before: dict[str, Any] | None = None,
        view: Callable[[T], dict[str, Any]] | None = None,
    ) -> T:
        try:
            result = await change()
        except IdsvcError as exc:
            self._audit.emit(
                AuditEvent(
                    action,
                    type(exc).__name__,
                    actor=actor,
                    target=target,
                    detail={"error": str(exc)},
                )
            )
            raise
        detail: dict[str, Any] = {}
        if before is not None:
            detail["before"] = before
        if view is not None:
            detail["after"] = view(result)
        self._audit.emit(AuditEvent(action, "ok", actor=actor, target=target, detail=detail))
        return result

    def _drop_user(self, user: str) -> None:
        if self._invalidator is not None:
            self._invalidator.invalidate(user)

    def _drop_domain(self, domain: str) -> None:
        if self._invalidator is not None:
            self._invalidator.invalidate_domain(domain)

    def _drop_alias(self, source: str) -> None:
        """An alias changed: the mail lookups' cache must not keep the old expansion (a
        catch-all concerns the whole domain, and the control socket only names addresses)."""
        if source.startswith("@"):
            self._drop_domain(source[1:])
        else:
            self._drop_user(source)

    # -- domains ----------------------------------------------------------------------------

    async def get_domain(self, name: str) -> Domain:
        canonical = canonical_domain(name)
        domain = await self.directory.find_domain(canonical)
        if domain is None or domain.name != canonical:
            raise NotFound(f"domain {canonical} does not exist")
        return domain

    async def list_domains(
        self, *, prefix: str = "", cursor: str | None = None, limit: int = 100
    ) -> Page[Domain]:
        return await self.directory.list_domains(
            prefix=prefix.lower(), cursor=cursor, limit=_limit(limit)
        )

    async def create_domain(
        self,
        name: str,
        *,
        actor: str,
        enabled: bool = True,
        default_quota: int = 0,
        alias_domains: Iterable[str] = (),
        description: str = "",
    ) -> Domain:
        canonical = canonical_domain(name)
        aliases = tuple(sorted({canonical_domain(a) for a in alias_domains}))
        if canonical in aliases:
            raise InvalidInput("a domain cannot be its own alias domain")
        domain = Domain(
            name=canonical,
            enabled=enabled,
            default_quota=_quota(default_quota, "default_quota"),
            alias_domains=aliases,
            description=_text(description, "description", MAX_DESCRIPTION),
        )
        return await self._audited(
            "domain.create",
            canonical,
            actor,
            lambda: self.directory.add_domain(domain),
            view=domain_view,
        )

    async def update_domain(
        self,
        name: str,
        *,
        actor: str,
        if_revision: int | None = None,
        enabled: bool | None = None,
        default_quota: int | None = None,
        alias_domains: Iterable[str] | None = None,
        description: str | None = None,
    ) -> Domain:
        before = await self.get_domain(name)
        aliases = None
        if alias_domains is not None:
            aliases = tuple(sorted({canonical_domain(a) for a in alias_domains}))
            if before.name in aliases:
                raise InvalidInput("a domain cannot be its own alias domain")
        changes = DomainChanges(
            enabled=enabled,
            default_quota=None if default_quota is None else _quota(default_quota, "default_quota"),
            alias_domains=aliases,
            description=None
            if description is None
            else _text(description, "description", MAX_DESCRIPTION),
        )
        result = await self._audited(
            "domain.update",
            before.name,
            actor,
            lambda: self.directory.update_domain(before.name, changes, if_revision=if_revision),
            before=domain_view(before),
            view=domain_view,
        )
        self._drop_domain(before.name)
        for alias in before.alias_domains:
            self._drop_domain(alias)
        return result

    async def delete_domain(self, name: str, *, actor: str, cascade: bool = False) -> None:
        before = await self.get_domain(name)
        await self._audited(
            "domain.delete",
            before.name,
            actor,
            lambda: self.directory.delete_domain(before.name, cascade=cascade),
            before=domain_view(before),
        )
        self._drop_domain(before.name)
        for alias in before.alias_domains:
            self._drop_domain(alias)

    # -- accounts ---------------------------------------------------------------------------

    async def get_user(self, address: str) -> Account:
        canonical = Address.parse(address)
        account = await self.directory.find_account(canonical)
        if account is None:
            raise NotFound(f"user {canonical} does not exist")
        return account

    async def list_users(
        self,
        domain: str | None = None,
        *,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Account]:
        name = None if domain is None else canonical_domain(domain)
        return await self.directory.list_accounts(
            name, prefix=prefix.lower(), cursor=cursor, limit=_limit(limit)
        )

    async def create_user(
        self,
        address: str,
        *,
        actor: str,
        password: Secret | None = None,
        password_hash: str | None = None,
        display_name: str = "",
        enabled: bool = True,
        quota: int | None = None,
        services: Iterable[str | Service] | None = None,
        role: Role = Role.DOMAIN_ADMIN,
    ) -> Account:
        """Create an account. Exactly one of ``password`` (checked by the policy, hashed here)
        or ``password_hash`` (an existing hash ``role`` may import under the policy)."""
        canonical = Address.parse(address)
        if (password is None) == (password_hash is None):
            raise InvalidInput("give exactly one of password or password_hash")
        stored = await self._policy_checked(
            "account.create",
            str(canonical),
            actor,
            self._hash(password, canonical)
            if password is not None
            else self._import(password_hash or "", role),
        )
        if quota is None:
            domain = await self.get_domain(canonical.domain)
            quota = domain.default_quota
        account = Account(
            address=canonical,
            password_hash=stored,
            display_name=_text(display_name, "display_name", MAX_DISPLAY_NAME),
            enabled=enabled,
            quota=_quota(quota),
            services=ALL_SERVICES if services is None else parse_services(services),
        )
        result = await self._audited(
            "account.create",
            str(canonical),
            actor,
            lambda: self.directory.add_account(account),
            view=account_view,
        )
        self._drop_user(str(canonical))  # a cached UNKNOWN_USER must not outlive the creation
        return result

    async def update_user(
        self,
        address: str,
        *,
        actor: str,
        if_revision: int | None = None,
        display_name: str | None = None,
        enabled: bool | None = None,
        quota: int | None = None,
        services: Iterable[str | Service] | None = None,
    ) -> Account:
        before = await self.get_user(address)
        changes = AccountChanges(
            display_name=None
            if display_name is None
            else _text(display_name, "display_name", MAX_DISPLAY_NAME),
            enabled=enabled,
            quota=None if quota is None else _quota(quota),
            services=None if services is None else parse_services(services),
        )
        return await self._change_user(before, "account.update", actor, changes, if_revision)

    async def set_password(
        self, address: str, password: Secret, *, actor: str, if_revision: int | None = None
    ) -> Account:
        before = await self.get_user(address)
        stored = await self._policy_checked(
            "account.password", str(before.address), actor, self._hash(password, before.address)
        )
        changes = AccountChanges(password_hash=stored)
        return await self._change_user(before, "account.password", actor, changes, if_revision)

    async def import_password_hash(
        self,
        address: str,
        stored: str,
        *,
        actor: str,
        if_revision: int | None = None,
        role: Role = Role.DOMAIN_ADMIN,
    ) -> Account:
        """Replace the password with an existing hash ``role`` may import under the policy."""
        before = await self.get_user(address)
        imported = await self._policy_checked(
            "account.password", str(before.address), actor, self._import(stored, role)
        )
        changes = AccountChanges(password_hash=imported)
        return await self._change_user(before, "account.password", actor, changes, if_revision)

    async def set_enabled(self, address: str, enabled: bool, *, actor: str) -> Account:
        return await self.update_user(address, actor=actor, enabled=enabled)

    async def _change_user(
        self,
        before: Account,
        action: str,
        actor: str,
        changes: AccountChanges,
        if_revision: int | None,
    ) -> Account:
        try:
            return await self._audited(
                action,
                str(before.address),
                actor,
                lambda: self.directory.update_account(
                    before.address, changes, if_revision=if_revision
                ),
                before=account_view(before),
                view=account_view,
            )
        finally:  # drop the cache even if the outcome is unknown (e.g. a timeout mid-write)
            self._drop_user(str(before.address))

    async def delete_user(self, address: str, *, actor: str) -> None:
        before = await self.get_user(address)
        try:
            await self._audited(
                "account.delete",
                str(before.address),
                actor,
                lambda: self.directory.delete_account(before.address),
                before=account_view(before),
            )
        finally:
            self._drop_user(str(before.address))
        for hook in self.deletion_hooks:
            try:
                await hook(before)
            except IdsvcError as exc:
                log.warning("after deleting %s: %s", before.address, exc)

    # -- aliases ----------------------------------------------------------------------------

    async def get_alias(self, source: str) -> Alias:
        canonical = canonical_alias_source(source)
        alias = await self.directory.find_alias(canonical)
        if alias is None:
            raise NotFound(f"alias {canonical} does not exist")
        return alias

    async def list_aliases(
        self,
        domain: str | None = None,
        *,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Alias]:
        name = None if domain is None else canonical_domain(domain)
        return await self.directory.list_aliases(
            name, prefix=prefix.lower(), cursor=cursor, limit=_limit(limit)
        )

    @staticmethod
    def _destinations(destinations: Iterable[str]) -> tuple[str, ...]:
        out = tuple(dict.fromkeys(canonical_address(d) for d in destinations))
        if not out:
            raise InvalidInput("an alias needs at least one destination")
        if len(out) > MAX_DESTINATIONS:
            raise InvalidInput(f"an alias has at most {MAX_DESTINATIONS} destinations")
        return out

    async def create_alias(
        self, source: str, destinations: Iterable[str], *, actor: str, enabled: bool = True
    ) -> Alias:
        canonical = canonical_alias_source(source)
        alias = Alias(
            source=canonical, destinations=self._destinations(destinations), enabled=enabled
        )
        created = await self._audited(
            "alias.create",
            canonical,
            actor,
            lambda: self.directory.add_alias(alias),
            view=alias_view,
        )
        self._drop_alias(canonical)  # a cached "no such alias" must not outlive the creation
        return created

    async def update_alias(
        self,
        source: str,
        *,
        actor: str,
        if_revision: int | None = None,
        destinations: Iterable[str] | None = None,
        enabled: bool | None = None,
    ) -> Alias:
        before = await self.get_alias(source)
        changes = AliasChanges(
            destinations=None if destinations is None else self._destinations(destinations),
            enabled=enabled,
        )
        updated = await self._audited(
            "alias.update",
            before.source,
            actor,
            lambda: self.directory.update_alias(before.source, changes, if_revision=if_revision),
            before=alias_view(before),
            view=alias_view,
        )
        self._drop_alias(before.source)
        return updated

    async def delete_alias(self, source: str, *, actor: str) -> None:
        before = await self.get_alias(source)
        await self._audited(
            "alias.delete",
            before.source,
            actor,
            lambda: self.directory.delete_alias(before.source),
            before=alias_view(before),
        )
        self._drop_alias(before.source)
