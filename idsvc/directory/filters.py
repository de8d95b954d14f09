"""The one place where LDAP search filters (RFC 4515) and DNs (RFC 4514) are built and escaped.

Every value substituted into a filter goes through ``ldap.filter.escape_filter_chars`` and every
value put into a DN through ``ldap.dn.escape_dn_chars`` (python-ldap ≥ 3.4.5, where both handle
NUL correctly) — even when it was validated before; DN values with control characters are
refused. Nothing else in idsvc formats a filter or DN string. Results are typed (``Filter``,
``DN``) so a raw string cannot be passed by accident where mypy checks.

What it does not do: canonicalise (values arrive canonical) or decide which attributes to use
(that is ``mapping``). How it fails: an attribute name that is not an LDAP descriptor/OID raises
``ConfigError`` (names come from code or configuration, never from users); a value longer than
``MAX_VALUE`` characters, a DN value with a control character or a malformed DN raises
``InvalidInput``.
"""

from __future__ import annotations

import re
from typing import NewType

import ldap.dn
import ldap.filter

from idsvc.errors import ConfigError, InvalidInput

Filter = NewType("Filter", str)
DN = NewType("DN", str)

MAX_VALUE = 4096  # characters in one assertion or RDN value (keys are ≤ 254)
MAX_DN = 8192

# RFC 4512 §1.4: descr = keystring (ALPHA *(ALPHA/DIGIT/"-")), or a numericoid.
_ATTR = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]{0,127}|[0-9]+(?:\.[0-9]+)+)\Z")

AD_BIT_AND = "1.2.840.113556.1.4.803"  # Active Directory LDAP_MATCHING_RULE_BIT_AND
AD_IN_CHAIN = "1.2.840.113556.1.4.1941"  # Active Directory LDAP_MATCHING_RULE_IN_CHAIN
_PLACEHOLDER = re.compile(r"%(.)", re.DOTALL)
TEMPLATE_KEYS = frozenset("und")  # %u address, %n local part, %d domain (Dovecot's letters)


def attribute(name: str) -> str:
    """Return ``name`` if it is a valid attribute descriptor or OID, else raise ConfigError."""
    if not isinstance(name, str) or not _ATTR.match(name):
        raise ConfigError(f"not an LDAP attribute name: {name!r}")
    return name


def _value(value: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput("LDAP assertion value must be a string")
    if len(value) > MAX_VALUE:
        raise InvalidInput("value too long for an LDAP query")
    return value


def escape_value(value: str) -> str:
    """RFC 4515 escaping of one assertion value (``*``, ``(``, ``)``, ``\\``, NUL)."""
    return str(ldap.filter.escape_filter_chars(_value(value)))


def eq(attr: str, value: str) -> Filter:
    """``(attr=value)``, an equality match."""
    return Filter(f"({attribute(attr)}={escape_value(value)})")


def present(attr: str) -> Filter:
    """``(attr=*)``, the attribute exists."""
    return Filter(f"({attribute(attr)}=*)")


def startswith(attr: str, prefix: str) -> Filter:
    """``(attr=prefix*)``; an empty prefix is a presence filter."""
    if prefix == "":
        return present(attr)
    return Filter(f"({attribute(attr)}={escape_value(prefix)}*)")


def endswith(attr: str, suffix: str) -> Filter:
    """``(attr=*suffix)``; an empty suffix is a presence filter."""
    if suffix == "":
        return present(attr)
    return Filter(f"({attribute(attr)}=*{escape_value(suffix)})")


def greater_or_equal(attr: str, value: str) -> Filter:
    """``(attr>=value)`` under the attribute's ORDERING rule."""
    return Filter(f"({attribute(attr)}>={escape_value(value)})")


def after(attr: str, value: str) -> Filter:
    """Strictly after ``value`` in the ORDERING rule: ``(&(attr>=v)(!(attr=v)))``."""
    return and_(greater_or_equal(attr, value), not_(eq(attr, value)))


def bit_and(attr: str, mask: int) -> Filter:
    """Active Directory bit test ``(attr:1.2.840.113556.1.4.803:=mask)``."""
    if not isinstance(mask, int) or isinstance(mask, bool) or not 0 <= mask < 1 << 32:
        raise InvalidInput("bit mask must be an unsigned 32-bit integer")
    return Filter(f"({attribute(attr)}:{AD_BIT_AND}:={mask})")


def in_chain(attr: str, dn: str) -> Filter:
    """Active Directory transitive membership ``(attr:1.2.840.113556.1.4.1941:=dn)`` (nested
    groups; ``attr`` is ``memberOf``)."""
    return Filter(f"({attribute(attr)}:{AD_IN_CHAIN}:={escape_value(dn)})")


def check_template(template: str) -> str:
    """Validate a configured filter template (see :func:`template`): balanced parentheses,
    known placeholders only. Raises ConfigError; returns ``template``."""
    if not template.startswith("(") or not template.endswith(")") or len(template) > MAX_DN:
        raise ConfigError(f"filter template must be one parenthesised filter: {template!r}")
    depth = 0
    for char in _PLACEHOLDER.sub("", template.replace("%%", "")):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if depth != 0:
        raise ConfigError(f"unbalanced parentheses in filter template: {template!r}")
    for key in _PLACEHOLDER.findall(template.replace("%%", "")):
        if key not in TEMPLATE_KEYS:
            raise ConfigError(f"unknown placeholder %{key} in filter template {template!r}")
    return template


def template(text: str, values: dict[str, str]) -> Filter:
    """Fill a configured filter template: ``%u`` / ``%n`` / ``%d`` become the RFC 4515-escaped
    ``values["u"]`` … (address, local part, domain), ``%%`` a literal ``%``. The template
    itself comes from code or configuration (validated by :func:`check_template`), never from
    a user; every substituted value is escaped here."""

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "%":
            return "%"
        if key not in values:
            raise ConfigError(f"filter template placeholder %{key} has no value")
        return escape_value(values[key])

    return Filter(_PLACEHOLDER.sub(fill, text))


def object_class(name: str) -> Filter:
    return eq("objectClass", name)


def and_(*parts: Filter) -> Filter:
    """Conjunction; one part is returned as it is."""
    if not parts:
        raise ValueError("and_() needs at least one filter")
    return parts[0] if len(parts) == 1 else Filter("(&" + "".join(parts) + ")")


def or_(*parts: Filter) -> Filter:
    """Disjunction; one part is returned as it is."""
    if not parts:
        raise ValueError("or_() needs at least one filter")
    return parts[0] if len(parts) == 1 else Filter("(|" + "".join(parts) + ")")


def not_(part: Filter) -> Filter:
    return Filter(f"(!{part})")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def escape_dn_value(value: str) -> str:
    """RFC 4514 escaping of one RDN value (``,+"\\<>;=``, leading ``#``/space, trailing space).

    Control characters (C0 and DEL, NUL included) are refused with InvalidInput rather than
    escaped: libldap's DN parser drops a leading or trailing TAB/CR/LF, so such a value would
    not name the entry it was built for. No canonical key contains one."""
    if _value(value) == "":
        raise InvalidInput("an RDN value cannot be empty")
    if _CONTROL.search(value):
        raise InvalidInput("control characters are not allowed in a DN value")
    return str(ldap.dn.escape_dn_chars(value))


def rdn(attr: str, value: str) -> str:
    """``attr=escaped-value``."""
    return f"{attribute(attr)}={escape_dn_value(value)}"


def child(attr: str, value: str, parent: DN) -> DN:
    """The DN ``attr=value,parent``."""
    return DN(f"{rdn(attr, value)},{parent}")


def parse_dn(text: str) -> DN:
    """Validate a DN that came from configuration or from the server; InvalidInput if it is not
    an RFC 4514 string. The empty DN (root DSE) is refused."""
    if not isinstance(text, str) or not text or len(text) > MAX_DN:
        raise InvalidInput("empty or over-long DN")
    try:
        ldap.dn.str2dn(text)
    except ldap.DECODING_ERROR as exc:
        raise InvalidInput(f"malformed DN: {text!r}") from exc
    return DN(text)


def rdn_value(dn: str) -> str:
    """The (unescaped) value of the first RDN of ``dn``; InvalidInput on a malformed DN."""
    try:
        parts = ldap.dn.str2dn(dn)
    except ldap.DECODING_ERROR as exc:
        raise InvalidInput(f"malformed DN: {dn!r}") from exc
    if not parts:
        raise InvalidInput("empty DN")
    return str(parts[0][0][1])


def parent(dn: str) -> DN:
    """The DN one level up (``""`` for a single-RDN DN)."""
    try:
        parts = ldap.dn.str2dn(dn)
    except ldap.DECODING_ERROR as exc:
        raise InvalidInput(f"malformed DN: {dn!r}") from exc
    return DN(str(ldap.dn.dn2str(parts[1:])))
