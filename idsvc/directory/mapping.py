"""Attribute profiles: how idsvc's model maps onto LDAP entries, names and DN layout.

``AttributeProfile`` holds every attribute and object-class name the LDAP adapter uses, the DN
layout, and the conversions entry ↔ model (``Domain``/``Account``/``Alias``). ``IDSVC`` is the
profile of our own schema (``schemas/idsvc.schema``)::

    ou=domains,<base>
      idsvcDomainName=<domain>            objectClass idsvcDomain
        cn=<local@domain>                 objectClass idsvcAccount  (key idsvcAddress)
        cn=<local@domain or @domain>      objectClass idsvcAlias    (key idsvcAliasSource)

Accounts and aliases share the naming attribute ``cn`` under their domain, so "address already
taken by an account or an alias" is enforced atomically by DN uniqueness in the server.

A read-only corporate profile (AD: ``userPrincipalName``/``proxyAddresses``,
``userAccountControl``) plugs in by subclassing and overriding the ``*_filter`` and ``*_from_entry``
methods with ``writable = False``; the adapter reads attributes only through a profile.

How it fails: an entry whose key or typed attribute cannot be decoded raises ``TemporaryFailure``
naming the DN and attribute (a corrupt directory entry must never read as "no such user" nor as a
success). Values are never logged.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from idsvc.directory import filters
from idsvc.directory.base import AccountChanges, AliasChanges, DomainChanges
from idsvc.directory.checks import (
    check_address,
    check_alias_domains,
    check_destinations,
    check_domain_name,
    check_hash,
    check_quota,
    check_services,
    check_source,
    check_text,
)
from idsvc.directory.filters import DN, Filter
from idsvc.errors import InvalidInput, TemporaryFailure
from idsvc.model import (
    Account,
    Address,
    Alias,
    Domain,
    Service,
    canonical_alias_source,
    canonical_domain,
    utcnow,
)

# python-ldap modlist operation codes (ldap.MOD_ADD/DELETE/REPLACE); kept here so this module
# stays free of the client library.
MOD_ADD, MOD_DELETE, MOD_REPLACE, MOD_INCREMENT = 0, 1, 2, 3

K = TypeVar("K")
V = TypeVar("V")
Mod = tuple[int, str, list[bytes] | None]
Attrs = dict[str, list[bytes]]

MAX_VALUES = 1000  # values of one multi-valued attribute we accept from the server
MAX_TEXT = 1024  # display name, description (the core schema's description bound)
MAX_HASH = 1024  # a stored password hash
# created/updated of an Account read for authentication only (``login_from_entry``)
NOT_READ = datetime(1970, 1, 1, tzinfo=UTC)


class Entry:
    """A search result entry with case-insensitive attribute access (values are bytes)."""

    __slots__ = ("_attrs", "dn")

    def __init__(self, dn: str, attrs: Mapping[str, Sequence[bytes]]) -> None:
        self.dn = dn
        # python-ldap hands over fresh lists: keep them, only the names are folded
        self._attrs = {name.lower(): values for name, values in attrs.items()}

    def raw(self, attr: str) -> Sequence[bytes]:
        """The undecoded values (at most MAX_VALUES of them, else TemporaryFailure)."""
        values = self._attrs.get(attr.lower(), ())
        if len(values) > MAX_VALUES:
            raise TemporaryFailure(f"entry {self.dn!r}: too many values of {attr}")
        return values

    def all(self, attr: str) -> list[str]:
        values = self.raw(attr)
        try:
            return [v.decode("utf-8") for v in values]
        except UnicodeDecodeError as exc:
            raise TemporaryFailure(f"entry {self.dn!r}: {attr} is not UTF-8") from exc

    def first(self, attr: str) -> str | None:
        values = self._attrs.get(attr.lower())
        if not values:
            return None
        if len(values) == 1:  # the usual case, without building a list
            try:
                return values[0].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TemporaryFailure(f"entry {self.dn!r}: {attr} is not UTF-8") from exc
        return self.all(attr)[0]

    def has(self, attr: str) -> bool:
        return bool(self._attrs.get(attr.lower()))


def format_time(value: datetime) -> bytes:
    """GeneralizedTime in UTC at whole seconds, e.g. ``20260126084803Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y%m%d%H%M%SZ").encode("ascii")


def parse_time(text: str) -> datetime:
    """Parse GeneralizedTime (``YYYYmmddHHMMSS[.fff]Z``, as slapd stores it); UTC, whole
    seconds. ValueError on anything else."""
    if len(text) > 32 or not text.endswith("Z"):
        raise ValueError("not a UTC GeneralizedTime")
    core = text[:-1].split(".", 1)[0].split(",", 1)[0]
    if len(core) == 14 and core.isascii() and core.isdigit():  # the usual form: no strptime
        with contextlib.suppress(ValueError):  # out-of-range fields: strptime decides below
            return datetime(
                int(core[:4]), int(core[4:6]), int(core[6:8]),
                int(core[8:10]), int(core[10:12]), int(core[12:14]), tzinfo=UTC,
            )  # fmt: skip
    parsed = datetime.strptime(core, "%Y%m%d%H%M%S")
    return parsed.replace(tzinfo=UTC)


class _Memo(Generic[K, V]):
    """A small FIFO-bounded memo for pure conversions of values that repeat across entries
    (service sets, timestamps). Only successful conversions are stored."""

    __slots__ = ("_data", "_size")

    def __init__(self, size: int) -> None:
        self._data: dict[K, V] = {}
        self._size = size

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def put(self, key: K, value: V) -> V:
        data = self._data
        if len(data) >= self._size:
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):  # racing evictions
                del data[next(iter(data))]
        data[key] = value
        return value


@functools.lru_cache(maxsize=64)
def _class_filter(name: str) -> Filter:
    """``(objectClass=name)``, built once per class name (it is part of every lookup)."""
    return filters.object_class(name)


_SERVICE_SETS: _Memo[tuple[bytes, ...], frozenset[Service]] = _Memo(256)
_TIMES: _Memo[str, datetime] = _Memo(4096)


def _bool(value: bool) -> list[bytes]:
    return [b"TRUE" if value else b"FALSE"]


def _int(value: int) -> list[bytes]:
    return [str(int(value)).encode("ascii")]


def _strs(values: Iterable[str]) -> list[bytes]:
    return [v.encode("utf-8") for v in values]


@dataclass(frozen=True, slots=True)
class AttributeProfile:
    """Names and conversions for one directory layout. Defaults are our own schema."""

    name: str = "idsvc"
    writable: bool = True
    domains_rdn: str = "ou=domains"  # container of the domains, below the base DN
    naming_attr: str = "cn"  # RDN attribute of accounts and aliases
    # object classes
    domain_class: str = "idsvcDomain"
    account_class: str = "idsvcAccount"
    alias_class: str = "idsvcAlias"
    # domain attributes
    domain_name: str = "idsvcDomainName"
    alias_domain: str = "idsvcAliasDomain"
    default_quota: str = "idsvcDefaultQuota"
    description: str = "description"
    # account attributes
    address: str = "idsvcAddress"
    password: str = "userPassword"  # noqa: S105 (an attribute name)
    display_name: str = "displayName"
    quota: str = "idsvcQuota"
    service: str = "idsvcService"
    # alias attributes
    alias_source: str = "idsvcAliasSource"
    destination: str = "idsvcDestination"
    # shared
    enabled: str = "idsvcEnabled"
    revision: str = "idsvcRevision"
    created: str = "idsvcCreated"
    updated: str = "idsvcUpdated"
    created_fallback: str = "createTimestamp"  # operational, for entries we did not write
    updated_fallback: str = "modifyTimestamp"

    # -- DN layout ---------------------------------------------------------------------------

    def domains_dn(self, base: DN) -> DN:
        return DN(f"{self.domains_rdn},{base}")

    def domain_dn(self, name: str, base: DN) -> DN:
        return filters.child(self.domain_name, name, self.domains_dn(base))

    def account_dn(self, address: Address, base: DN) -> DN:
        return filters.child(self.naming_attr, str(address), self.domain_dn(address.domain, base))

    def alias_dn(self, source: str, base: DN) -> DN:
        domain = source.rpartition("@")[2]
        return filters.child(self.naming_attr, source, self.domain_dn(domain, base))

    # -- filters -----------------------------------------------------------------------------

    def domain_filter(self, name: str) -> Filter:
        """The domain called ``name`` or listing it as an alias domain."""
        return filters.and_(
            filters.object_class(self.domain_class),
            filters.or_(filters.eq(self.domain_name, name), filters.eq(self.alias_domain, name)),
        )

    def account_filter(self, address: Address, text: str | None = None) -> Filter:
        """The search for one account; ``text`` is ``str(address)`` when the caller has it."""
        key = filters.eq(self.address, str(address) if text is None else text)
        return filters.and_(_class_filter(self.account_class), key)

    def alias_filter(self, source: str) -> Filter:
        return filters.and_(
            filters.object_class(self.alias_class), filters.eq(self.alias_source, source)
        )

    def listing_filter(self, kind: str, *, prefix: str, after: str | None) -> Filter:
        """Objects of ``kind`` (domain/account/alias) whose key starts with ``prefix`` and
        sorts strictly after ``after`` under the key's ORDERING rule."""
        cls, key = self.kind(kind)
        parts = [filters.object_class(cls)]
        if prefix:
            parts.append(filters.startswith(key, prefix))
        if after is not None:
            parts.append(filters.after(key, after))
        return filters.and_(*parts)

    def kind(self, kind: str) -> tuple[str, str]:
        """(object class, key attribute) of a listing kind."""
        table = {
            "domain": (self.domain_class, self.domain_name),
            "account": (self.account_class, self.address),
            "alias": (self.alias_class, self.alias_source),
        }
        return table[kind]

    # -- attributes to request ---------------------------------------------------------------

    def _common(self) -> list[str]:
        return [
            self.enabled,
            self.revision,
            self.created,
            self.updated,
            self.created_fallback,
            self.updated_fallback,
        ]

    def domain_attrs(self) -> list[str]:
        names = [self.domain_name, self.alias_domain, self.default_quota, self.description]
        return names + self._common()

    def login_attrs(self, *, with_hash: bool) -> list[str]:
        """What authentication reads of an account (``login_from_entry``)."""
        names = [self.address, self.service, self.enabled, self.revision]
        if with_hash:
            names.append(self.password)
        return names

    def account_attrs(self, *, with_hash: bool) -> list[str]:
        names = [self.address, self.display_name, self.quota, self.service]
        if with_hash:
            names.append(self.password)
        return names + self._common()

    def alias_attrs(self) -> list[str]:
        return [self.alias_source, self.destination, *self._common()]

    # -- entry -> model ----------------------------------------------------------------------

    def _int(self, entry: Entry, attr: str, default: int) -> int:
        text = entry.first(attr)
        if text is None:
            return default
        try:
            return int(text)
        except ValueError as exc:
            raise TemporaryFailure(f"entry {entry.dn!r}: {attr} is not an integer") from exc

    def _enabled(self, entry: Entry) -> bool:
        text = entry.first(self.enabled)
        if text is None:
            return True
        if text.upper() not in ("TRUE", "FALSE"):
            raise TemporaryFailure(f"entry {entry.dn!r}: {self.enabled} is not a boolean")
        return text.upper() == "TRUE"

    def _time(self, entry: Entry, attr: str, fallback: str) -> datetime:
        text = entry.first(attr) or entry.first(fallback)
        if text is None:
            return utcnow()
        known = _TIMES.get(text)
        if known is not None:
            return known
        try:
            parsed = parse_time(text)
        except ValueError as exc:
            raise TemporaryFailure(f"entry {entry.dn!r}: {attr} is not a UTC time") from exc
        return _TIMES.put(text, parsed)

    def _services(self, entry: Entry) -> frozenset[Service]:
        """The services an account is enabled for; unknown names are ignored."""
        key = tuple(entry.raw(self.service))
        known = _SERVICE_SETS.get(key)
        if known is not None:
            return known
        services = frozenset(
            s for s in (Service.parse(v) for v in entry.all(self.service)) if s is not None
        )
        return _SERVICE_SETS.put(key, services)

    def _meta(self, entry: Entry) -> dict[str, Any]:
        return {
            "enabled": self._enabled(entry),
            "revision": self._int(entry, self.revision, 1),
            "created": self._time(entry, self.created, self.created_fallback),
            "updated": self._time(entry, self.updated, self.updated_fallback),
        }

    def _key(self, entry: Entry, attr: str) -> str:
        values = entry.all(attr)
        if len(values) != 1:
            raise TemporaryFailure(f"entry {entry.dn!r}: needs exactly one {attr}")
        return values[0]

    def domain_from_entry(self, entry: Entry) -> Domain:
        try:
            name = canonical_domain(self._key(entry, self.domain_name))
            aliases = tuple(sorted({canonical_domain(d) for d in entry.all(self.alias_domain)}))
        except InvalidInput as exc:
            raise TemporaryFailure(f"entry {entry.dn!r}: invalid domain name") from exc
        return Domain(
            name=name,
            default_quota=self._int(entry, self.default_quota, 0),
            alias_domains=aliases,
            description=entry.first(self.description) or "",
            **self._meta(entry),
        )

    def account_from_entry(
        self, entry: Entry, *, with_hash: bool, searched: tuple[Address, str] | None = None
    ) -> Account:
        """The Account of ``entry`` (read with ``account_attrs``); ``searched``: see
        ``_address``."""
        return Account(
            address=self._address(entry, searched),
            password_hash=entry.first(self.password) if with_hash else None,
            display_name=entry.first(self.display_name) or "",
            quota=self._int(entry, self.quota, 0),
            services=self._services(entry),
            enabled=self._enabled(entry),
            revision=self._int(entry, self.revision, 1),
            created=self._time(entry, self.created, self.created_fallback),
            updated=self._time(entry, self.updated, self.updated_fallback),
        )

    def login_from_entry(
        self, entry: Entry, *, with_hash: bool, searched: tuple[Address, str] | None = None
    ) -> Account:
        """The Account of an entry read with ``login_attrs``: what authentication decides on,
        nothing more (``LoginLookup.find_login``)."""
        return Account(
            address=self._address(entry, searched),
            password_hash=entry.first(self.password) if with_hash else None,
            services=self._services(entry),
            enabled=self._enabled(entry),
            revision=self._int(entry, self.revision, 1),
            created=NOT_READ,
            updated=NOT_READ,
        )

    def _address(self, entry: Entry, searched: tuple[Address, str] | None) -> Address:
        """The entry's address. ``searched`` is the canonical address the entry was found by and
        its string form: when the stored value is exactly that string, it is already canonical
        and the Address is reused instead of parsed again (the hot path)."""
        text = self._key(entry, self.address)
        if searched is not None and text == searched[1]:
            return searched[0]
        try:
            return Address.parse(text)
        except InvalidInput as exc:
            raise TemporaryFailure(f"entry {entry.dn!r}: invalid {self.address}") from exc

    def alias_from_entry(self, entry: Entry) -> Alias:
        try:
            source = canonical_alias_source(self._key(entry, self.alias_source))
        except InvalidInput as exc:
            raise TemporaryFailure(f"entry {entry.dn!r}: invalid {self.alias_source}") from exc
        return Alias(
            source=source,
            destinations=tuple(sorted(set(entry.all(self.destination)))),
            **self._meta(entry),
        )

    # -- model -> entry (our schema only) ----------------------------------------------------

    def _meta_attrs(
        self, enabled: bool, revision: int, created: datetime, updated: datetime
    ) -> Attrs:
        return {
            self.enabled: _bool(enabled),
            self.revision: _int(revision),
            self.created: [format_time(created)],
            self.updated: [format_time(updated)],
        }

    def domain_to_attrs(self, domain: Domain) -> Attrs:
        attrs: Attrs = {
            "objectClass": [self.domain_class.encode()],
            self.domain_name: _strs([domain.name]),
            self.default_quota: _int(domain.default_quota),
        }
        if domain.alias_domains:
            attrs[self.alias_domain] = _strs(domain.alias_domains)
        if domain.description:
            attrs[self.description] = _strs([domain.description])
        attrs.update(
            self._meta_attrs(domain.enabled, domain.revision, domain.created, domain.updated)
        )
        return attrs

    def account_to_attrs(self, account: Account) -> Attrs:
        attrs: Attrs = {
            "objectClass": [self.account_class.encode()],
            self.naming_attr: _strs([str(account.address)]),
            self.address: _strs([str(account.address)]),
            self.quota: _int(account.quota),
        }
        if account.password_hash:
            attrs[self.password] = _strs([account.password_hash])
        if account.display_name:
            attrs[self.display_name] = _strs([account.display_name])
        if account.services:
            attrs[self.service] = _strs(sorted(s.value for s in account.services))
        attrs.update(
            self._meta_attrs(account.enabled, account.revision, account.created, account.updated)
        )
        return attrs

    def alias_to_attrs(self, alias: Alias) -> Attrs:
        attrs: Attrs = {
            "objectClass": [self.alias_class.encode()],
            self.naming_attr: _strs([alias.source]),
            self.alias_source: _strs([alias.source]),
        }
        if alias.destinations:
            attrs[self.destination] = _strs(alias.destinations)
        attrs.update(self._meta_attrs(alias.enabled, alias.revision, alias.created, alias.updated))
        return attrs

    # -- changes -> modifications ------------------------------------------------------------

    def domain_mods(self, changes: DomainChanges) -> list[Mod]:
        mods: list[Mod] = []
        if changes.enabled is not None:
            mods.append((MOD_REPLACE, self.enabled, _bool(changes.enabled)))
        if changes.default_quota is not None:
            mods.append((MOD_REPLACE, self.default_quota, _int(changes.default_quota)))
        if changes.alias_domains is not None:
            mods.append((MOD_REPLACE, self.alias_domain, _strs(changes.alias_domains) or None))
        if changes.description is not None:
            mods.append(
                (
                    MOD_REPLACE,
                    self.description,
                    _strs([changes.description] if changes.description else []) or None,
                )
            )
        return mods

    def account_mods(self, changes: AccountChanges) -> list[Mod]:
        mods: list[Mod] = []
        if changes.password_hash is not None:
            mods.append((MOD_REPLACE, self.password, _strs([changes.password_hash])))
        if changes.display_name is not None:
            value = _strs([changes.display_name]) if changes.display_name else None
            mods.append((MOD_REPLACE, self.display_name, value))
        if changes.enabled is not None:
            mods.append((MOD_REPLACE, self.enabled, _bool(changes.enabled)))
        if changes.quota is not None:
            mods.append((MOD_REPLACE, self.quota, _int(changes.quota)))
        if changes.services is not None:
            services = sorted(s.value for s in changes.services)
            mods.append((MOD_REPLACE, self.service, _strs(services) or None))
        return mods

    def alias_mods(self, changes: AliasChanges) -> list[Mod]:
        mods: list[Mod] = []
        if changes.destinations is not None:
            mods.append((MOD_REPLACE, self.destination, _strs(changes.destinations) or None))
        if changes.enabled is not None:
            mods.append((MOD_REPLACE, self.enabled, _bool(changes.enabled)))
        return mods

    def increment_mods(self, updated: datetime) -> list[Mod]:
        """An unconditional revision bump: RFC 4525 ``increment: rev`` by 1, atomic in the
        server, so concurrent writers never lose a bump and never need to retry."""
        return [
            (MOD_INCREMENT, self.revision, [b"1"]),
            (MOD_REPLACE, self.updated, [format_time(updated)]),
        ]

    def revision_mods(self, current: int | None, new: int, updated: datetime) -> list[Mod]:
        """Compare-and-swap of the revision: ``delete: rev <current>`` + ``add: rev <new>`` in
        the same modify fails (noSuchAttribute) when another writer changed it meanwhile."""
        mods: list[Mod] = []
        if current is None:
            mods.append((MOD_ADD, self.revision, _int(new)))
        else:
            mods.append((MOD_DELETE, self.revision, _int(current)))
            mods.append((MOD_ADD, self.revision, _int(new)))
        mods.append((MOD_REPLACE, self.updated, [format_time(updated)]))
        return mods


IDSVC = AttributeProfile()


# -- checks before a write (the same rules as the embedded backend: idsvc.directory.checks) ------


def new_domain(domain: Domain) -> Domain:
    """A checked domain as it will be created: revision 1, created = updated = now."""
    check_domain_name(domain.name)
    now = utcnow()
    return replace(
        domain,
        default_quota=check_quota(domain.default_quota, "default quota"),
        alias_domains=check_alias_domains(domain.name, domain.alias_domains),
        description=check_text(domain.description, "description", MAX_TEXT),
        enabled=bool(domain.enabled),
        created=now,
        updated=now,
        revision=1,
    )


def new_account(account: Account) -> Account:
    check_address(account.address)
    check_hash(account.password_hash, MAX_HASH)
    now = utcnow()
    return replace(
        account,
        display_name=check_text(account.display_name, "display name", MAX_TEXT),
        quota=check_quota(account.quota, "quota"),
        services=check_services(account.services),
        enabled=bool(account.enabled),
        created=now,
        updated=now,
        revision=1,
    )


def new_alias(alias: Alias) -> Alias:
    check_source(alias.source)
    now = utcnow()
    return replace(
        alias,
        destinations=check_destinations(alias.destinations),
        enabled=bool(alias.enabled),
        created=now,
        updated=now,
        revision=1,
    )


def checked_domain_changes(name: str, changes: DomainChanges) -> DomainChanges:
    return DomainChanges(
        enabled=changes.enabled,
        default_quota=None
        if changes.default_quota is None
        else check_quota(changes.default_quota, "default quota"),
        alias_domains=None
        if changes.alias_domains is None
        else check_alias_domains(name, changes.alias_domains),
        description=None
        if changes.description is None
        else check_text(changes.description, "description", MAX_TEXT),
    )


def checked_account_changes(changes: AccountChanges) -> AccountChanges:
    return AccountChanges(
        password_hash=check_hash(changes.password_hash, MAX_HASH),
        display_name=None
        if changes.display_name is None
        else check_text(changes.display_name, "display name", MAX_TEXT),
        enabled=changes.enabled,
        quota=None if changes.quota is None else check_quota(changes.quota, "quota"),
        services=None if changes.services is None else check_services(changes.services),
    )


def checked_alias_changes(changes: AliasChanges) -> AliasChanges:
    return AliasChanges(
        destinations=None
        if changes.destinations is None
        else check_destinations(changes.destinations),
        enabled=changes.enabled,
    )
