"""Blocking search helpers for the thread-pool path (writes, listings, their lookups).

``search`` runs one synchronous search and returns ``Entry`` objects; a continuation reference
raises ``ReferralSeen`` (referrals are never followed). ``point`` asks for at most two entries of
one key: two entries (or sizeLimitExceeded) is ``AmbiguousEntry``, nothing is None. python-ldap
errors propagate unmapped except in ``point``, which maps everything but the failover errors (so
the pool can still fail over). Call these only from a pool thread: they block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ldap

from idsvc.directory.filters import Filter
from idsvc.directory.ldap.errors import FAILOVER, ReferralSeen, map_error
from idsvc.directory.mapping import Entry
from idsvc.errors import AmbiguousEntry

SCOPE_BASE, SCOPE_ONELEVEL, SCOPE_SUBTREE = ldap.SCOPE_BASE, ldap.SCOPE_ONELEVEL, ldap.SCOPE_SUBTREE
NO_ATTRS = ["1.1"]  # RFC 4511 §4.5.1.8: return no attributes


def search(
    ldo: Any,
    base: str,
    scope: int,
    filt: Filter | str,
    attrs: list[str],
    timeout: float,
    sizelimit: int = 0,
    controls: Sequence[Any] = (),
) -> list[Entry]:
    """All entries of one search (blocking); ``controls``: python-ldap request controls."""
    results = ldo.search_ext_s(
        base, scope, filt, attrlist=attrs, timeout=timeout, sizelimit=sizelimit,
        serverctrls=list(controls) or None,
    )  # fmt: skip
    entries = []
    for dn, data in results:
        if dn is None:  # continuation reference (RFC 4511 §4.5.3)
            raise ReferralSeen
        entries.append(Entry(dn, data))
    return entries


def point(ldo: Any, base: str, filt: Filter, attrs: list[str], timeout: float) -> Entry | None:
    """At most one entry for a key: two (or a size limit) is AmbiguousEntry."""
    try:
        entries = search(ldo, base, SCOPE_SUBTREE, filt, attrs, timeout, sizelimit=2)
    except (ldap.LDAPError, ReferralSeen) as exc:
        if isinstance(exc, FAILOVER):
            raise
        raise map_error(exc, point=True) from exc
    if len(entries) > 1:
        raise AmbiguousEntry("more than one LDAP entry for one key")
    return entries[0] if entries else None
