"""Envelope addresses as mailsvc decides on them (relay, lookup, delivery). Pure, no I/O.

One function, :func:`parse_envelope`, turns what the client put between ``<`` and ``>`` into a
:class:`Mailbox` or refuses it. Every decision (is the domain ours, does the mailbox exist, may
this login send as it, where does it go) is taken on that one value, so no later rewrite can
make a remote address out of one that was judged local.

Refused (:class:`BadAddress`, answered ``553 5.1.3``), whatever the listener:

* source routes (``@hop1,@hop2:user@dom``) — RFC 5321 lets a server ignore the route, but a
  downstream MTA may not;
* quoted local parts (``"a@b"@ours``), and ``%`` / ``!`` in the local part (the percent hack and
  bang paths that a downstream MTA would rewrite into a remote address);
* address literals (``user@[192.0.2.1]``, ``user@[IPv6:…]``) — we host none;
* anything but an RFC 5321 dot-atom local part in ASCII (no SMTPUTF8), ≤ 64 octets;
* domains that are not valid hostnames, or non-ASCII domains that are not NFC IDNA2008
  (fullwidth letters, the Kelvin sign, dotless i … are errors, never folded onto ASCII).

Normalised: ASCII is lower-cased; one trailing dot on the domain is dropped (``ours.`` is
``ours``, as a resolver sees it); an IDN domain becomes its A-label form (``xn--…``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import idna

MAX_LOCAL = 64
MAX_DOMAIN = 253
MAX_ADDRESS = 254

_ATEXT = r"[A-Za-z0-9!#$&'*+/=?^_`{|}~-]"  # RFC 5322 atext without '%' (the percent hack)
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class BadAddress(ValueError):
    """Not an address mailsvc accepts; ``str(exc)`` is safe to show the client."""


@dataclass(frozen=True)
class Mailbox:
    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def canonical_domain(domain: str) -> str:
    """The lower-case A-label form of ``domain`` (one trailing dot dropped), or BadAddress."""
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain or domain.startswith("["):
        raise BadAddress("address literals are not accepted")
    if domain.isascii():
        ascii_domain = domain.lower()
    else:
        if unicodedata.normalize("NFC", domain) != domain:
            raise BadAddress("domain is not in NFC")
        try:
            ascii_domain = idna.encode(domain, uts46=False).decode("ascii").lower()
        except (idna.IDNAError, UnicodeError, ValueError):
            raise BadAddress("invalid international domain") from None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > MAX_DOMAIN or len(labels) < 2:
        raise BadAddress("domain must be a fully qualified host name")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise BadAddress("invalid domain")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError, ValueError):
                raise BadAddress("invalid international domain") from None
    if labels[-1].isdigit():
        raise BadAddress("domain must be a host name, not an address")
    return ascii_domain


def parse_envelope(text: str) -> Mailbox:
    """The :class:`Mailbox` for the path ``text`` (angle brackets already removed)."""
    if not text:
        raise BadAddress("empty address")
    if len(text) > MAX_ADDRESS + 2:
        raise BadAddress("address too long")
    if text.startswith("@") or ":" in text:
        raise BadAddress("source routes are not accepted")
    if text.startswith('"') or "\\" in text:
        raise BadAddress("quoted local parts are not accepted")
    if not text.isascii():
        # SMTPUTF8 is not offered; an 8-bit local part or domain is refused
        raise BadAddress("non-ASCII addresses are not accepted")
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise BadAddress("address must be local@domain")
    if "@" in local:
        raise BadAddress("more than one '@'")
    if "%" in local or "!" in local:
        raise BadAddress("'%' and '!' routing are not accepted")
    if len(local) > MAX_LOCAL or not _DOT_ATOM.fullmatch(local):
        raise BadAddress("invalid local part")
    mailbox = Mailbox(local.lower(), canonical_domain(domain))
    if len(str(mailbox)) > MAX_ADDRESS:
        raise BadAddress("address too long")
    return mailbox
