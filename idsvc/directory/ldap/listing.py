"""Listings: opaque cursors, RFC 2696 paged scans and the "limit + 1 smallest keys" selection.

Cursors are ``idsvc.directory.cursor``'s (re-exported here).
``paged`` streams a search page by page (blocking; at most ``MAX_SCAN`` entries, then
``TemporaryFailure``); ``first_page`` returns the DNs of the first N matches; ``smallest_keys``
counts matches and keeps the ``keep`` smallest keys after the cursor in O(keep) memory.
A continuation reference raises ``ReferralSeen``; other python-ldap errors propagate unmapped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import ldap
import ldap.controls

from idsvc.directory.cursor import decode_cursor as decode_cursor
from idsvc.directory.cursor import encode_cursor as encode_cursor
from idsvc.directory.filters import Filter
from idsvc.directory.ldap.errors import ReferralSeen
from idsvc.directory.ldap.search import NO_ATTRS
from idsvc.directory.mapping import Entry
from idsvc.errors import TemporaryFailure

MAX_SCAN = 10_000_000  # entries one listing call may stream before giving up


def paged(
    ldo: Any,
    base: str,
    scope: int,
    filt: Filter,
    attrs: list[str],
    *,
    page_size: int,
    timeout: float,
    controls: Sequence[Any] = (),
) -> Iterator[Entry]:
    """Yield entries of a search, RFC 2696 page by page (blocking); ``controls`` are sent
    with every page (python-ldap ``RequestControl`` objects)."""
    page = ldap.controls.SimplePagedResultsControl(True, size=page_size, cookie=b"")
    scanned = 0
    while True:
        msgid = ldo.search_ext(
            base, scope, filt, attrlist=attrs, serverctrls=[page, *controls], timeout=timeout
        )
        _, data, _, ctrls = ldo.result3(msgid, all=1, timeout=timeout)
        for dn, values in data:
            if dn is None:
                raise ReferralSeen
            scanned += 1
            if scanned > MAX_SCAN:
                raise TemporaryFailure("listing scanned too many entries")
            yield Entry(dn, values)
        cookie = b""
        for ctrl in ctrls:
            if ctrl.controlType == ldap.controls.SimplePagedResultsControl.controlType:
                cookie = ctrl.cookie
        if not cookie:
            return
        page.cookie = cookie


def first_page(
    ldo: Any, base: str, scope: int, filt: Filter, size: int, *, timeout: float
) -> list[str]:
    """DNs of the first ``size`` matches (no attributes; blocking)."""
    page = ldap.controls.SimplePagedResultsControl(True, size=size, cookie=b"")
    msgid = ldo.search_ext(
        base, scope, filt, attrlist=NO_ATTRS, serverctrls=[page], timeout=timeout
    )
    _, data, _, _ = ldo.result3(msgid, all=1, timeout=timeout)
    dns = []
    for dn, _values in data:
        if dn is None:
            raise ReferralSeen
        dns.append(dn)
    return dns


def smallest_keys(
    entries: Iterable[Entry], key_attr: str, prefix: str, after: str | None, keep: int
) -> tuple[int, list[tuple[str, str]]]:
    """(number of entries whose key starts with ``prefix``, the ``keep`` smallest
    ``(lower-cased key, stored key)`` pairs after ``after``, sorted). Memory O(keep)."""
    total = 0
    best: list[tuple[str, str]] = []
    for entry in entries:
        stored = entry.first(key_attr)
        if stored is None or not stored.lower().startswith(prefix):
            continue
        total += 1
        if after is not None and stored.lower() <= after:
            continue
        best.append((stored.lower(), stored))
        if len(best) >= 2 * keep:
            best.sort()
            del best[keep:]
    best.sort()
    del best[keep:]
    return total, best
