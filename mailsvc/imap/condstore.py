"""RFC 7162 (CONDSTORE, QRESYNC) syntax on the parsed token tree (pure, no I/O): SELECT/EXAMINE
parameters, FETCH and STORE modifiers, mod-sequence values, and the ``VANISHED`` response.

Parsed here, used by :mod:`mailsvc.imap.session`; anything malformed is a
:class:`~mailsvc.imap.protocol.ParseError` (``BAD``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from mailsvc.imap.protocol import Atom, ParseError, SequenceSet, Token, compact_set, parse_sequence

MAX_MODSEQ = 2**63 - 1


def modseq_value(token: Token, *, zero: bool = False) -> int:
    """A ``mod-sequence-value`` (1 … 2^63-1; ``zero``: ``mod-sequence-valzer``, 0 allowed)."""
    if not isinstance(token, Atom) or not token.isdigit() or len(token) > 19:
        raise ParseError("bad mod-sequence value")
    value = int(token)
    if value > MAX_MODSEQ or (value == 0 and not zero):
        raise ParseError("bad mod-sequence value")
    return value


def _uid_set(token: Token) -> SequenceSet:
    if not isinstance(token, Atom):
        raise ParseError("expected a UID set")
    seq = parse_sequence(token)
    return seq


@dataclass(frozen=True)
class Qresync:
    """``QRESYNC (uidvalidity modseq [known-uids [(seq-set uid-set)]])``."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True)
class SelectParams:
    condstore: bool = False
    qresync: Qresync | None = None


def parse_select_params(token: Token) -> SelectParams:
    """The parenthesised list after the mailbox name of SELECT / EXAMINE."""
    if not isinstance(token, list) or not token:
        raise ParseError("SELECT parameters must be a non-empty list")
    condstore = False
    qresync: Qresync | None = None
    i = 0
    while i < len(token):
        name = token[i]
        if not isinstance(name, Atom):
            raise ParseError("expected a SELECT parameter name")
        upper = name.upper()
        if upper == "CONDSTORE" and not condstore:
            condstore = True
            i += 1
        elif upper == "QRESYNC" and qresync is None and i + 1 < len(token):
            qresync = _qresync(token[i + 1])
            i += 2
        else:
            raise ParseError(f"unknown or repeated SELECT parameter {name}")
    return SelectParams(condstore, qresync)


def _qresync(token: Token) -> Qresync:
    if not isinstance(token, list) or not 2 <= len(token) <= 4:
        raise ParseError("QRESYNC needs (uidvalidity modseq [known-uids [seq-match]])")
    validity = token[0]
    if not isinstance(validity, Atom) or not validity.isdigit() or len(validity) > 10:
        raise ParseError("bad UIDVALIDITY")
    uidvalidity = int(validity)
    if not 0 < uidvalidity < 2**32:
        raise ParseError("bad UIDVALIDITY")
    modseq = modseq_value(token[1], zero=True)  # 0 accepted, as Dovecot does
    known = _uid_set(token[2]) if len(token) > 2 else None
    if known is not None and any(lo is None or hi is None for lo, hi in known.ranges):
        raise ParseError("known UIDs may not use *")
    match = None
    if len(token) > 3:
        pair = token[3]
        if not isinstance(pair, list) or len(pair) != 2:
            raise ParseError("seq-match-data needs (sequence-set uid-set)")
        seqs, uids = _uid_set(pair[0]), _uid_set(pair[1])
        if _count(seqs) != _count(uids) or _count(seqs) < 0:
            raise ParseError("seq-match-data sets differ in size")
        match = (seqs, uids)
    return Qresync(uidvalidity, modseq, known, match)


def _count(seq: SequenceSet) -> int:
    """Values in a set without ``*`` (-1 when it has one)."""
    total = 0
    for lo, hi in seq.ranges:
        if lo is None or hi is None:
            return -1
        total += abs(hi - lo) + 1
    return total


@dataclass(frozen=True)
class FetchModifiers:
    changedsince: int | None = None
    vanished: bool = False


def parse_fetch_modifiers(token: Token) -> FetchModifiers:
    """``(CHANGEDSINCE n [VANISHED])`` after the FETCH items."""
    if not isinstance(token, list) or not token:
        raise ParseError("FETCH modifiers must be a non-empty list")
    changed: int | None = None
    vanished = False
    i = 0
    while i < len(token):
        name = token[i]
        upper = name.upper() if isinstance(name, Atom) else ""
        if upper == "CHANGEDSINCE" and changed is None and i + 1 < len(token):
            changed = modseq_value(token[i + 1], zero=True)
            i += 2
        elif upper == "VANISHED" and not vanished:
            vanished = True
            i += 1
        else:
            raise ParseError("unknown or repeated FETCH modifier")
    if vanished and changed is None:
        raise ParseError("VANISHED needs CHANGEDSINCE")
    return FetchModifiers(changed, vanished)


def parse_store_modifiers(token: Token) -> int:
    """``(UNCHANGEDSINCE n)`` before the STORE action: ``n``."""
    if (
        not isinstance(token, list)
        or len(token) != 2
        or not isinstance(token[0], Atom)
        or token[0].upper() != "UNCHANGEDSINCE"
    ):
        raise ParseError("unknown STORE modifier")
    return modseq_value(token[1], zero=True)


def missing_ranges(
    ranges: Iterator[tuple[int, int]], present: list[int], top: int
) -> Iterator[tuple[int, int]]:
    """Sub-ranges of ``ranges`` (clipped to 1..``top``) holding no value of the sorted
    ``present``: the UIDs a client may know that no longer exist. Costs O(present in range)."""
    for lo, hi in ranges:
        lo, hi = max(lo, 1), min(hi, top)
        if lo > hi:
            continue
        start = lo
        i = bisect.bisect_left(present, lo)
        while i < len(present) and present[i] <= hi:
            if present[i] > start:
                yield (start, present[i] - 1)
            start = present[i] + 1
            i += 1
        if start <= hi:
            yield (start, hi)


def format_ranges(ranges: list[tuple[int, int]]) -> str:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return ",".join(f"{a}" if a == b else f"{a}:{b}" for a, b in merged)


def vanished(uids: list[int], *, earlier: bool) -> bytes:
    """``* VANISHED [(EARLIER)] <uid-set>`` for sorted ``uids`` (empty: nothing)."""
    if not uids:
        return b""
    return f"* VANISHED {'(EARLIER) ' if earlier else ''}{compact_set(uids)}\r\n".encode()
