"""Checks on a raw ``AuthRequest`` before anything looks it up, and safe forms for logging.

What it does: :func:`request_problem` says why a request must be REJECTED before any directory
call — empty, NUL-bearing, over-long or control/format/space-bearing login, realm or authzid;
empty, NUL-bearing, over-long or non-Unicode password (reliability.md #3: an LDAP bind with a DN
and an empty password is an anonymous bind that "succeeds"); a malformed service name; and the
cleartext policy (PLAIN/LOGIN over an unsecured channel from a peer that is not loopback, when
``allow_cleartext_remote`` is off; an unknown peer counts as remote). :func:`sanitize` gives a
printable, bounded form of client text for logs and the audit trail.

What it does not do: canonicalise (``idsvc.model.Address.parse`` does, once) or decide anything
else. Lengths are UTF-8 bytes, as the wire protocols count them.

How it fails: it does not raise; a problem is returned as a short reason (never echoing input).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from idsvc.auth.request import AuthRequest
from idsvc.config import AuthSettings

PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})
MAX_SERVICE_LENGTH = 64
MAX_AUDIT_TEXT = 256

# ASCII control characters and space; non-ASCII text is checked by Unicode category instead.
_ASCII_BAD = re.compile(r"[\x00-\x20\x7f]")
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})


def login_problem(text: str, what: str, limit: int) -> str | None:
    """Why ``text`` is unacceptable as a login-like field (login, realm, authzid), or None."""
    if not text:
        return f"empty {what}"
    if text.isascii():  # the usual case: characters are octets, one regex covers the rest
        if len(text) > limit:
            return f"{what} too long"
        if "\x00" in text:
            return f"NUL in {what}"
        if _ASCII_BAD.search(text):
            return f"control character or space in {what}"
        return None
    if len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit:
        return f"{what} too long"
    if "\x00" in text:
        return f"NUL in {what}"
    if any(unicodedata.category(ch) in _BAD_CATEGORIES for ch in text):
        return f"control, format or space character in {what}"
    return None


def password_problem(password: str, limit: int) -> str | None:
    """Why ``password`` can never be right (empty, NUL, too long, not Unicode), or None."""
    if not password:
        return "empty password"
    if len(password) > limit:
        return "password too long"
    if not password.isascii():  # ASCII: the length in octets is the length checked above
        try:
            if len(password.encode("utf-8")) > limit:
                return "password too long"
        except UnicodeEncodeError:
            return "password is not valid Unicode"
    if "\x00" in password:
        return "NUL in password"
    return None


def is_loopback(remote_ip: str | None) -> bool:
    """True only for a parsable loopback address (IPv4-mapped IPv6 included)."""
    if not remote_ip:
        return False
    try:
        addr = ipaddress.ip_address(remote_ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def request_problem(request: AuthRequest, settings: AuthSettings) -> str | None:
    """Why ``request`` is REJECTED before any lookup, or None when it may proceed."""
    problem = login_problem(request.login, "login", settings.max_login_length)
    if problem is None:
        problem = password_problem(request.password.reveal(), settings.max_password_length)
    if problem is None and request.realm:
        problem = login_problem(request.realm, "realm", settings.max_login_length)
    if problem is None and request.authzid:
        problem = login_problem(request.authzid, "authzid", settings.max_login_length)
    if problem is None and (
        len(request.service) > MAX_SERVICE_LENGTH or not request.service.isprintable()
    ):
        problem = "malformed service name"
    if (
        problem is None
        and not settings.allow_cleartext_remote
        and not request.secured
        and request.mechanism.upper() in PLAINTEXT_MECHANISMS
        and not is_loopback(request.remote_ip)
    ):
        problem = "cleartext authentication from a remote peer"
    return problem


def sanitize(text: str | None, limit: int = MAX_AUDIT_TEXT) -> str:
    """Printable, bounded form of client-supplied text for logs and the audit trail."""
    if not text:
        return ""
    text = text[:limit]
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else "?" for ch in text)
