"""Read-only attribute profiles: how a corporate directory's entries become idsvc accounts.

A site that keeps its people in Active Directory or a corporate OpenLDAP lets idsvc *read* the
directory, never write it. A ``ReadOnlyProfile`` says, for one directory layout, which filter
finds a login, which attributes give the primary address, the other addresses (aliases), the
quota, whether the account is enabled, which services it may use, its mail home and its stable
id. Built-in profiles (:data:`PROFILES`) cover ``ad``, ``inetorgperson``, ``postfix-book`` and
``iredmail``; every field can be overridden from the ``[directory.ldap]`` settings
(:func:`profile_for`).

Filters are templates with Dovecot's letters (``%u`` address, ``%n`` local part, ``%d``
domain), filled and escaped only by ``idsvc.directory.filters.template``.

Active Directory facts used here (MS-ADTS, MS-ADA3):

* ``proxyAddresses`` values are ``TYPE:address``; ``SMTP:`` (upper case) is the primary
  address, ``smtp:`` the secondary ones; other types (``X500:``, ``SIP:`` …) are ignored;
* ``userAccountControl`` bit 0x2 is ACCOUNTDISABLE; ``accountExpires`` counts 100 ns intervals
  since 1601-01-01 UTC, with 0 and 0x7FFFFFFFFFFFFFFF meaning "never";
* bind failures carry a ``data NNN`` sub-code (mapped in ``ldap/errors.py``).

How it fails: an entry whose primary address or typed attribute cannot be decoded raises
``TemporaryFailure`` naming the DN and the attribute (a corrupt entry is never "no such user");
a bad configured template or attribute name raises ``ConfigError`` at start-up. Values are never
logged. Nothing here talks to a server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from idsvc.directory import filters
from idsvc.directory.filters import Filter
from idsvc.directory.mapping import Entry, parse_time
from idsvc.errors import ConfigError, InvalidInput, TemporaryFailure
from idsvc.model import ALL_SERVICES, Account, Address, Service, canonical_domain, utcnow

EnabledRule = Literal["none", "ad", "boolean", "active"]

AD_DISABLED = 0x2  # userAccountControl ACCOUNTDISABLE
AD_NEVER = (0, 0x7FFFFFFFFFFFFFFF)  # accountExpires values meaning "never expires"
_AD_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
MAX_ADDRESSES = 1000  # addresses of one entry we look at

# each service a login can ask for, and the iRedMail enabledService value that allows it
_IREDMAIL_SERVICES = {
    Service.SMTP: "smtp",
    Service.SUBMISSION: "smtp",
    Service.IMAP: "imap",
    Service.POP3: "pop3",
}


@dataclass(frozen=True, slots=True)
class ReadOnlyProfile:
    """Where one directory layout keeps what idsvc needs. Attribute fields hold LDAP attribute
    names ("" = the layout has none); filter fields hold templates."""

    name: str
    list_filter: str  # every mail account (no placeholders)
    user_filter: str  # finds the account a login (or its primary address) names
    address_filter: str  # finds the entry that owns %u as any of its addresses
    primary: str  # attribute holding the primary address ("proxyAddresses": the SMTP: value)
    aliases: str = ""  # further addresses ("proxyAddresses": the smtp: values)
    display_name: str = "displayName"
    quota: str = ""
    quota_unit: int = 1  # bytes per unit of the quota attribute
    enabled: str = ""
    enabled_rule: EnabledRule = "none"
    services: str = ""  # iRedMail enabledService
    home: str = ""
    expires: str = ""  # AD accountExpires
    stable_id: str = "entryUUID"
    password: str = ""  # readable hash attribute ("" = bind-through only)
    created: str = "createTimestamp"
    updated: str = "modifyTimestamp"
    group_attr: str = "memberOf"
    nested_groups: bool = False  # AD: match group membership transitively
    domain_scope: bool = False  # AD: ask the server not to return referrals

    def check(self) -> ReadOnlyProfile:
        """Validate names and templates (ConfigError); returns self."""
        filters.check_template(self.user_filter)
        filters.check_template(self.address_filter)
        filters.check_template(self.list_filter)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _ATTRIBUTE_FIELDS and value:
                filters.attribute(value)
        if self.quota_unit < 1:
            raise ConfigError("quota_unit must be at least 1")
        return self

    # -- filters ------------------------------------------------------------------------------

    def login_filter(self, address: Address, group: str | None) -> Filter:
        return self._gated(filters.template(self.user_filter, _values(address)), group)

    def owner_filter(self, address: Address, group: str | None) -> Filter:
        return self._gated(filters.template(self.address_filter, _values(address)), group)

    def group_filter(self, group: str) -> Filter:
        """Members of ``group`` (transitively where the profile says groups nest)."""
        if self.nested_groups:
            return filters.in_chain(self.group_attr, group)
        return filters.eq(self.group_attr, group)

    def _gated(self, filt: Filter, group: str | None) -> Filter:
        return filters.and_(filt, self.group_filter(group)) if group else filt

    def attrs(self, *, with_hash: bool) -> list[str]:
        names = [
            self.primary, self.aliases, self.display_name, self.quota, self.enabled,
            self.services, self.home, self.expires, self.stable_id, self.created, self.updated,
        ]  # fmt: skip
        if self.primary == "proxyAddresses":
            names.append("mail")  # the fallback when no SMTP: value is present
        if with_hash and self.password:
            names.append(self.password)
        return sorted({n for n in names if n})

    # -- entry -> model -----------------------------------------------------------------------

    def addresses(self, entry: Entry) -> tuple[Address, list[Address]]:
        """The primary address and the other addresses of ``entry`` (canonical, primary not
        repeated). TemporaryFailure when the entry has no usable primary address."""
        others: list[str] = []
        primary: str | None = None
        if self.primary == "proxyAddresses":
            for value in entry.all("proxyAddresses")[:MAX_ADDRESSES]:
                kind, sep, addr = value.partition(":")
                if not sep or kind.lower() != "smtp":
                    continue  # X500:, SIP:, X400: … are not mail addresses
                if kind == "SMTP" and primary is None:
                    primary = addr
                else:
                    others.append(addr)
            primary = primary or entry.first("mail")
        else:
            primary = entry.first(self.primary)
        if self.aliases and self.aliases != "proxyAddresses":
            others += entry.all(self.aliases)[:MAX_ADDRESSES]
        if primary is None:
            raise TemporaryFailure(f"entry {entry.dn!r}: no primary address ({self.primary})")
        try:
            main = Address.parse(primary)
        except InvalidInput as exc:
            raise TemporaryFailure(f"entry {entry.dn!r}: invalid {self.primary}") from exc
        seen = {main}
        aliases: list[Address] = []
        for text in others:
            with contextlib.suppress(InvalidInput):  # a malformed secondary is not an address
                alias = Address.parse(text)
                if alias not in seen:
                    seen.add(alias)
                    aliases.append(alias)
        return main, aliases

    def account(self, entry: Entry, *, with_hash: bool, now: datetime | None = None) -> Account:
        """The ``Account`` an entry describes (its address is the primary one)."""
        address, _aliases = self.addresses(entry)
        return Account(
            address=address,
            password_hash=entry.first(self.password) if with_hash and self.password else None,
            display_name=entry.first(self.display_name) or "" if self.display_name else "",
            enabled=self._enabled(entry) and not self._expired(entry, now or utcnow()),
            quota=self._quota(entry),
            services=self._services(entry),
            created=self._time(entry, self.created),
            updated=self._time(entry, self.updated),
            uid=self.entry_id(entry) if self.stable_id and entry.has(self.stable_id) else "",
        )

    def entry_id(self, entry: Entry) -> str:
        """The directory's rename-proof id (``entryUUID`` text, ``objectGUID`` as hex)."""
        raw = entry.raw(self.stable_id)
        if len(raw) != 1:
            raise TemporaryFailure(f"entry {entry.dn!r}: needs exactly one {self.stable_id}")
        if self.stable_id.lower() == "objectguid":
            return raw[0].hex()
        return raw[0].decode("ascii", "replace").lower()

    def _enabled(self, entry: Entry) -> bool:
        if not self.enabled or self.enabled_rule == "none":
            return True
        text = entry.first(self.enabled)
        if text is None:
            return self.enabled_rule != "active"  # iRedMail: no accountStatus = not active
        if self.enabled_rule == "ad":
            try:
                flags = int(text)
            except ValueError as exc:
                raise TemporaryFailure(f"entry {entry.dn!r}: {self.enabled} not a number") from exc
            return not flags & AD_DISABLED
        if self.enabled_rule == "boolean":
            return text.strip().upper() == "TRUE"
        return text.strip().lower() == "active"

    def _expired(self, entry: Entry, now: datetime) -> bool:
        if not self.expires:
            return False
        text = entry.first(self.expires)
        if text is None:
            return False
        try:
            ticks = int(text)
        except ValueError as exc:
            raise TemporaryFailure(f"entry {entry.dn!r}: {self.expires} is not a number") from exc
        if ticks in AD_NEVER or ticks < 0:
            return False
        try:
            return _AD_EPOCH + timedelta(microseconds=ticks // 10) <= now
        except OverflowError:
            return False  # beyond year 9999: never in practice

    def _quota(self, entry: Entry) -> int:
        if not self.quota:
            return 0
        text = entry.first(self.quota)
        if text is None:
            return 0
        try:
            value = int(text.strip())
        except ValueError as exc:
            raise TemporaryFailure(f"entry {entry.dn!r}: {self.quota} is not a number") from exc
        return max(0, value) * self.quota_unit

    def _services(self, entry: Entry) -> frozenset[Service]:
        if not self.services:
            return ALL_SERVICES
        values = {v.lower() for v in entry.all(self.services)}
        if "mail" not in values:  # iRedMail: "mail" gates every mail service
            return frozenset()
        return frozenset(s for s, name in _IREDMAIL_SERVICES.items() if name in values)

    def _time(self, entry: Entry, attr: str) -> datetime:
        text = entry.first(attr) if attr else None
        if text is None:
            return utcnow()
        try:
            return parse_time(text)
        except ValueError as exc:
            raise TemporaryFailure(f"entry {entry.dn!r}: {attr} is not a UTC time") from exc


_ATTRIBUTE_FIELDS = frozenset(
    {
        "primary", "aliases", "display_name", "quota", "enabled", "services", "home",
        "expires", "stable_id", "password", "created", "updated", "group_attr",
    }
)  # fmt: skip


def _values(address: Address) -> dict[str, str]:
    return {"u": str(address), "n": address.local, "d": address.domain}


AD = ReadOnlyProfile(
    name="ad",
    list_filter="(&(objectCategory=person)(objectClass=user))",
    user_filter=(
        "(&(objectCategory=person)(objectClass=user)"
        "(|(userPrincipalName=%u)(mail=%u)(proxyAddresses=smtp:%u)))"
    ),
    address_filter="(&(objectCategory=person)(objectClass=user)(|(mail=%u)(proxyAddresses=smtp:%u)))",
    primary="proxyAddresses",
    aliases="proxyAddresses",
    enabled="userAccountControl",
    enabled_rule="ad",
    expires="accountExpires",
    stable_id="objectGUID",
    created="whenCreated",
    updated="whenChanged",
    nested_groups=True,
    domain_scope=True,
)

INETORGPERSON = ReadOnlyProfile(
    name="inetorgperson",
    list_filter="(objectClass=inetOrgPerson)",
    user_filter="(&(objectClass=inetOrgPerson)(|(mail=%u)(uid=%n)))",
    address_filter="(&(objectClass=inetOrgPerson)(mail=%u))",
    primary="mail",
    password="userPassword",  # noqa: S106 (an attribute name)
)

POSTFIX_BOOK = ReadOnlyProfile(
    name="postfix-book",
    list_filter="(objectClass=PostfixBookMailAccount)",
    user_filter="(&(objectClass=PostfixBookMailAccount)(mail=%u))",
    address_filter="(&(objectClass=PostfixBookMailAccount)(|(mail=%u)(mailAlias=%u)))",
    primary="mail",
    aliases="mailAlias",
    quota="mailQuota",
    quota_unit=1024,  # postfix-book stores KiB
    enabled="mailEnabled",
    enabled_rule="boolean",
    home="mailHomeDirectory",
    password="userPassword",  # noqa: S106 (an attribute name)
)

IREDMAIL = ReadOnlyProfile(
    name="iredmail",
    list_filter="(objectClass=mailUser)",
    user_filter="(&(objectClass=mailUser)(mail=%u))",
    address_filter=(
        "(&(objectClass=mailUser)(|(mail=%u)(&(enabledService=shadowaddress)(shadowAddress=%u))))"
    ),
    primary="mail",
    aliases="shadowAddress",
    quota="mailQuota",
    enabled="accountStatus",
    enabled_rule="active",
    services="enabledService",
    home="homeDirectory",
    password="userPassword",  # noqa: S106 (an attribute name)
)

PROFILES: dict[str, ReadOnlyProfile] = {
    p.name: p for p in (AD, INETORGPERSON, POSTFIX_BOOK, IREDMAIL)
}
OVERRIDABLE = tuple(f.name for f in fields(ReadOnlyProfile) if f.name != "name")


def profile_for(name: str, overrides: Mapping[str, object] | None = None) -> ReadOnlyProfile:
    """The built-in profile ``name`` with ``overrides`` (field → value) applied and checked."""
    try:
        base = PROFILES[name]
    except KeyError as exc:
        raise ConfigError(f"unknown directory profile {name!r}") from exc
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(OVERRIDABLE)
    if unknown:
        raise ConfigError(f"unknown profile setting(s): {', '.join(sorted(unknown))}")
    try:
        profile = replace(base, **overrides)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigError(f"invalid profile override: {exc}") from exc
    return profile.check()


def describe(profile: ReadOnlyProfile) -> dict[str, object]:
    """The effective mapping as plain data (``idsvc config check``)."""
    return {f.name: getattr(profile, f.name) for f in fields(profile)}


def canonical_domains(names: Iterable[str]) -> frozenset[str]:
    """The configured mail domains, canonical (ConfigError for an invalid one)."""
    out = set()
    for name in names:
        try:
            out.add(canonical_domain(name))
        except InvalidInput as exc:
            raise ConfigError(f"directory.ldap.mail_domains: {exc}") from exc
    return frozenset(out)
