"""SEARCH (RFC 3501 §6.4.4): the key tree from command tokens (:func:`parse_keys`) and its
evaluation per message (:func:`matches`). String keys compare case-insensitively against decoded
text: header values with MIME encoded words decoded, bodies with their transfer encoding and
charset decoded (text parts only, as Dovecot does). Dates compare by calendar day (UTC)."""

from __future__ import annotations

import datetime as dt
import email.header
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from mailsvc.imap.bodytext import body_text
from mailsvc.imap.fetch import header_lines
from mailsvc.imap.protocol import Atom, ParseError, SequenceSet, Token, as_string, parse_sequence
from mailsvc.mailbox.flags import canonical

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


def parse_date(text: str) -> dt.date:
    try:
        day, month, year = text.split("-")
        return dt.date(int(year), MONTHS.index(month.lower()) + 1, int(day))
    except (ValueError, IndexError):
        raise ParseError("bad date") from None


@dataclass
class Candidate:
    """What a key may look at; ``raw`` is loaded only when a key needs it."""

    msn: int
    uid: int
    flags: frozenset[str]
    recent: bool
    size: Callable[[], int]
    internaldate: Callable[[], float]
    load: Callable[[], bytes]
    largest_msn: int
    largest_uid: int
    modseq: int = 0
    _raw: bytes | None = None
    _cache: dict[str, str] = field(default_factory=dict)

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.load()
        return self._raw

    def header_text(self, name: str) -> list[str]:
        key = "h:" + name
        if key not in self._cache:
            end = self.raw.find(b"\r\n\r\n")
            end2 = self.raw.find(b"\n\n")
            cut = min(x for x in (end, end2, len(self.raw)) if x >= 0)
            values = []
            for field_name, text in header_lines(self.raw[: cut + 2]):
                if name == "" or field_name == name.encode():
                    value = text.split(b":", 1)[1] if b":" in text else text
                    values.append(decode_header(value))
            self._cache[key] = "\x00".join(values)
        return self._cache[key].split("\x00") if self._cache[key] else []

    def body_text(self) -> str:
        if "body" not in self._cache:
            self._cache["body"] = body_text(self.raw)
        return self._cache["body"]


def decode_header(value: bytes) -> str:
    text = value.decode("utf-8", "replace").replace("\r\n", "").replace("\n", "")
    try:
        parts = email.header.decode_header(text)
    except (ValueError, LookupError):
        return text.strip().lower()
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            try:
                out.append(chunk.decode(charset or "utf-8", "replace"))
            except LookupError:
                out.append(chunk.decode("utf-8", "replace"))
        else:
            out.append(chunk)
    return "".join(out).strip().lower()


Matcher = Callable[[Candidate], bool]


def _flag(name: str, present: bool = True) -> Matcher:
    return lambda c: (name in c.flags) == present


def _header(name: str, needle: str) -> Matcher:
    wanted = needle.lower()
    if wanted == "":
        return lambda c: bool(c.header_text(name))
    return lambda c: any(wanted in v for v in c.header_text(name))


_ENCODED = re.compile(rb"(?i)=\?|content-transfer-encoding:[ \t]*(quoted-printable|base64)")


def _text_search(needle: str, *, body_only: bool) -> Matcher:
    """BODY/TEXT: a case-insensitive hit in the raw bytes is a match; a message with no encoded
    words and no quoted-printable/base64 parts cannot match otherwise (fast reject); anything
    else is decoded and searched."""
    raw_needle = needle.encode("utf-8")

    def match(c: Candidate) -> bool:
        raw = c.raw
        if body_only:
            cut = raw.find(b"\r\n\r\n")
            cut = raw.find(b"\n\n") if cut < 0 else cut
            scope = raw[cut:] if cut >= 0 else b""
        else:
            scope = raw
        if raw_needle in scope.lower():
            return True
        if _ENCODED.search(raw) is None and (needle.isascii() or raw.isascii()):
            return False
        if needle in c.body_text():
            return True
        return not body_only and any(needle in v for v in c.header_text(""))

    return match


def _sent_date(c: Candidate) -> dt.date | None:
    values = c.header_text("date")
    if not values:
        return None
    try:
        return parsedate_to_datetime(values[0]).date()
    except (TypeError, ValueError, IndexError):
        return None


def _internal(c: Candidate) -> dt.date:
    return dt.datetime.fromtimestamp(c.internaldate(), dt.UTC).date()


class _Keys:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.uses_modseq = False

    def next(self) -> Token:
        if self.pos >= len(self.tokens):
            raise ParseError("missing search argument")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def text(self) -> str:
        return as_string(self.next()).decode("utf-8", "replace")

    def number(self) -> int:
        tok = self.next()
        if not isinstance(tok, Atom) or not tok.isdigit():
            raise ParseError("expected a number")
        return int(tok)

    def one(self) -> Matcher:
        tok = self.next()
        if isinstance(tok, list):
            sub = _Keys(tok)
            matchers = sub.all()
            self.uses_modseq = self.uses_modseq or sub.uses_modseq
            return lambda c: all(m(c) for m in matchers)
        if not isinstance(tok, Atom):
            raise ParseError("expected a search key")
        key = tok.upper()
        simple = {
            "ALL": lambda c: True,
            "ANSWERED": _flag("\\Answered"), "UNANSWERED": _flag("\\Answered", False),
            "DELETED": _flag("\\Deleted"), "UNDELETED": _flag("\\Deleted", False),
            "DRAFT": _flag("\\Draft"), "UNDRAFT": _flag("\\Draft", False),
            "FLAGGED": _flag("\\Flagged"), "UNFLAGGED": _flag("\\Flagged", False),
            "SEEN": _flag("\\Seen"), "UNSEEN": _flag("\\Seen", False),
            "RECENT": lambda c: c.recent, "OLD": lambda c: not c.recent,
            "NEW": lambda c: c.recent and "\\Seen" not in c.flags,
        }  # fmt: skip
        if key in simple:
            return simple[key]
        if key in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            return _header(key.lower(), self.text())
        if key == "HEADER":
            name = self.text().lower()
            return _header(name, self.text())
        if key in ("BODY", "TEXT"):
            needle = self.text().lower()
            return _text_search(needle, body_only=key == "BODY")
        if key in ("KEYWORD", "UNKEYWORD"):
            word = canonical(self.text())
            return _flag(word, key == "KEYWORD")
        if key in ("LARGER", "SMALLER"):
            n = self.number()
            return (lambda c: c.size() > n) if key == "LARGER" else (lambda c: c.size() < n)
        if key in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
            day = parse_date(self.text())
            getter: Callable[[Candidate], dt.date | None] = (
                _sent_date if key.startswith("SENT") else _internal
            )
            op = key.removeprefix("SENT")
            compare: Callable[[dt.date], bool] = {
                "BEFORE": day.__gt__, "ON": day.__eq__, "SINCE": day.__le__,
            }[op]  # fmt: skip
            return lambda c: (d := getter(c)) is not None and compare(d)
        if key == "MODSEQ":  # RFC 7162: [entry-name entry-type] mod-sequence-valzer
            if isinstance(self.tokens[self.pos] if self.pos < len(self.tokens) else None, bytes):
                entry = as_string(self.next()).decode("ascii", "replace").lower()
                kind = self.next()
                if not entry.startswith("/flags/") or not isinstance(kind, Atom) or \
                        kind.lower() not in ("priv", "shared", "all"):  # fmt: skip
                    raise ParseError("bad MODSEQ entry")
            tok = self.next()
            if not isinstance(tok, Atom) or not tok.isdigit() or len(tok) > 19 or \
                    int(tok) > 2**63 - 1:  # fmt: skip
                raise ParseError("bad mod-sequence value")
            since = int(tok)
            self.uses_modseq = True
            return lambda c: c.modseq >= since
        if key == "NOT":
            inner = self.one()
            return lambda c: not inner(c)
        if key == "OR":
            left, right = self.one(), self.one()
            return lambda c: left(c) or right(c)
        if key == "UID":
            uids = parse_sequence(as_string(self.next()).decode())
            return lambda c: uids.contains(c.uid, c.largest_uid)
        try:
            msns: SequenceSet = parse_sequence(tok)
        except ParseError:
            raise ParseError(f"unknown search key {key}") from None
        return lambda c: msns.contains(c.msn, c.largest_msn)

    def all(self) -> list[Matcher]:
        out = []
        while self.pos < len(self.tokens):
            out.append(self.one())
        if not out:
            raise ParseError("empty search")
        return out


def parse_keys(tokens: list[Token]) -> Matcher:
    """The search program (after an optional ``CHARSET x``, which the caller strips)."""
    return parse_program(tokens)[0]


def parse_program(tokens: list[Token]) -> tuple[Matcher, bool]:
    """:func:`parse_keys`, and whether it uses ``MODSEQ`` (RFC 7162: the answer then ends
    with the highest modseq of the hits)."""
    keys = _Keys(tokens)
    matchers = keys.all()
    return (lambda c: all(m(c) for m in matchers)), keys.uses_modseq
