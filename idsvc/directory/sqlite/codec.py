"""Conversions between model objects and rows, listing cursors, and write-side checks.

What it does: turns rows into ``Domain``/``Account``/``Alias`` and back, re-exports the listing
cursor codec (``idsvc.directory.cursor``), computes the index range of a ``prefix`` search, and
checks values before they are written: the checks live in
``idsvc.directory.checks`` (shared with the LDAP backend) and are re-exported here with this
store's text limits.

What it does not: canonicalise. Arguments arrive canonical (``idsvc.model``); a value that is not
canonical is refused, never rewritten.

How it fails: ``InvalidInput`` (or its ``InvalidAddress``/``InvalidDomain`` subclasses) with a
message that never echoes the offending text; ``DirectoryError`` for a stored value this code
cannot read (a damaged row).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from idsvc.directory import checks
from idsvc.directory.checks import MAX_DESTINATIONS as MAX_DESTINATIONS
from idsvc.directory.checks import MAX_INTEGER as MAX_INTEGER
from idsvc.directory.checks import check_address as check_address
from idsvc.directory.checks import check_alias_domains as check_alias_domains
from idsvc.directory.checks import check_destinations as check_destinations
from idsvc.directory.checks import check_domain_name as check_domain_name
from idsvc.directory.checks import check_quota as check_quota
from idsvc.directory.checks import check_services as check_services
from idsvc.directory.checks import check_source as check_source
from idsvc.directory.cursor import decode_cursor as decode_cursor
from idsvc.directory.cursor import encode_cursor as encode_cursor
from idsvc.errors import DirectoryError, InvalidInput
from idsvc.model import ALL_SERVICES, Account, Address, Alias, Domain, Service

MAX_TEXT = 4096  # display name, description
MAX_HASH = 4096  # a stored password hash

Row = tuple[Any, ...]


# -- values ------------------------------------------------------------------------------------


def seconds(moment: datetime) -> int:
    """A timezone-aware datetime as integer Unix seconds."""
    if moment.tzinfo is None:
        raise InvalidInput("timestamps must be timezone-aware")
    return int(moment.timestamp())


def moment(value: int) -> datetime:
    return datetime.fromtimestamp(int(value), UTC)


_SERVICES_TEXT: dict[frozenset[Service], str] = {}  # at most 2**len(Service) entries


def services_text(services: Iterable[Service]) -> str:
    key = services if isinstance(services, frozenset) else frozenset(services)
    text = _SERVICES_TEXT.get(key)
    if text is None:
        text = ",".join(sorted(Service(s).value for s in key))
        if key <= ALL_SERVICES:
            _SERVICES_TEXT[key] = text
    return text


def services_of(text: str) -> frozenset[Service]:
    try:
        return frozenset(Service(name) for name in text.split(",") if name)
    except ValueError as exc:
        raise DirectoryError("embedded store holds an unknown service name") from exc


def destinations_text(destinations: Iterable[str]) -> str:
    return json.dumps(sorted(set(destinations)), separators=(",", ":"))


def destinations_of(text: str) -> tuple[str, ...]:
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise DirectoryError("embedded store holds damaged alias destinations") from exc
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise DirectoryError("embedded store holds damaged alias destinations")
    return tuple(values)


# -- rows --------------------------------------------------------------------------------------

DOMAIN_COLUMNS = (
    "d.name, d.enabled, d.default_quota, d.description, d.created, d.updated, d.revision"
)
ACCOUNT_COLUMNS = (
    "address, password_hash, display_name, enabled, quota, services, created, updated, revision"
)
ALIAS_COLUMNS = "source, destinations, enabled, created, updated, revision"


def domain_of(row: Row) -> Domain:
    """``DOMAIN_COLUMNS`` followed by the space-separated alias domains (or NULL)."""
    name, enabled, quota, description, created, updated, revision, aliases = row
    return Domain(
        name=name,
        enabled=bool(enabled),
        default_quota=quota,
        alias_domains=tuple(sorted(aliases.split())) if aliases else (),
        description=description,
        created=moment(created),
        updated=moment(updated),
        revision=revision,
    )


def account_of(row: Row) -> Account:
    address, pw_hash, display, enabled, quota, services, created, updated, revision = row
    local, _, domain = address.rpartition("@")
    return Account(
        address=Address(local, domain),
        password_hash=pw_hash,
        display_name=display,
        enabled=bool(enabled),
        quota=quota,
        services=services_of(services),
        created=moment(created),
        updated=moment(updated),
        revision=revision,
    )


def account_row(account: Account, domain_id: int) -> Row:
    """Values for ``INSERT INTO accounts (address, domain_id, <ACCOUNT_COLUMNS minus address>)``."""
    return (
        str(account.address),
        domain_id,
        account.password_hash,
        account.display_name,
        int(account.enabled),
        account.quota,
        services_text(account.services),
        seconds(account.created),
        seconds(account.updated),
        account.revision,
    )


def alias_of(row: Row) -> Alias:
    source, destinations, enabled, created, updated, revision = row
    return Alias(
        source=source,
        destinations=destinations_of(destinations),
        enabled=bool(enabled),
        created=moment(created),
        updated=moment(updated),
        revision=revision,
    )


# -- listings ----------------------------------------------------------------------------------


page_limit = checks.check_page_limit


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """``(low, high)`` so that ``low <= key < high`` holds exactly for keys starting with prefix.

    Keys compare by code point (SQLite's BINARY collation on UTF-8 gives the same order). The
    successor of a prefix is the prefix with its last character incremented; a prefix made only of
    U+10FFFF has no upper bound. No LIKE/GLOB is involved, so ``%``, ``_`` and ``*`` in a prefix
    are ordinary characters.
    """
    stem = checks.check_prefix(prefix).rstrip("\U0010ffff")
    if not stem:
        return prefix, None
    return prefix, stem[:-1] + chr(ord(stem[-1]) + 1)


# -- checks before a write (shared with the LDAP backend: idsvc.directory.checks) ---------------


def check_text(value: str, what: str, limit: int = MAX_TEXT) -> str:
    """:func:`idsvc.directory.checks.check_text` with this store's default limit."""
    return checks.check_text(value, what, limit)


def check_hash(value: str | None) -> str | None:
    """:func:`idsvc.directory.checks.check_hash` with this store's limit."""
    return checks.check_hash(value, MAX_HASH)
