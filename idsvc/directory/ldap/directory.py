"""``LdapDirectory``: OpenLDAP with our schema as a ``Directory`` and ``BindVerifier``.

Lookups (``find_account``/``find_domain``/``find_alias``, ``ping``, the DN search of a bind
check) run on the reader identity's connections and user binds on the binder's, both on the
event loop (``aio.AioPool``; a read whose connection failed or timed out is retried once);
provisioning writes and listings run on the writer's (``pool.ThreadPool``, blocking python-ldap
in threads, under an overall time budget). At most ``max_pending`` requests wait at once (more
fail at once with ``TemporaryFailure``). python-ldap errors are mapped by ``errors.map_error``
at this boundary only. See the package docstring and docs/ldap.md."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

import ldap
import ldap.controls
import ldap.controls.readentry
import ldap.dn

from idsvc.config import LdapSettings
from idsvc.directory import filters, mapping
from idsvc.directory.base import (
    AccountChanges,
    AliasChanges,
    BindResult,
    DomainChanges,
)
from idsvc.directory.checks import check_page_limit, check_prefix
from idsvc.directory.filters import Filter
from idsvc.directory.ldap.aio import AioPool, Read, read_with_retry
from idsvc.directory.ldap.errors import ReferralSeen, bind_failure, map_error
from idsvc.directory.ldap.listing import (
    MAX_SCAN,
    decode_cursor,
    encode_cursor,
    first_page,
    paged,
    smallest_keys,
)
from idsvc.directory.ldap.pool import Identity, Servers, ThreadPool, log
from idsvc.directory.ldap.search import (
    NO_ATTRS,
    SCOPE_ONELEVEL,
    SCOPE_SUBTREE,
    point,
    search,
)
from idsvc.directory.mapping import IDSVC, AttributeProfile, Entry, Mod
from idsvc.errors import (
    AlreadyExists,
    ConfigError,
    Conflict,
    DirectoryError,
    InvalidInput,
    NotFound,
    TemporaryFailure,
)
from idsvc.model import Account, Address, Alias, Domain, Page, utcnow

T = TypeVar("T")

CAS_ATTEMPTS = 5
RECENT_DN_TTL = 1.0  # seconds a DN found by find_account serves a following bind check
RECENT_DN_MAX = 4096


class RecentDns:
    """The DNs of accounts found in the last ``ttl`` seconds (at most ``size``, oldest dropped
    first), so that the bind check that follows a lookup does not search for the same entry
    again. Only a hint: a DN gone stale within ``ttl`` makes the bind fail (invalidCredentials),
    never succeed for someone else's password."""

    def __init__(self, ttl: float, size: int) -> None:
        self._ttl = ttl
        self._size = size
        self._dns: dict[Address, tuple[str, float]] = {}

    def put(self, address: Address, dn: str) -> None:
        self._dns.pop(address, None)
        self._dns[address] = (dn, time.monotonic() + self._ttl)
        if len(self._dns) > self._size:
            del self._dns[next(iter(self._dns))]

    def get(self, address: Address) -> str | None:
        found = self._dns.get(address)
        if found is None:
            return None
        if found[1] < time.monotonic():
            del self._dns[address]
            return None
        return found[0]


WRITER_THREADS = 4
READER_PIPELINE = 128  # requests in flight on one reader connection (slapd allows 1000)


class LdapDirectory:
    """OpenLDAP with our schema (read-write), through an ``AttributeProfile``."""

    # Every read (lookup, bind check) ends within ``timeout`` of its start, retries included
    # (``read_with_retry``), and more than ``max_pending`` waiting reads fail at once: the auth
    # engine sets no per-request timer of its own around them.
    bounds_reads = True

    def __init__(self, settings: LdapSettings, profile: AttributeProfile = IDSVC) -> None:
        try:
            self._base = filters.parse_dn(settings.base_dn)
        except InvalidInput as exc:
            raise ConfigError(f"directory.ldap.base_dn: {exc}") from exc
        for what, dn, secret in (
            ("bind", settings.bind_dn, settings.bind_password),
            ("writer", settings.writer_dn, settings.writer_password),
        ):
            if dn and (secret is None or not secret.get_secret_value()):
                # a DN with an empty password is an unauthenticated bind (RFC 4513 §5.1.2)
                raise ConfigError(f"directory.ldap.{what}_dn is set but its password is empty")
        self._settings = settings
        self._profile = profile
        self._domains = profile.domains_dn(self._base)
        self._with_hash = settings.auth_method == "search"
        self._account_attrs = profile.account_attrs(with_hash=self._with_hash)
        self._login_attrs = profile.login_attrs(with_hash=self._with_hash)
        servers = Servers(settings.uris, settings.retry_after)
        self._servers = servers
        reader_pw = settings.bind_password.get_secret_value() if settings.bind_password else None
        writer_pw = (
            settings.writer_password.get_secret_value() if settings.writer_password else None
        )
        size = settings.pool_size
        # lookups and binds: on the event loop (aio.py); writes and listings: in threads
        self._reader = AioPool(
            Identity("reader", settings.bind_dn, reader_pw),
            settings,
            servers,
            size,
            per_conn=READER_PIPELINE,
        )
        self._writer = ThreadPool(
            Identity("writer", settings.writer_dn, writer_pw),
            settings,
            servers,
            min(size, WRITER_THREADS),
        )
        self._binder = AioPool(Identity("binder", "", None), settings, servers, size, per_conn=1)
        self._recent = RecentDns(RECENT_DN_TTL, RECENT_DN_MAX) if not self._with_hash else None
        self._pending = 0
        self._closed = False
        # one call may connect to every server, then run its operation (twice for a read retry)
        self._budget = settings.connect_timeout * len(settings.uris) * 2 + settings.timeout * 2 + 1

    @classmethod
    async def open(
        cls, settings: LdapSettings, *, profile: AttributeProfile = IDSVC
    ) -> LdapDirectory:
        """Create the directory. Never fails because LDAP is down (a warning is logged and
        connections are made when needed); raises ConfigError for an invalid base DN or a
        service DN without a password."""
        directory = cls(settings, profile)
        try:
            await directory.ping()
        except TemporaryFailure as exc:
            log.warning("LDAP directory not reachable at start (will retry on use): %s", exc)
        return directory

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._reader.close()
        await self._binder.close()
        await asyncio.to_thread(self._writer.close)

    async def _run(
        self,
        pool: ThreadPool,
        fn: Callable[[Any], T],
        *,
        retry: bool,
        write: bool = False,
        budget: float | None = None,
    ) -> T:
        """Run ``fn(connection)`` on ``pool`` with the pending bound and an overall timeout;
        python-ldap errors come back mapped (``write`` selects the write-side mapping)."""
        if self._closed:
            raise TemporaryFailure("LDAP directory is closed")
        if self._pending >= self._settings.max_pending:
            raise TemporaryFailure("too many pending LDAP requests")
        self._pending += 1
        try:
            future = pool.submit(fn, retry=retry)
            return await asyncio.wait_for(asyncio.wrap_future(future), budget or self._budget)
        except TimeoutError as exc:
            raise TemporaryFailure("LDAP request timed out") from exc
        except (ldap.LDAPError, ReferralSeen) as exc:
            raise map_error(exc, write=write) from exc
        except RuntimeError as exc:  # executor shut down under us
            if self._closed:
                raise TemporaryFailure("LDAP directory is closed") from exc
            raise
        finally:
            self._pending -= 1

    def _deadline(self) -> float:
        """One read's deadline (loop time): ``timeout`` from now, whatever retries happen."""
        return asyncio.get_running_loop().time() + self._settings.timeout

    async def _read(self, op: Read[T], deadline: float | None = None) -> T:
        """Run an asynchronous read with the pending bound, within one deadline (``timeout``
        from now unless given), retried only where that helps (``aio.read_with_retry``);
        python-ldap errors come back mapped (a size limit on these point queries is
        AmbiguousEntry)."""
        if self._closed:
            raise TemporaryFailure("LDAP directory is closed")
        if self._pending >= self._settings.max_pending:
            raise TemporaryFailure("too many pending LDAP requests")
        if deadline is None:
            deadline = self._deadline()
        self._pending += 1
        try:
            return await read_with_retry(op, self._servers, deadline)
        except (ldap.LDAPError, ReferralSeen) as exc:
            raise map_error(exc, point=True) from exc
        finally:
            self._pending -= 1

    # -- blocking helpers (run in pool threads) ----------------------------------------------

    def _search(
        self, ldo: Any, base: str, scope: int, filt: Filter, attrs: list[str], sizelimit: int = 0
    ) -> list[Entry]:
        return search(ldo, base, scope, filt, attrs, self._settings.timeout, sizelimit)

    def _point(self, ldo: Any, base: str, filt: Filter, attrs: list[str]) -> Entry | None:
        return point(ldo, base, filt, attrs, self._settings.timeout)

    def _first_page(self, ldo: Any, base: str, scope: int, filt: Filter, size: int) -> list[str]:
        return first_page(ldo, base, scope, filt, size, timeout=self._settings.timeout)

    def _post_read(self, attrs: list[str]) -> Any:
        return ldap.controls.readentry.PostReadControl(criticality=True, attrList=attrs)

    @staticmethod
    def _read_back(response: Any) -> Entry:
        for ctrl in response[3]:
            if isinstance(ctrl, ldap.controls.readentry.PostReadControl) and ctrl.entry:
                return Entry(ctrl.dn, ctrl.entry)
        raise TemporaryFailure("LDAP server did not return the post-read entry")

    # -- lookups -------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise TemporaryFailure unless the reader can read the base entry now."""
        await self._read(
            lambda end, avoid: self._reader.read_base(self._base, deadline=end, avoid=avoid)
        )

    async def find_domain(self, name: str) -> Domain | None:
        filt = self._profile.domain_filter(name)
        attrs = self._profile.domain_attrs()
        entry = await self._read(
            lambda end, avoid: self._reader.point(
                self._domains, filt, attrs, deadline=end, avoid=avoid
            )
        )
        return None if entry is None else self._profile.domain_from_entry(entry)

    async def find_account(self, address: Address) -> Account | None:
        return await self._find_account(
            address, self._account_attrs, self._profile.account_from_entry
        )

    async def find_login(self, address: Address) -> Account | None:
        """``find_account`` with only what authentication needs (``LoginLookup``): five
        attributes instead of eleven, so slapd encodes and we decode and map less."""
        return await self._find_account(address, self._login_attrs, self._profile.login_from_entry)

    async def _find_account(
        self, address: Address, attrs: list[str], build: Callable[..., Account]
    ) -> Account | None:
        text = str(address)
        filt = self._profile.account_filter(address, text)
        entry = await self._read(
            lambda end, avoid: self._reader.point(
                self._domains, filt, attrs, deadline=end, avoid=avoid
            )
        )
        if entry is None:
            return None
        account = build(entry, with_hash=self._with_hash, searched=(address, text))
        if self._recent is not None:  # auth_method = "bind": a bind check usually follows
            self._recent.put(account.address, entry.dn)
        return account

    async def find_alias(self, source: str) -> Alias | None:
        filt = self._profile.alias_filter(source)
        attrs = self._profile.alias_attrs()
        entry = await self._read(
            lambda end, avoid: self._reader.point(
                self._domains, filt, attrs, deadline=end, avoid=avoid
            )
        )
        return None if entry is None else self._profile.alias_from_entry(entry)

    async def bind_check(self, account: Account, password: str) -> BindResult:
        """Verify ``password`` with a simple bind as the account's DN, on a binder connection
        (never used for lookups). Empty or NUL-bearing passwords never reach a bind (RFC 4513
        §5.1.2: DN + empty password is an unauthenticated bind that "succeeds")."""
        if not isinstance(password, str) or not password or "\x00" in password:
            return BindResult.INVALID_CREDENTIALS
        deadline = self._deadline()  # the DN search and the bind share it
        dn = self._recent.get(account.address) if self._recent is not None else None
        if dn is None:
            filt = self._profile.account_filter(account.address)
            found = await self._read(
                lambda end, avoid: self._reader.point(
                    self._domains, filt, NO_ATTRS, deadline=end, avoid=avoid
                ),
                deadline,
            )
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

    # -- writes --------------------------------------------------------------------------------

    async def _write(self, fn: Callable[[Any], T]) -> T:
        return await self._run(self._writer, fn, retry=False, write=True)

    def _add(self, ldo: Any, dn: str, attrs: dict[str, list[bytes]], read: list[str]) -> Entry:
        response = ldo.add_ext_s(dn, list(attrs.items()), serverctrls=[self._post_read(read)])
        return self._read_back(response)

    def _cas_modify(
        self,
        ldo: Any,
        filt: Filter,
        attrs: list[str],
        mods: list[Mod],
        if_revision: int | None,
    ) -> Entry:
        """Find the one entry matching ``filt`` and apply ``mods`` plus a revision CAS."""
        for _ in range(CAS_ATTEMPTS):
            entry = self._point(ldo, self._domains, filt, attrs)
            if entry is None:
                raise NotFound("no such entry")
            stored = entry.first(self._profile.revision)
            try:
                current = int(stored) if stored is not None else None
            except ValueError as exc:
                raise TemporaryFailure(f"entry {entry.dn!r}: invalid revision") from exc
            effective = current if current is not None else 1
            if if_revision is not None and if_revision != effective:
                raise Conflict(f"stale revision {if_revision} (current {effective})")
            if if_revision is None and current is not None:
                changes = mods + self._profile.increment_mods(utcnow())
            else:
                changes = mods + self._profile.revision_mods(current, effective + 1, utcnow())
            try:
                response = ldo.modify_ext_s(entry.dn, changes, serverctrls=[self._post_read(attrs)])
            except (ldap.NO_SUCH_ATTRIBUTE, ldap.TYPE_OR_VALUE_EXISTS) as exc:
                if if_revision is not None:
                    raise Conflict("the entry was changed concurrently") from exc
                continue  # someone else bumped it: read again and retry
            return self._read_back(response)
        raise Conflict("the entry keeps changing concurrently")

    def _exact_domain(self, name: str) -> Filter:
        return filters.and_(
            filters.object_class(self._profile.domain_class),
            filters.eq(self._profile.domain_name, name),
        )

    def _require_writable(self) -> None:
        if not self._profile.writable:
            raise DirectoryError(f"the {self._profile.name} profile is read-only")

    def _domain_names_taken(
        self, ldo: Any, names: tuple[str, ...], *, except_dn: str | None = None
    ) -> None:
        """AlreadyExists if a domain other than ``except_dn`` uses one of ``names`` as its name
        or as an alias domain (one namespace). Check-then-write: see docs/ldap.md."""
        if not names:
            return
        p = self._profile
        taken = filters.and_(
            filters.object_class(p.domain_class),
            filters.or_(
                *(filters.eq(p.domain_name, n) for n in names),
                *(filters.eq(p.alias_domain, n) for n in names),
            ),
        )
        for entry in self._search(ldo, self._domains, SCOPE_SUBTREE, taken, NO_ATTRS):
            if except_dn is None or entry.dn.lower() != except_dn.lower():
                raise AlreadyExists("a domain name or alias domain is already in use")

    async def add_domain(self, domain: Domain) -> Domain:
        self._require_writable()
        p = self._profile
        domain = mapping.new_domain(domain)
        dn = p.domain_dn(domain.name, self._base)
        attrs = p.domain_attrs()

        def op(ldo: Any) -> Domain:
            self._domain_names_taken(ldo, (domain.name, *domain.alias_domains))
            return p.domain_from_entry(self._add(ldo, dn, p.domain_to_attrs(domain), attrs))

        return await self._write(op)

    async def update_domain(
        self, name: str, changes: DomainChanges, *, if_revision: int | None = None
    ) -> Domain:
        self._require_writable()
        p = self._profile
        changes = mapping.checked_domain_changes(name, changes)
        filt, attrs, mods = self._exact_domain(name), p.domain_attrs(), p.domain_mods(changes)

        def op(ldo: Any) -> Domain:
            if changes.alias_domains:
                entry = self._point(ldo, self._domains, filt, NO_ATTRS)
                if entry is None:
                    raise NotFound(f"no domain {name}")
                self._domain_names_taken(ldo, changes.alias_domains, except_dn=entry.dn)
            return p.domain_from_entry(self._cas_modify(ldo, filt, attrs, mods, if_revision))

        return await self._write(op)

    async def delete_domain(self, name: str, *, cascade: bool = False) -> None:
        self._require_writable()
        filt = self._exact_domain(name)
        batch = self._settings.page_size

        def op(ldo: Any) -> None:
            entry = self._point(ldo, self._domains, filt, NO_ATTRS)
            if entry is None:
                raise NotFound(f"no domain {name}")
            if cascade:
                for _ in range(MAX_SCAN // batch):
                    below = [
                        dn
                        for dn in self._first_page(
                            ldo, entry.dn, SCOPE_SUBTREE, Filter("(objectClass=*)"), batch + 1
                        )
                        if dn.lower() != entry.dn.lower()
                    ]
                    if not below:
                        break
                    for dn in sorted(below, key=lambda d: -len(ldap.dn.str2dn(d))):
                        with contextlib.suppress(ldap.NO_SUCH_OBJECT):
                            ldo.delete_ext_s(dn)
            try:
                ldo.delete_ext_s(entry.dn)
            except ldap.NOT_ALLOWED_ON_NONLEAF as exc:
                raise Conflict(f"domain {name} still has accounts or aliases") from exc

        await self._write(op)

    async def add_account(self, account: Account) -> Account:
        self._require_writable()
        p = self._profile
        account = mapping.new_account(account)
        dn = p.account_dn(account.address, self._base)
        attrs = p.account_attrs(with_hash=self._with_hash)

        def op(ldo: Any) -> Account:
            entry = self._add(ldo, dn, p.account_to_attrs(account), attrs)
            return p.account_from_entry(entry, with_hash=self._with_hash)

        return await self._write(op)

    async def update_account(
        self, address: Address, changes: AccountChanges, *, if_revision: int | None = None
    ) -> Account:
        self._require_writable()
        p = self._profile
        changes = mapping.checked_account_changes(changes)
        filt, mods = p.account_filter(address), p.account_mods(changes)
        attrs = p.account_attrs(with_hash=self._with_hash)

        def op(ldo: Any) -> Account:
            entry = self._cas_modify(ldo, filt, attrs, mods, if_revision)
            return p.account_from_entry(entry, with_hash=self._with_hash)

        return await self._write(op)

    async def delete_account(self, address: Address) -> None:
        self._require_writable()
        await self._delete(self._profile.account_filter(address), f"no account {address}")

    async def _delete(self, filt: Filter, missing: str) -> None:
        def op(ldo: Any) -> None:
            entry = self._point(ldo, self._domains, filt, NO_ATTRS)
            if entry is None:
                raise NotFound(missing)
            ldo.delete_ext_s(entry.dn)

        await self._write(op)

    async def add_alias(self, alias: Alias) -> Alias:
        self._require_writable()
        p = self._profile
        alias = mapping.new_alias(alias)
        dn = p.alias_dn(alias.source, self._base)

        def op(ldo: Any) -> Alias:
            return p.alias_from_entry(self._add(ldo, dn, p.alias_to_attrs(alias), p.alias_attrs()))

        return await self._write(op)

    async def update_alias(
        self, source: str, changes: AliasChanges, *, if_revision: int | None = None
    ) -> Alias:
        self._require_writable()
        p = self._profile
        changes = mapping.checked_alias_changes(changes)
        filt, attrs, mods = p.alias_filter(source), p.alias_attrs(), p.alias_mods(changes)

        def op(ldo: Any) -> Alias:
            return p.alias_from_entry(self._cas_modify(ldo, filt, attrs, mods, if_revision))

        return await self._write(op)

    async def delete_alias(self, source: str) -> None:
        self._require_writable()
        await self._delete(self._profile.alias_filter(source), f"no alias {source}")

    # -- listings ------------------------------------------------------------------------------

    async def _list(
        self,
        kind: str,
        domain: str | None,
        scope: int,
        attrs: list[str],
        convert: Callable[[Entry], T],
        key: Callable[[T], str],
        prefix: str,
        cursor: str | None,
        limit: int,
    ) -> Page[T]:
        """Two searches: a paged scan of the keys only (counts ``total``, keeps the ``limit+1``
        smallest keys after the cursor), then one search for those entries in full."""
        limit = check_page_limit(limit)
        check_prefix(prefix)
        after = decode_cursor(kind, cursor)
        p = self._profile
        object_class, key_attr = p.kind(kind)
        base = self._domains if domain is None else p.domain_dn(domain, self._base)
        scan = p.listing_filter(kind, prefix=prefix, after=None)
        keep = limit + 1

        def op(ldo: Any) -> tuple[int, list[T]]:
            scan_entries = paged(
                ldo, base, scope, scan, [key_attr],
                page_size=self._settings.page_size, timeout=self._settings.timeout,
            )  # fmt: skip
            try:
                total, best = smallest_keys(scan_entries, key_attr, prefix, after, keep)
            except ldap.NO_SUCH_OBJECT as exc:
                if domain is not None:
                    raise NotFound(f"domain {domain} does not exist") from exc
                raise
            if not best:
                return total, []
            wanted = filters.and_(
                filters.object_class(object_class),
                filters.or_(*(filters.eq(key_attr, stored) for _, stored in best)),
            )
            entries = self._search(ldo, base, scope, wanted, attrs)
            return total, sorted((convert(e) for e in entries), key=key)

        total, items = await self._run(
            self._writer, op, retry=True, budget=self._budget + 4 * self._settings.timeout
        )
        more = len(items) > limit
        items = items[:limit]
        next_cursor = encode_cursor(kind, key(items[-1])) if more and items else None
        return Page(items=items, next_cursor=next_cursor, total=total)

    async def list_domains(
        self, *, prefix: str = "", cursor: str | None = None, limit: int = 100
    ) -> Page[Domain]:
        p = self._profile
        return await self._list(
            "domain", None, SCOPE_ONELEVEL, p.domain_attrs(), p.domain_from_entry,
            lambda d: d.name, prefix, cursor, limit,
        )  # fmt: skip

    async def list_accounts(
        self,
        domain: str | None = None,
        *,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Account]:
        p = self._profile

        def convert(entry: Entry) -> Account:
            return p.account_from_entry(entry, with_hash=self._with_hash)

        return await self._list(
            "account", domain, SCOPE_SUBTREE, p.account_attrs(with_hash=self._with_hash), convert,
            lambda a: str(a.address), prefix, cursor, limit,
        )  # fmt: skip

    async def list_aliases(
        self,
        domain: str | None = None,
        *,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Alias]:
        p = self._profile
        return await self._list(
            "alias", domain, SCOPE_SUBTREE, p.alias_attrs(), p.alias_from_entry,
            lambda a: a.source, prefix, cursor, limit,
        )  # fmt: skip


__all__ = ["LdapDirectory"]
