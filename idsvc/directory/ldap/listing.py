"""Listings: opaque cursors, RFC 2696 paged scans and the "limit + 1 smallest keys" selection.

The cursor is the last key returned, as base64url of ``v1:<kind>:<key>``; a malformed cursor or
one from another kind of listing is ``InvalidInput`` (bounded: at most ``MAX_CURSOR`` chars).
``paged`` streams a search page by page (blocking; at most ``MAX_SCAN`` entries, then
``TemporaryFailure``); ``first_page`` returns the DNs of the first N matches; ``smallest_keys``
counts matches and keeps the ``keep`` smallest keys after the cursor in O(keep) memory.
A continuation reference raises ``ReferralSeen``; other python-ldap errors propagate unmapped.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from typing import Any

import ldap
import ldap.controls

from idsvc.directory.filters import Filter
from idsvc.directory.ldap.errors import ReferralSeen
from idsvc.directory.ldap.search import NO_ATTRS
from idsvc.directory.mapping import Entry
from idsvc.errors import InvalidInput, TemporaryFailure

MAX_CURSOR = 1400
MAX_SCAN = 10_000_000  # entries one listing call may stream before giving up


def encode_cursor(kind: str, key: str) -> str:
    raw = f"v1:{kind}:{key}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(kind: str, cursor: str) -> str:
    """The key a cursor of listing ``kind`` resumes after; InvalidInput if it is not one."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR:
        raise InvalidInput("invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("invalid cursor") from exc
    tag = f"v1:{kind}:"
    if not text.startswith(tag) or len(text) == len(tag) or "\x00" in text:
        raise InvalidInput("invalid cursor (not from this listing)")
    return text[len(tag) :]


def paged(
    ldo: Any,
    base: str,
    scope: int,
    filt: Filter,
    attrs: list[str],
    *,
    page_size: int,
    timeout: float,
) -> Iterator[Entry]:
    """Yield entries of a search, RFC 2696 page by page (blocking)."""
    page = ldap.controls.SimplePagedResultsControl(True, size=page_size, cookie=b"")
    scanned = 0
    while True:
        msgid = ldo.search_ext(
            base, scope, filt, attrlist=attrs, serverctrls=[page], timeout=timeout
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
