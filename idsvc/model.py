"""Value objects of the identity model, and the one canonicalisation of logins and addresses.

Canonical form (the profile every ingress uses: SASL, RCPT, IMAP/POP3, REST, cache keys):

* **local part**: ASCII only, RFC 5322 ``dot-atom`` characters, lower-cased. Quoted local parts and
  non-ASCII local parts are refused (no SMTPUTF8 mailboxes yet), so a Unicode look-alike can never
  fold onto an ASCII account: the ASCII check runs *before* lower-casing (``"\\u212a".lower()`` is
  ``"k"``).
* **domain**: ASCII labels are lower-cased LDH labels; a non-ASCII label must already be in NFC and
  valid under IDNA2008 (the ``idna`` package, no UTS #46 mapping), and is stored as its A-label
  (``xn--…``). Upper-case, fullwidth and compatibility forms are refused instead of mapped, for the
  same reason. One trailing dot (the DNS root) is dropped. IP literals are refused.
* Lengths: local part ≤ 64 octets, domain ≤ 253, whole address ≤ 254 (RFC 5321 §4.5.3.1).

``canonical_*`` functions are idempotent: ``f(f(x)) == f(x)``. They raise ``InvalidAddress`` /
``InvalidDomain`` with a message that is safe to show (it never echoes control characters).
"""

from __future__ import annotations

import contextlib
import string
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Generic, TypeVar

import idna

from idsvc.errors import InvalidAddress, InvalidDomain

MAX_LOCAL = 64
MAX_DOMAIN = 253
MAX_ADDRESS = 254
MAX_LABEL = 63

_ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
_LDH = frozenset(string.ascii_lowercase + string.digits + "-")


# canonical_domain is pure, and logins and directory entries repeat a few domains endlessly:
# remember recent successful results (FIFO-bounded; failures are never remembered, so invalid
# input cannot fill it, and a flood of valid names only evicts older entries).
_DOMAIN_MEMO: dict[str, str] = {}
DOMAIN_MEMO_SIZE = 4096


def canonical_domain(text: str) -> str:
    """Return the canonical (lower-case ASCII, A-label) form of a domain name."""
    if type(text) is str:
        known = _DOMAIN_MEMO.get(text)
        if known is not None:
            return known
    name = _canonical_domain(text)
    if len(_DOMAIN_MEMO) >= DOMAIN_MEMO_SIZE:
        # another thread may evict at the same moment: losing that race is harmless
        with contextlib.suppress(KeyError, RuntimeError, StopIteration):
            del _DOMAIN_MEMO[next(iter(_DOMAIN_MEMO))]
    _DOMAIN_MEMO[text] = name
    return name


def _canonical_domain(text: str) -> str:
    if not isinstance(text, str) or not text:
        raise InvalidDomain("empty domain")
    if len(text) > 4 * MAX_DOMAIN:
        raise InvalidDomain("domain too long")
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    if text.startswith("["):
        raise InvalidDomain("address literals are not accepted")
    labels = text.split(".")
    out = [_canonical_label(label) for label in labels]
    name = ".".join(out)
    if len(name) > MAX_DOMAIN:
        raise InvalidDomain("domain too long")
    if out[-1].isdigit():
        raise InvalidDomain("top-level label cannot be numeric")
    return name


def _canonical_label(label: str) -> str:
    if not label:
        raise InvalidDomain("empty label in domain")
    if label.isascii():
        low = label.lower()
        if not set(low) <= _LDH:
            raise InvalidDomain("domain contains a character outside letters, digits and '-'")
        if low.startswith("-") or low.endswith("-"):
            raise InvalidDomain("domain label starts or ends with '-'")
        if len(low) > MAX_LABEL:
            raise InvalidDomain("domain label longer than 63 octets")
        if low[2:4] == "--":
            if not low.startswith("xn--"):
                raise InvalidDomain("reserved label form (--) in domain")
            try:  # an A-label must decode to a valid U-label and re-encode to itself
                if idna.encode(idna.decode(low)).decode("ascii") != low:
                    raise InvalidDomain("invalid A-label in domain")
            except idna.IDNAError as exc:
                raise InvalidDomain("invalid A-label in domain") from exc
        return low
    if unicodedata.normalize("NFC", label) != label:
        raise InvalidDomain("domain label is not in Unicode NFC form")
    try:
        alabel = idna.alabel(label).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidDomain("domain label is not valid under IDNA2008") from exc
    if len(alabel) > MAX_LABEL:
        raise InvalidDomain("domain label longer than 63 octets")
    return alabel


def canonical_local(text: str) -> str:
    """Return the canonical (lower-case ASCII dot-atom) local part."""
    if not text:
        raise InvalidAddress("empty local part")
    if not text.isascii():
        raise InvalidAddress("local part must be ASCII")
    if len(text) > MAX_LOCAL:
        raise InvalidAddress("local part longer than 64 octets")
    if text.startswith(".") or text.endswith(".") or ".." in text:
        raise InvalidAddress("misplaced dot in local part")
    if not set(text.replace(".", "")) <= _ATEXT:
        raise InvalidAddress("local part contains a character that is not allowed")
    return text.lower()


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """A canonical mail address. Build it with :meth:`parse`; fields are already canonical."""

    local: str
    domain: str

    @classmethod
    def parse(cls, text: str, *, default_domain: str | None = None) -> Address:
        """Canonicalise ``local@domain`` (or a bare ``local`` when ``default_domain`` is given)."""
        if not isinstance(text, str) or not text:
            raise InvalidAddress("empty address")
        if len(text) > 4 * MAX_ADDRESS:
            raise InvalidAddress("address too long")
        local, at, domain = text.rpartition("@")
        if not at:
            if default_domain is None:
                raise InvalidAddress("address has no domain")
            local, domain = text, default_domain
        if "@" in local:
            raise InvalidAddress("more than one '@' in address")
        local, domain = canonical_local(local), canonical_domain(domain)
        if len(local) + 1 + len(domain) > MAX_ADDRESS:  # both ASCII: characters are octets
            raise InvalidAddress("address longer than 254 octets")
        return cls(local, domain)

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    def without_extension(self, delimiters: str) -> Address:
        """Strip a recipient extension (``user+ext`` → ``user``), as Postfix recipient_delimiter.

        The split happens at the first delimiter character that is not the first character.
        """
        if not delimiters:
            return self
        for i, ch in enumerate(self.local):
            if i > 0 and ch in delimiters:
                return Address(self.local[:i], self.domain)
        return self


def canonical_address(text: str, *, default_domain: str | None = None) -> str:
    """String form of :meth:`Address.parse`; the key every cache, index and log uses."""
    return str(Address.parse(text, default_domain=default_domain))


def canonical_alias_source(text: str) -> str:
    """Canonicalise an alias source: ``local@domain`` or a catch-all ``@domain``."""
    if isinstance(text, str) and text.startswith("@"):
        return "@" + canonical_domain(text[1:])
    return canonical_address(text)


class Service(StrEnum):
    """Services an account can be enabled for (per-service enablement)."""

    SMTP = "smtp"
    SUBMISSION = "submission"
    IMAP = "imap"
    POP3 = "pop3"

    @classmethod
    def parse(cls, name: str) -> Service | None:
        """Map a protocol's service name (``smtp``, ``imap``, ``pop3``, ``submission``) or None."""
        known = _SERVICE_NAMES.get(name)  # the usual case: already exactly a value
        if known is not None:
            return known
        try:
            return cls(name.strip().lower())
        except ValueError:
            return None


_SERVICE_NAMES: dict[str, Service] = {s.value: s for s in Service}


ALL_SERVICES: frozenset[Service] = frozenset(Service)


def utcnow() -> datetime:
    """Timestamps are timezone-aware UTC, truncated to whole seconds (LDAP GeneralizedTime)."""
    return datetime.now(UTC).replace(microsecond=0)


class Secret:
    """A string that never shows itself in ``repr``/``str``/logs. ``reveal()`` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)


@dataclass(frozen=True, slots=True)
class Domain:
    """A mail domain we host. ``alias_domains`` receive mail and logins for the same users."""

    name: str
    enabled: bool = True
    default_quota: int = 0  # bytes, 0 = unlimited
    alias_domains: tuple[str, ...] = ()
    description: str = ""
    created: datetime = field(default_factory=utcnow)
    updated: datetime = field(default_factory=utcnow)
    revision: int = 1


@dataclass(frozen=True, slots=True)
class Account:
    """A virtual mail account (never a system user).

    ``password_hash`` is a ``{SCHEME}`` string, or None where the directory only supports
    bind-through authentication (corporate LDAP / AD). It is never shown by any API.
    """

    address: Address
    password_hash: str | None
    display_name: str = ""
    enabled: bool = True
    quota: int = 0  # bytes, 0 = unlimited
    services: frozenset[Service] = ALL_SERVICES
    created: datetime = field(default_factory=utcnow)
    updated: datetime = field(default_factory=utcnow)
    revision: int = 1
    uid: str = ""  # the directory's rename-proof id where it has one (AD objectGUID, entryUUID)

    @property
    def subject(self) -> str:
        """What the local overlay (app passwords) is keyed by: ``uid``, else the address (our
        own accounts are never renamed)."""
        return self.uid or str(self.address)

    @property
    def maildir(self) -> str:
        """Mail location relative to the configured mail root: ``<domain>/<local>/Maildir/``."""
        return f"{self.address.domain}/{self.address.local}/Maildir/"

    def __repr__(self) -> str:  # never print the hash
        return f"Account({self.address!s}, enabled={self.enabled}, rev={self.revision})"


@dataclass(frozen=True, slots=True)
class Alias:
    """``source`` (``local@domain``, or catch-all ``@domain``) delivers to every destination."""

    source: str
    destinations: tuple[str, ...]
    enabled: bool = True
    created: datetime = field(default_factory=utcnow)
    updated: datetime = field(default_factory=utcnow)
    revision: int = 1

    @property
    def domain(self) -> str:
        return self.source.rpartition("@")[2]

    @property
    def is_catchall(self) -> bool:
        return self.source.startswith("@")


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing. ``next_cursor`` is opaque; None means this was the last page."""

    items: list[T]
    next_cursor: str | None = None
    total: int | None = None
