"""Checks every backend applies to values before it writes them (LDAP and embedded SQLite alike).

What it does: confirms that names are already canonical (domain names, account addresses, alias
sources and destinations), that texts are strings without NUL and within a backend's length
limit, that quotas are integers in ``0 … 2**63-1`` (SQLite's INTEGER range, also what the LDAP
schema's INTEGER holds for us), that services are known, and that a listing's page size and key
prefix are usable. Each function returns the checked value (possibly as a tidier type: a sorted
tuple, a frozenset of ``Service``, a page size capped at ``MAX_PAGE``).

What it does not do: canonicalise. A value that is not canonical is refused, never rewritten
(``idsvc.model`` canonicalises at the edges). Length limits of free text belong to each backend and
are passed in.

How it fails: ``InvalidInput`` (or its ``InvalidAddress`` / ``InvalidDomain`` subclasses) with a
message that names the field and never echoes the offending text.
"""

from __future__ import annotations

from collections.abc import Iterable

from idsvc.directory.base import MAX_PAGE
from idsvc.errors import InvalidAddress, InvalidDomain, InvalidInput
from idsvc.model import (
    ALL_SERVICES,
    MAX_ADDRESS,
    Address,
    Service,
    canonical_address,
    canonical_alias_source,
    canonical_domain,
)

MAX_INTEGER = 2**63 - 1  # SQLite INTEGER; quotas and revisions
MAX_DESTINATIONS = 1000  # destinations of one alias
MAX_ALIAS_DOMAINS = 1000  # alias domains of one domain


def check_domain_name(name: str, what: str = "domain") -> str:
    """``name`` itself if it is a canonical domain name, else InvalidDomain."""
    if not isinstance(name, str):
        raise InvalidDomain(f"{what} must be a string")
    try:
        canonical = canonical_domain(name)
    except InvalidDomain as exc:
        raise InvalidDomain(f"{what}: {exc}") from exc
    if canonical != name:
        raise InvalidDomain(f"{what} is not in canonical form")
    return name


def check_alias_domains(
    name: str, names: Iterable[str], limit: int = MAX_ALIAS_DOMAINS
) -> tuple[str, ...]:
    """Alias domains of ``name`` as a sorted set; a domain cannot be its own alias domain."""
    if isinstance(names, str):
        raise InvalidInput("alias domains must be a sequence of domain names")
    unique = tuple(sorted({check_domain_name(n, "alias domain") for n in names}))
    if len(unique) > limit:
        raise InvalidInput(f"a domain has at most {limit} alias domains")
    if name in unique:
        raise InvalidInput("a domain cannot be its own alias domain")
    return unique


def check_address(address: Address) -> str:
    """The text of a canonical account address (``local@domain``), else InvalidAddress."""
    if not isinstance(address, Address):
        raise InvalidAddress("an account address must be an idsvc.model.Address")
    text = str(address)
    if canonical_address(text) != text:
        raise InvalidAddress("account address is not in canonical form")
    return text


def check_source(source: str) -> str:
    """A canonical alias source (``local@domain`` or catch-all ``@domain``), else InvalidAddress."""
    if not isinstance(source, str) or canonical_alias_source(source) != source:
        raise InvalidAddress("alias source is not in canonical form")
    return source


def check_destinations(
    destinations: Iterable[str], limit: int = MAX_DESTINATIONS
) -> tuple[str, ...]:
    """Destinations as a sorted set of canonical addresses: at least one, at most ``limit``."""
    if isinstance(destinations, str):
        raise InvalidInput("alias destinations must be a sequence of addresses")
    values = list(destinations)
    if not all(isinstance(v, str) for v in values):
        raise InvalidAddress("alias destination is not in canonical form")
    unique = sorted(set(values))
    if not unique:
        raise InvalidInput("an alias needs at least one destination")
    if len(unique) > limit:
        raise InvalidInput(f"an alias has at most {limit} destinations")
    for destination in unique:
        if canonical_address(destination) != destination:
            raise InvalidAddress("alias destination is not in canonical form")
    return tuple(unique)


def check_quota(value: int, what: str = "quota") -> int:
    """An integer in ``0 … MAX_INTEGER`` (bool refused), else InvalidInput naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INTEGER:
        raise InvalidInput(f"{what} must be an integer between 0 and {MAX_INTEGER}")
    return value


def check_text(value: str, what: str, limit: int) -> str:
    """A string of at most ``limit`` characters without NUL, else InvalidInput naming ``what``."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    if len(value) > limit:
        raise InvalidInput(f"{what} longer than {limit} characters")
    if "\x00" in value:
        raise InvalidInput(f"{what} must not contain NUL")
    return value


def check_hash(value: str | None, limit: int) -> str | None:
    """A stored password hash (or None: bind-only accounts) checked as text."""
    return None if value is None else check_text(value, "password hash", limit)


def check_services(services: Iterable[Service]) -> frozenset[Service]:
    """The services as a frozenset of ``Service``; a name that is not a service → InvalidInput."""
    if (
        isinstance(services, frozenset)
        and services <= ALL_SERVICES
        and all(type(s) is Service for s in services)
    ):
        return services  # the usual case: already the right type, nothing to build
    try:
        return frozenset(Service(s) for s in services)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("unknown service") from exc


def check_page_limit(limit: int) -> int:
    """A listing's page size: a positive integer (bool refused), capped at ``MAX_PAGE``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput("limit must be a positive integer")
    return min(limit, MAX_PAGE)


def check_prefix(prefix: str) -> str:
    """A listing's key prefix: a string of at most ``MAX_ADDRESS`` characters without NUL."""
    if not isinstance(prefix, str) or len(prefix) > MAX_ADDRESS:
        raise InvalidInput(f"prefix must be a string of at most {MAX_ADDRESS} characters")
    if "\x00" in prefix:
        raise InvalidInput("prefix must not contain NUL")
    return prefix
