"""``CorporateDirectory``: a corporate LDAP or Active Directory that idsvc reads, never writes.

Lookups run as the service account (``bind_dn``; anonymous when it is empty and the server
allows it) through a read-only attribute profile (``idsvc.directory.profiles``): a login is found
with the profile's filter, escaped at ``filters.template``; its primary address, aliases, quota,
enabled state and services come from the profile. Passwords are checked by **bind-through**: the
user's DN is found by a search (never taken from what the user typed) and a simple bind as that
DN runs on a separate connection pool; or, where the service account may read ``userPassword``
and ``auth_method = "search"``, the hash is verified by idsvc like for our own schema.

Mail domains are the configured ``mail_domains`` (corporate directories have no domain
objects). A secondary address (``smtp:`` in ``proxyAddresses``, ``mailAlias``,
``shadowAddress``) reads as an alias to the primary one. Listings page through the primary
address attribute (RFC 2696, at most ``page_size`` per page, as AD's 1000 limit requires).

With the local overlay attached (``attach_overlay``; ``idsvc.runtime`` does it), a site may still
keep **local aliases** (``sales@`` → two people, a catch-all) and **quota overrides** beside the
directory: aliases are read from the overlay before the directory, overrides replace the
directory's quota, and the alias writes and quota-only account changes go there.

Changes made in the directory by others: ``start_change_feed`` (``idsvc serve``) follows them
(``feed.py``: syncrepl or AD change notification) and drops what the caches hold about each
changed account, mapped through the addresses recorded by stable id when it was last read.

How it fails: every other write raises ``ReadOnlyDirectory`` naming the profile; an unreachable,
slow or referring server, or a refused service bind, is ``TemporaryFailure`` (never "no such
user"); two entries for one login are ``AmbiguousEntry``. Referrals are never chased; against
AD every search carries the domain-scope control so the domain root answers without them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import ldap
import ldap.controls

from idsvc.config import LdapSettings
from idsvc.directory import filters
from idsvc.directory.base import AccountChanges, AliasChanges, BindResult, DomainChanges
from idsvc.directory.checks import (
    check_destinations,
    check_page_limit,
    check_prefix,
    check_quota,
    check_source,
)
from idsvc.directory.ldap.aio import AioPool, Read, read_with_retry
from idsvc.directory.ldap.errors import ReferralSeen, bind_failure, map_error
from idsvc.directory.ldap.feed import Batch, Change, ChangeFeed, entry_addresses
from idsvc.directory.ldap.listing import (
    decode_cursor,
    encode_cursor,
    paged,
    smallest_keys,
)
from idsvc.directory.ldap.pool import Identity, Servers, ThreadPool, log
from idsvc.directory.ldap.search import NO_ATTRS, SCOPE_SUBTREE, search
from idsvc.directory.mapping import Entry
from idsvc.directory.profiles import ReadOnlyProfile, canonical_domains, profile_for
from idsvc.errors import (
    AlreadyExists,
    ConfigError,
    InvalidInput,
    NotFound,
    ReadOnlyDirectory,
    TemporaryFailure,
)
from idsvc.model import Account, Address, Alias, Domain, Page, utcnow
from idsvc.overlay import LocalAliases, OverlayStore

if TYPE_CHECKING:
    from idsvc.provisioning import Invalidator

T = TypeVar("T")
feed_log = logging.getLogger("idsvc.directory.ldap.feed")

DOMAIN_SCOPE_OID = "1.2.840.113556.1.4.1339"  # LDAP_SERVER_DOMAIN_SCOPE_OID: no referrals
READER_PIPELINE = 128
LIST_THREADS = 2
RECENT_DNS = 4096
QUOTA_REFRESH = 30.0  # seconds: quota overrides made by another process show within this
KNOWN_SUBJECTS = 65536  # stable id -> addresses of accounts read recently (for the change feed)


class CorporateDirectory:
    """A read-only directory behind a :class:`ReadOnlyProfile` (see the module docstring)."""

    def __init__(self, settings: LdapSettings, profile: ReadOnlyProfile | None = None) -> None:
        try:
            self._base = filters.parse_dn(settings.base_dn)
            self._group = (
                filters.parse_dn(settings.required_group) if settings.required_group else None
            )
        except InvalidInput as exc:
            raise ConfigError(f"directory.ldap: {exc}") from exc
        self._settings = settings
        self._profile = profile or profile_for(settings.profile, settings.mapping)
        self._domains = canonical_domains(settings.mail_domains)
        self._with_hash = settings.auth_method == "search" and bool(self._profile.password)
        servers = Servers(settings.uris, settings.retry_after)
        self._servers = servers
        secret = settings.bind_password.get_secret_value() if settings.bind_password else None
        reader = Identity("reader", settings.bind_dn, secret)
        scope = self._profile.domain_scope
        self._aio_controls: list[tuple[str, bool, bytes | None]] | None = (
            [(DOMAIN_SCOPE_OID, False, None)] if scope else None
        )
        self._list_controls = (
            [ldap.controls.RequestControl(DOMAIN_SCOPE_OID, False)] if scope else []
        )
        size = settings.pool_size
        self._reader = AioPool(
            reader, settings, servers, size, per_conn=READER_PIPELINE, controls=self._aio_controls
        )
        self._lister = ThreadPool(reader, settings, servers, min(size, LIST_THREADS))
        self._binder = AioPool(Identity("binder", "", None), settings, servers, size, per_conn=1)
        self._dns: dict[Address, str] = {}
        self._local: LocalAliases | None = None
        self._quotas: dict[str, int] = {}
        self._quotas_at = float("-inf")
        self._pending = 0
        self._closed = False
        # what the change feed needs to map a change to cached names: the addresses of every
        # account read recently, by stable id (bounded; once something was evicted, a change
        # to an id not held here may concern a cached account: it flushes everything)
        self._subjects: collections.OrderedDict[str, tuple[str, ...]] = collections.OrderedDict()
        self._subjects_evicted = False
        self._feed: ChangeFeed | None = None
        self._feed_target: Invalidator | None = None

    @property
    def profile(self) -> ReadOnlyProfile:
        return self._profile

    @property
    def mail_domains(self) -> frozenset[str]:
        return self._domains

    def attach_overlay(self, overlay: OverlayStore) -> None:
        """Keep local aliases and quota overrides in ``overlay`` (see the module docstring)."""
        self._local = LocalAliases(overlay)

    @classmethod
    async def open(cls, settings: LdapSettings) -> CorporateDirectory:
        """Create the directory; an unreachable server is logged, not fatal (connections are
        made when needed). ConfigError for a bad base DN, group DN, profile or domain."""
        directory = cls(settings)
        try:
            await directory.ping()
        except TemporaryFailure as exc:
            log.warning("corporate directory not reachable at start (will retry): %s", exc)
        return directory

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._feed is not None:
            await self._feed.close()
        await self._reader.close()
        await self._binder.close()
        await asyncio.to_thread(self._lister.close)

    # -- plumbing ----------------------------------------------------------------------------

    async def _read(self, op: Read[T], deadline: float | None = None) -> T:
        """One asynchronous read under the pending bound and one deadline (``timeout`` from
        now unless given), retried only where that helps (``aio.read_with_retry``);
        python-ldap errors come back mapped."""
        if self._closed:
            raise TemporaryFailure("LDAP directory is closed")
        if self._pending >= self._settings.max_pending:
            raise TemporaryFailure("too many pending LDAP requests")
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self._settings.timeout
        self._pending += 1
        try:
            return await read_with_retry(op, self._servers, deadline)
        except (ldap.LDAPError, ReferralSeen) as exc:
            raise map_error(exc, point=True) from exc
        finally:
            self._pending -= 1

    async def _point(
        self, filt: filters.Filter, attrs: list[str], deadline: float | None = None
    ) -> Entry | None:
        return await self._read(
            lambda end, avoid: self._reader.point(
                self._base, filt, attrs, deadline=end, avoid=avoid
            ),
            deadline,
        )

    def _refuse(self, what: str) -> NoReturn:
        raise ReadOnlyDirectory(
            f"cannot {what}: the directory is read-only (profile {self._profile.name!r}); "
            "change it in the directory itself"
        )

    # -- lookups -----------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._read(
            lambda end, avoid: self._reader.read_base(self._base, deadline=end, avoid=avoid)
        )

    async def find_domain(self, name: str) -> Domain | None:
        return Domain(name=name) if name in self._domains else None

    async def find_account(self, address: Address) -> Account | None:
        """The account a login names (address, UPN, primary address … per the profile)."""
        filt = self._profile.login_filter(address, self._group)
        entry = await self._point(filt, self._profile.attrs(with_hash=self._with_hash))
        if entry is None:
            return None
        account = self._profile.account(entry, with_hash=self._with_hash)
        self._remember(account.address, entry.dn)
        self._known(account, entry)
        return await self._with_override(account)

    async def _with_override(self, account: Account) -> Account:
        """``account`` with its local quota override, if any (overrides cached QUOTA_REFRESH s)."""
        if self._local is None:
            return account
        if time.monotonic() - self._quotas_at > QUOTA_REFRESH:
            self._quotas = await self._local.quota_overrides()
            self._quotas_at = time.monotonic()
        quota = self._quotas.get(account.subject)
        return account if quota is None else dataclasses.replace(account, quota=quota)

    async def find_alias(self, source: str) -> Alias | None:
        """A secondary address of an account reads as an alias to its primary address."""
        if self._local is not None:
            local = await self._local.get(source)
            if local is not None:
                return local
        if source.startswith("@"):
            return None  # the directory has no catch-alls (a local one may, above)
        try:
            address = Address.parse(source)
        except InvalidInput:
            return None
        filt = self._profile.owner_filter(address, self._group)
        entry = await self._point(filt, self._profile.attrs(with_hash=False))
        if entry is None:
            return None
        account = self._profile.account(entry, with_hash=False)
        self._known(account, entry)
        if account.address == address:
            return None  # the primary address is a mailbox, not an alias
        return Alias(source=source, destinations=(str(account.address),), enabled=account.enabled)

    async def bind_check(self, account: Account, password: str) -> BindResult:
        """Bind as the account's DN (found by a search, never typed by the user) on the binder
        pool. Empty or NUL-bearing passwords never reach a bind (RFC 4513 §5.1.2)."""
        if not isinstance(password, str) or not password or "\x00" in password:
            return BindResult.INVALID_CREDENTIALS
        deadline = asyncio.get_running_loop().time() + self._settings.timeout  # search + bind
        dn = self._dns.get(account.address)
        if dn is None:
            filt = self._profile.owner_filter(account.address, self._group)
            found = await self._point(filt, NO_ATTRS, deadline)
            if found is None:
                return BindResult.INVALID_CREDENTIALS
            dn = found.dn

        async def bind(end: float, avoid: str | None) -> BindResult:
            try:
                await self._binder.simple_bind(dn, password, deadline=end, avoid=avoid)
            except ldap.INVALID_CREDENTIALS as exc:
                return bind_failure(exc)
            return BindResult.OK

        return await self._read(bind, deadline)

    def _remember(self, address: Address, dn: str) -> None:
        """The DN of a recently found account, for the bind check that usually follows."""
        self._dns.pop(address, None)
        self._dns[address] = dn
        if len(self._dns) > RECENT_DNS:
            del self._dns[next(iter(self._dns))]

    # -- the change feed (idsvc.directory.ldap.feed) ----------------------------------------

    def _known(self, account: Account, entry: Entry) -> None:
        """Record the addresses of an account just read, by stable id (see ``_on_changes``)."""
        if not account.uid or self._settings.change_feed == "off":
            return
        names = (str(account.address), *entry_addresses(self._profile, entry))
        self._subjects.pop(account.uid, None)
        self._subjects[account.uid] = tuple(dict.fromkeys(names))
        if len(self._subjects) > KNOWN_SUBJECTS:
            del self._subjects[next(iter(self._subjects))]
            self._subjects_evicted = True

    def start_change_feed(self, invalidator: Invalidator) -> ChangeFeed | None:
        """Follow the directory's changes (``change_feed = "auto"``) and drop what
        ``invalidator`` caches about each changed account. ``idsvc serve`` calls this once per
        serving process; None when the feed is off."""
        if self._settings.change_feed == "off" or self._closed:
            return None
        if self._feed is None:
            self._feed_target = invalidator
            self._feed = ChangeFeed(self._settings, self._profile, self._on_changes)
            self._feed.start()
        return self._feed

    def _unmapped(self, change: Change) -> bool:
        """True when a change to an account not in ``_subjects`` may still concern cached data:
        it has no stable id, or ids were evicted and it carries no address to drop."""
        if not change.stable_id:
            return True
        return self._subjects_evicted and (change.deleted or not change.addresses)

    def _on_changes(self, batch: Batch) -> None:
        """Apply a batch of changes on the loop: every address an account has now or had when
        it was last read is dropped from the caches; a change that cannot be mapped to
        addresses (an unknown id after evictions, a group while group gating is on, a
        reconnect) flushes every cache."""
        target = self._feed_target
        if target is None:
            return
        names: set[str] = set()
        why = ""
        for change in batch:
            if change is None:
                why = "feed (re)connected"
                break
            if change.group:
                if self._group is not None:
                    why = "a group changed (group gating)"
                    break
                continue
            old = self._subjects.pop(change.stable_id, None) if change.stable_id else None
            if old is None and self._unmapped(change):
                why = "a change that names no cached account"
                break
            names.update(old or ())
            names.update(change.addresses)
        if why:
            self._dns.clear()
            self._subjects.clear()
            self._subjects_evicted = False
            target.invalidate(None)
            feed_log.info("change feed: every cache flushed (%s)", why)
            return
        for name in names:
            with contextlib.suppress(InvalidInput):
                self._dns.pop(Address.parse(name), None)
            target.invalidate(name)
        if names:
            feed_log.info(
                "change feed: %d change(s); dropped %s", len(batch), ", ".join(sorted(names))
            )

    # -- listings (read-only, paged) ---------------------------------------------------------

    async def list_domains(
        self, *, prefix: str = "", cursor: str | None = None, limit: int = 100
    ) -> Page[Domain]:
        limit = check_page_limit(limit)
        check_prefix(prefix)
        after = decode_cursor("domain", cursor)
        names = sorted(n for n in self._domains if n.startswith(prefix))
        rest = [n for n in names if after is None or n > after]
        page = [Domain(name=n) for n in rest[:limit]]
        more = len(rest) > limit
        return Page(page, encode_cursor("domain", page[-1].name) if more else None, len(names))

    async def list_accounts(
        self,
        domain: str | None = None,
        *,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Account]:
        """Accounts by primary address: a paged scan of the keys (counts ``total``, keeps the
        ``limit + 1`` smallest after the cursor), then one search for those entries."""
        limit = check_page_limit(limit)
        check_prefix(prefix)
        after = decode_cursor("account", cursor)
        p = self._profile
        key = "mail" if p.primary == "proxyAddresses" else p.primary
        suffix = f"@{domain}" if domain is not None else ""
        scan = self._scan_filter(key, suffix)
        keep = limit + 1
        timeout = self._settings.timeout

        def op(ldo: Any) -> tuple[int, list[Account]]:
            entries = paged(
                ldo, self._base, SCOPE_SUBTREE, scan, [key], page_size=self._settings.page_size,
                timeout=timeout, controls=self._list_controls,
            )  # fmt: skip
            total, best = smallest_keys(entries, key, prefix, after, keep)
            if not best:
                return total, []
            wanted = filters.and_(scan, filters.or_(*(filters.eq(key, s) for _, s in best)))
            found = search(ldo, self._base, SCOPE_SUBTREE, wanted, p.attrs(with_hash=False),
                           timeout, controls=self._list_controls)  # fmt: skip
            accounts = [p.account(e, with_hash=False) for e in found]
            return total, sorted(accounts, key=lambda a: str(a.address))

        total, items = await self._run(op)
        more = len(items) > limit
        items = items[:limit]
        next_cursor = encode_cursor("account", str(items[-1].address)) if more else None
        return Page(items, next_cursor, total)

    def _scan_filter(self, key: str, suffix: str) -> filters.Filter:
        parts = [filters.template(self._profile.list_filter, {})]
        parts.append(filters.endswith(key, suffix) if suffix else filters.present(key))
        if self._group:
            parts.append(self._profile.group_filter(self._group))
        return filters.and_(*parts)

    async def list_aliases(
        self,
        domain: str | None = None,
        *,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Alias]:
        """The local aliases. (Secondary addresses are not separate entries: they belong to
        their account, and ``find_alias`` resolves one.)"""
        limit = check_page_limit(limit)
        check_prefix(prefix)
        after = decode_cursor("alias", cursor)
        if self._local is None:
            return Page([], None, 0)
        items, total = await self._local.page(domain, prefix, after, limit)
        more = len(items) > limit
        items = items[:limit]
        return Page(items, encode_cursor("alias", items[-1].source) if more else None, total)

    async def _run(self, fn: Callable[[Any], T]) -> T:
        if self._closed:
            raise TemporaryFailure("LDAP directory is closed")
        budget = self._settings.connect_timeout * len(self._settings.uris) + 6 * (
            self._settings.timeout
        )
        try:
            future = self._lister.submit(fn, retry=True)
            return await asyncio.wait_for(asyncio.wrap_future(future), budget)
        except TimeoutError as exc:
            raise TemporaryFailure("LDAP listing timed out") from exc
        except (ldap.LDAPError, ReferralSeen) as exc:
            raise map_error(exc) from exc

    # -- writes: never -----------------------------------------------------------------------

    async def add_domain(self, domain: Domain) -> Domain:
        self._refuse("add a domain")

    async def update_domain(
        self, name: str, changes: DomainChanges, *, if_revision: int | None = None
    ) -> Domain:
        self._refuse("change a domain")

    async def delete_domain(self, name: str, *, cascade: bool = False) -> None:
        self._refuse("delete a domain")

    async def add_account(self, account: Account) -> Account:
        self._refuse("add an account")

    async def update_account(
        self, address: Address, changes: AccountChanges, *, if_revision: int | None = None
    ) -> Account:
        """Only a quota change, and only with the overlay: a local override (0 = unlimited)."""
        quota_only = dataclasses.replace(changes, quota=None) == AccountChanges()
        if self._local is None or changes.quota is None or not quota_only:
            self._refuse("change an account")
        account = await self.find_account(address)
        if account is None:
            raise NotFound(f"account {address} does not exist")
        await self._local.set_quota(account.subject, check_quota(changes.quota))
        self._quotas_at = float("-inf")  # read the overrides again
        return dataclasses.replace(account, quota=changes.quota, updated=utcnow())

    async def delete_account(self, address: Address) -> None:
        self._refuse("delete an account")

    def _local_or_refuse(self, what: str) -> LocalAliases:
        if self._local is None:
            self._refuse(what)
        return self._local

    async def add_alias(self, alias: Alias) -> Alias:
        """A local alias: its domain must be a mail domain, its address nobody's in the
        directory (an account's own or secondary address)."""
        local = self._local_or_refuse("add an alias")
        source = check_source(alias.source)
        destinations = check_destinations(alias.destinations)
        if alias.domain not in self._domains:
            raise NotFound(f"domain {alias.domain} is not one of the mail domains")
        if not source.startswith("@"):
            owner = self._profile.owner_filter(Address.parse(source), None)
            if await self._point(owner, NO_ATTRS) is not None:
                raise AlreadyExists(f"{source} is an address of a directory account")
        stored = dataclasses.replace(alias, source=source, destinations=destinations)
        return await local.add(stored, alias.domain)

    async def update_alias(
        self, source: str, changes: AliasChanges, *, if_revision: int | None = None
    ) -> Alias:
        local = self._local_or_refuse("change an alias")
        destinations = None
        if changes.destinations is not None:
            destinations = check_destinations(changes.destinations)
        return await local.update(
            source, destinations=destinations, enabled=changes.enabled, if_revision=if_revision
        )

    async def delete_alias(self, source: str) -> None:
        await self._local_or_refuse("delete an alias").delete(source)


__all__ = ["CorporateDirectory"]
