"""Mail lookups: the one place that answers "is this ours, where does it go, who may send as it".

Every mail-facing surface asks here: the Postfix socketmap / tcp_table maps, the policy service,
the Dovecot dict passdb/userdb, and (for Dovecot 2.4 and nginx) the HTTP adapters. The public API
of :class:`MailLookups` is stable; callers pass raw strings from the wire and get typed answers:

==============================  ===================================================================
``is_hosted_domain(name)``      True for an enabled domain or one of its alias domains
``mailbox_path(address)``       ``<domain>/<local>/Maildir/`` (relative to ``mail.vmail_root``)
                                for an enabled account, after the recipient extension is stripped
                                and an alias domain is mapped to its target; else None
``expand_alias(address)``       the final destinations of an address (tuple, de-duplicated,
                                order kept), or () when it is no alias: exact alias, then the
                                address without its extension, then (alias domain) the same local
                                part in the target domain, then — only when no account has the
                                address — the catch-all ``@domain``. Nested aliases are followed
                                to ``mail.max_alias_depth``; a destination that refers back to
                                an address being expanded is final (Postfix's self-reference).
``sender_logins(address)``      the canonical SASL logins allowed to use ``address`` as sender:
                                its own account, plus the enabled accounts a (non catch-all)
                                alias of it expands to; () when nobody owns it
``quota(address)``              the account's quota in bytes (0 = unlimited) or None
``account(address)``            the account an address resolves to (extension stripped, alias
                                domain mapped), enabled or not, or None
``userdb(address)``             :class:`UserRecord` (home, mail, uid, gid, quota_rule) or None
``passdb(address)``             :class:`PassRecord` (``{SCHEME}`` hash, nologin reason) or None
``list_users(cursor, limit)``   one page of canonical account addresses (never all users)
==============================  ===================================================================

Input that is not an address (two ``@``, quoted local part, NUL, CR/LF, over-long) is "not
found", never an error: a malformed key must not make Postfix retry. Only a directory fault is an
error: :class:`idsvc.errors.TemporaryFailure` (also on ``mail.timeout``). Expanding an alias past
``max_alias_results`` addresses raises :class:`ExpansionLimit` (a configuration problem, not an
outage).

Caching: the three directory reads (domain, account, alias) are kept in bounded TTL caches
(``mail.cache_ttl`` seconds, ``mail.cache_size`` entries each; "none" answers too, so a flood of
unknown recipients costs one read per address and TTL). :meth:`invalidate` /
:meth:`invalidate_domain` make this an ``idsvc.provisioning.Invalidator``: provisioning and the
control socket drop changed entries at once, as for the auth cache.

What it does not do: authenticate (that is ``idsvc.auth.engine``), write anything, or trust
anything about the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import pwd
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from idsvc.auth.cache import TtlCache
from idsvc.config import MailSettings
from idsvc.directory.base import MAX_PAGE, AccountLookup, AliasLookup, DomainLookup
from idsvc.errors import ConfigError, DirectoryError, IdsvcError, InvalidInput, TemporaryFailure
from idsvc.model import (
    MAX_ADDRESS,
    Account,
    Address,
    Alias,
    Domain,
    Page,
    Service,
    canonical_address,
    canonical_domain,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class ExpansionLimit(IdsvcError):
    """An alias expands to more addresses than ``mail.max_alias_results`` (configuration)."""


class MailDirectory(AccountLookup, DomainLookup, AliasLookup, Protocol):
    """What the lookups need from a directory."""


@runtime_checkable
class AccountListing(Protocol):
    async def list_accounts(
        self,
        domain: str | None = None,
        *,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Account]: ...


@dataclass(frozen=True, slots=True)
class UserRecord:
    """Dovecot userdb fields of one account."""

    user: str  # canonical address
    home: str
    mail: str
    uid: int
    gid: int
    quota_rule: str | None  # None: no quota (unlimited)

    def fields(self) -> dict[str, str]:
        out = {
            "user": self.user,
            "home": self.home,
            "mail": self.mail,
            "uid": str(self.uid),
            "gid": str(self.gid),
        }
        if self.quota_rule is not None:
            out["quota_rule"] = self.quota_rule
        return out


@dataclass(frozen=True, slots=True)
class PassRecord:
    """Dovecot passdb fields: the stored hash (``{SCHEME}…``, None for bind-only directories)
    and, for an account that may not log in, why (Dovecot ``nologin`` + ``reason``)."""

    user: str
    password: str | None
    nologin: str | None = None

    def __repr__(self) -> str:  # never print the hash
        return f"PassRecord({self.user}, nologin={self.nologin!r})"


def vmail_ids(settings: MailSettings) -> tuple[int, int]:
    """The uid/gid every mailbox belongs to (``vmail_user`` when set, else the numbers)."""
    if settings.vmail_user is None:
        return settings.vmail_uid, settings.vmail_gid
    try:
        entry = pwd.getpwnam(settings.vmail_user)
    except KeyError:
        raise ConfigError(f"mail.vmail_user: no such system user {settings.vmail_user!r}") from None
    if entry.pw_uid == 0:
        raise ConfigError("mail.vmail_user must not be root")
    with contextlib.suppress(KeyError):
        grp.getgrgid(entry.pw_gid)
    return entry.pw_uid, entry.pw_gid


def _parse(text: str) -> Address | None:
    """The canonical address in a wire key, or None when the key is no acceptable address."""
    if not isinstance(text, str) or len(text) > MAX_ADDRESS or not text.isprintable():
        return None
    try:
        return Address.parse(text)
    except InvalidInput:
        return None


class MailLookups:
    """See the module docstring. One instance per process, shared by every mail listener."""

    def __init__(
        self,
        directory: MailDirectory,
        settings: MailSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dir = directory
        self._settings = settings
        self._delims = settings.recipient_delimiter
        self._uid, self._gid = vmail_ids(settings)
        size, ttl = settings.cache_size, settings.cache_ttl
        self._domains: TtlCache[Domain] = TtlCache(max_entries=size, ttl=ttl, clock=clock)
        self._accounts: TtlCache[Account] = TtlCache(max_entries=size, ttl=ttl, clock=clock)
        self._aliases: TtlCache[Alias] = TtlCache(max_entries=size, ttl=ttl, clock=clock)

    @property
    def settings(self) -> MailSettings:
        return self._settings

    # -- invalidation (idsvc.provisioning.Invalidator) -------------------------------------

    def invalidate(self, user: str | None = None) -> None:
        """Forget what is cached about one address or alias source (or everything)."""
        if user is None:
            self._domains.discard()
            self._accounts.discard()
            self._aliases.discard()
            return
        key = user
        with contextlib.suppress(InvalidInput):
            key = (
                "@" + canonical_domain(user[1:])
                if user.startswith("@")
                else canonical_address(user)
            )
        self._accounts.discard(key)
        self._aliases.discard(key)

    def invalidate_domain(self, domain: str) -> None:
        """A domain changed (alias domains, enabled …): drop every cached record. Domain changes
        are rare, and alias-domain mappings reach into other domains' entries."""
        self.invalidate(None)

    # -- public lookups --------------------------------------------------------------------

    async def is_hosted_domain(self, name: str) -> bool:
        if not isinstance(name, str) or not name.isprintable():
            return False
        try:
            canonical = canonical_domain(name)
        except InvalidInput:
            return False
        return await self._timed(self._hosted(canonical)) is not None

    async def account(self, address: str) -> Account | None:
        parsed = _parse(address)
        if parsed is None:
            return None
        return await self._timed(self._account_for(parsed))

    async def mailbox_path(self, address: str) -> str | None:
        account = await self.account(address)
        if account is None or not account.enabled:
            return None
        return account.maildir

    async def quota(self, address: str) -> int | None:
        account = await self.account(address)
        return None if account is None else account.quota

    async def expand_alias(self, address: str) -> tuple[str, ...]:
        parsed = _parse(address)
        if parsed is None:
            return ()
        return await self._timed(self._expand_top(parsed))

    async def sender_logins(self, address: str) -> tuple[str, ...]:
        parsed = _parse(address)
        if parsed is None:
            return ()
        return await self._timed(self._owners(parsed))

    async def userdb(self, address: str) -> UserRecord | None:
        account = await self.account(address)
        if account is None:
            return None
        return self.user_record(account)

    async def passdb(self, address: str, service: str | None = None) -> PassRecord | None:
        """The passdb record; ``service`` (imap, pop3, smtp …) adds the per-service check."""
        parsed = _parse(address)
        if parsed is None:
            return None
        found = await self._timed(self._account_and_domain(parsed))
        if found is None:
            return None
        account, domain = found
        return PassRecord(
            user=str(account.address),
            password=account.password_hash,
            nologin=_refusal(account, domain, service),
        )

    async def list_users(self, cursor: str | None = None, limit: int = 500) -> Page[str]:
        """One page of canonical account addresses in key order (``doveadm user -A``)."""
        if not isinstance(self._dir, AccountListing):
            raise TemporaryFailure("this directory cannot list accounts")
        page = await self._timed(
            self._dir.list_accounts(cursor=cursor, limit=max(1, min(limit, MAX_PAGE)))
        )
        return Page([str(a.address) for a in page.items], page.next_cursor)

    def user_record(self, account: Account) -> UserRecord:
        s = self._settings
        address = account.address
        home = s.home.format(
            root=str(s.vmail_root).rstrip("/"),
            domain=address.domain,
            local=address.local,
            address=str(address),
        )
        rule = s.quota_rule.format(bytes=account.quota) if account.quota > 0 else None
        return UserRecord(str(address), home, s.mail_location, self._uid, self._gid, rule)

    # -- internals -------------------------------------------------------------------------

    async def _timed(self, work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._settings.timeout):
                return await work
        except TimeoutError:
            raise TemporaryFailure(f"mail lookup took over {self._settings.timeout:g} s") from None
        except TemporaryFailure:
            raise
        except DirectoryError as exc:  # ambiguous entries and the like: retry, never "no"
            raise TemporaryFailure(f"directory: {type(exc).__name__}: {exc}") from exc

    async def _find_domain(self, name: str) -> Domain | None:
        found, domain = self._domains.get(name)
        if not found:
            domain = await self._dir.find_domain(name)
            self._domains.put(name, domain)
        return domain

    async def _find_account(self, address: Address) -> Account | None:
        key = str(address)
        found, account = self._accounts.get(key)
        if not found:
            account = await self._dir.find_account(address)
            self._accounts.put(key, account)
        return account

    async def _find_alias(self, source: str) -> Alias | None:
        found, alias = self._aliases.get(source)
        if not found:
            alias = await self._dir.find_alias(source)
            self._aliases.put(source, alias)
        return alias if alias is not None and alias.enabled else None

    async def _hosted(self, name: str) -> Domain | None:
        """The enabled domain ``name`` is (or is an alias domain of), else None."""
        domain = await self._find_domain(name)
        return domain if domain is not None and domain.enabled else None

    async def _account_and_domain(self, address: Address) -> tuple[Account, Domain] | None:
        domain = await self._hosted(address.domain)
        if domain is None:
            return None
        # the exact local part first ("a+b" may be a real mailbox), then without the extension
        account = await self._find_account(Address(address.local, domain.name))
        base = address.without_extension(self._delims)
        if account is None and base != address:
            account = await self._find_account(Address(base.local, domain.name))
        return None if account is None else (account, domain)

    async def _account_for(self, address: Address) -> Account | None:
        found = await self._account_and_domain(address)
        return None if found is None else found[0]

    async def _direct(self, address: Address) -> tuple[str, ...] | None:
        """Destinations of the alias rules for ``address`` itself (no catch-all), or None."""
        domain = await self._hosted(address.domain)
        if domain is None:
            return None
        base = address.without_extension(self._delims)
        for key in dict.fromkeys((address, base)):
            alias = await self._find_alias(str(key))
            if alias is not None:
                return alias.destinations
        if domain.name != address.domain:  # alias domain: the same user in the target domain
            target = Address(base.local, domain.name)
            mapped = await self._direct(target)
            if mapped is not None:
                return mapped
            if await self._find_account(target) is not None:
                return (str(target),)
            return await self._catchall(address.domain) or await self._catchall(domain.name)
        if await self._account_for(address) is not None:
            return None  # a mailbox: a catch-all never captures it
        return await self._catchall(domain.name)

    async def _catchall(self, domain: str) -> tuple[str, ...] | None:
        alias = await self._find_alias("@" + domain)
        return None if alias is None else alias.destinations

    async def _expand_top(self, address: Address) -> tuple[str, ...]:
        first = await self._direct(address)
        if first is None:
            return ()
        out: dict[str, None] = {}
        await self._expand_into(first, (str(address),), out, 1)
        return tuple(out)

    async def _expand_into(
        self,
        destinations: tuple[str, ...],
        chain: tuple[str, ...],
        out: dict[str, None],
        depth: int,
    ) -> None:
        """Append the final addresses of ``destinations`` to ``out``. A destination that is in
        ``chain`` (being expanded) or beyond ``max_alias_depth`` is final as it is; Postfix
        expands the latter further itself if it must."""
        limit = self._settings.max_alias_results
        for dest in destinations:
            parsed = _parse(dest)
            key = str(parsed) if parsed is not None else dest
            nested = None
            if parsed is not None and key not in chain and depth < self._settings.max_alias_depth:
                nested = await self._direct(parsed)
            if nested is None:
                out[key] = None
            else:
                await self._expand_into(nested, (*chain, key), out, depth + 1)
            if len(out) > limit:
                raise ExpansionLimit(f"alias expands to more than {limit} addresses")

    async def _owners(self, address: Address) -> tuple[str, ...]:
        owners: dict[str, None] = {}
        account = await self._account_for(address)
        if account is not None and account.enabled:
            owners[str(account.address)] = None
        domain = await self._hosted(address.domain)
        if domain is None:
            return tuple(owners)
        base = address.without_extension(self._delims)
        sources = [address, base, Address(base.local, domain.name)]
        for source in dict.fromkeys(sources):
            alias = await self._find_alias(str(source))
            if alias is None:
                continue
            finals: dict[str, None] = {}
            await self._expand_into(alias.destinations, (str(source),), finals, 1)
            for dest in finals:
                parsed = _parse(dest)
                if parsed is None:
                    continue
                owner = await self._account_for(parsed)
                if owner is not None and owner.enabled:
                    owners[str(owner.address)] = None
            break
        return tuple(owners)


def _refusal(account: Account, domain: Domain, service: str | None) -> str | None:
    """Why an account may not log in (Dovecot ``nologin`` reason), or None."""
    if not account.enabled:
        return "account disabled"
    if not domain.enabled:
        return "domain disabled"
    if service is not None:
        parsed = Service.parse(service)
        if parsed is None or parsed not in account.services:
            return "service not enabled"
    return None
