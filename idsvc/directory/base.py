"""The directory interface: small Protocols split by capability, and the change records.

A backend implements the capabilities it has:

* ``AccountLookup`` / ``DomainLookup`` / ``AliasLookup`` — point queries used by the auth core
  and by recipient resolution. Every method is one indexed query; nothing ever loads all users.
* ``BindVerifier`` — only for directories that check passwords themselves (LDAP simple bind;
  corporate LDAP / AD where hashes are unreadable).
* ``Provisioning`` — writes and paged listings, used only by ``idsvc.provisioning`` with a writer
  identity.

All arguments are already canonical (``idsvc.model``); backends never canonicalise again but do
escape for their own query language. Errors are ``idsvc.errors.DirectoryError`` subclasses: an
outage is ``TemporaryFailure`` — never ``None`` ("no such user") — and two entries for one key is
``AmbiguousEntry``. Methods are coroutines: blocking client libraries run in a bounded executor
inside the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

from idsvc.model import Account, Address, Alias, Domain, Page, Service

MAX_PAGE = 1000  # no listing returns more than this many items in one call


class BindResult(Enum):
    """What a directory-side password check said (LDAP bind, AD sub-codes)."""

    OK = "ok"
    INVALID_CREDENTIALS = "invalid_credentials"
    EXPIRED = "expired"  # AD 532 / 773, ppolicy expired
    DISABLED = "disabled"  # AD 533 / 701 / 775 (locked)


@runtime_checkable
class AccountLookup(Protocol):
    async def find_account(self, address: Address) -> Account | None:
        """The account whose primary address is ``address``; None if there is none."""
        ...


@runtime_checkable
class LoginLookup(Protocol):
    """A directory that can read an account the cheap way authentication needs it."""

    async def find_login(self, address: Address) -> Account | None:
        """The account whose primary address is ``address``, with only what an authentication
        decides on: address, password hash, enabled, services, revision and ``uid``. Display
        name, quota and timestamps are not read (``NOT_READ`` times, empty name, no quota): the
        result is for the auth core, never for showing or writing back."""
        ...


@runtime_checkable
class DomainLookup(Protocol):
    async def find_domain(self, name: str) -> Domain | None:
        """The domain called ``name``, or the domain that lists ``name`` in its alias domains."""
        ...


@runtime_checkable
class AliasLookup(Protocol):
    async def find_alias(self, source: str) -> Alias | None:
        """The alias with exactly this source (``local@domain`` or catch-all ``@domain``)."""
        ...


@runtime_checkable
class BindVerifier(Protocol):
    async def bind_check(self, account: Account, password: str) -> BindResult:
        """Let the directory verify ``password`` for ``account`` (raises TemporaryFailure)."""
        ...


@dataclass(frozen=True, slots=True)
class DomainChanges:
    """Fields to change on a domain; None leaves a field as it is."""

    enabled: bool | None = None
    default_quota: int | None = None
    alias_domains: tuple[str, ...] | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class AccountChanges:
    """Fields to change on an account; None leaves a field as it is."""

    password_hash: str | None = None
    display_name: str | None = None
    enabled: bool | None = None
    quota: int | None = None
    services: frozenset[Service] | None = None


@dataclass(frozen=True, slots=True)
class AliasChanges:
    destinations: tuple[str, ...] | None = None
    enabled: bool | None = None


@runtime_checkable
class Provisioning(Protocol):
    """Writes and listings. ``if_revision`` makes an update conditional (ETag / If-Match):
    a stale revision raises ``Conflict``. Every successful write bumps ``revision`` by one and sets
    ``updated``. Listings are ordered by key, start after ``cursor`` and hold at most
    ``min(limit, MAX_PAGE)`` items; ``prefix`` filters on the start of the key."""

    async def add_domain(self, domain: Domain) -> Domain: ...

    async def update_domain(
        self, name: str, changes: DomainChanges, *, if_revision: int | None = None
    ) -> Domain: ...

    async def delete_domain(self, name: str, *, cascade: bool = False) -> None:
        """Without ``cascade`` a domain that still has accounts or aliases raises Conflict."""
        ...

    async def list_domains(
        self, *, prefix: str = "", cursor: str | None = None, limit: int = 100
    ) -> Page[Domain]: ...

    async def add_account(self, account: Account) -> Account:
        """NotFound if the domain does not exist; AlreadyExists if the address is taken by an
        account or an alias."""
        ...

    async def update_account(
        self, address: Address, changes: AccountChanges, *, if_revision: int | None = None
    ) -> Account: ...

    async def delete_account(self, address: Address) -> None: ...

    async def list_accounts(
        self,
        domain: str | None = None,
        *,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Account]: ...

    async def add_alias(self, alias: Alias) -> Alias: ...

    async def update_alias(
        self, source: str, changes: AliasChanges, *, if_revision: int | None = None
    ) -> Alias: ...

    async def delete_alias(self, source: str) -> None: ...

    async def list_aliases(
        self,
        domain: str | None = None,
        *,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Alias]: ...


class Directory(AccountLookup, DomainLookup, AliasLookup, Provisioning, Protocol):
    """A full read-write backend (embedded store, OpenLDAP with our schema)."""

    async def ping(self) -> None:
        """Raise TemporaryFailure unless the backend answers now (readiness checks)."""
        ...

    async def close(self) -> None: ...
