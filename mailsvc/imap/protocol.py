"""IMAP codec (pure, no I/O).

Reading: the server reads a command line; when it ends with a literal announcement (``{n}``,
``{n+}``) it reads ``n`` bytes and the next line, and so on (:func:`literal_at_end`). The
assembled bytes go to :func:`parse_command`, which returns the tag, the command name and the
arguments as a tree of tokens:

* :class:`Atom` — an atom (``str``), including ``BODY[HEADER.FIELDS (A B)]<0.10>``-style fetch
  atoms whose bracketed part may hold spaces and parentheses;
* ``bytes`` — a quoted string or a literal, ``{n}`` or RFC 3516's ``~{n}`` (indistinguishable
  afterwards, as RFC 3501 wants);
* ``list`` — a parenthesised list.

Limits: parenthesis nesting :data:`MAX_DEPTH`, at most :data:`MAX_TOKENS` tokens. Anything else
malformed raises :class:`ParseError` (``BAD``; the tag is kept when it could be read).

Writing: :func:`astring`/:func:`nstring` choose atom, quoted string or literal;
:func:`parse_sequence` and :class:`SequenceSet` handle ``1:3,5,7:*``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

MAX_DEPTH = 16
MAX_TOKENS = 10000
_LITERAL = re.compile(rb"\{([0-9]{1,10})(\+?)\}$")
_TAG = re.compile(rb"[!#$&',./0-9:;<=>?@A-Z^_`a-z|~-]{1,64}")  # astring-char minus "+"
ATOM_SPECIALS = set(b'(){ %*"\\]') | set(range(0, 0x20)) | {0x7F}
_SAFE_QUOTED = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")


class ParseError(ValueError):
    def __init__(self, text: str, tag: str | None = None) -> None:
        super().__init__(text)
        self.tag = tag


class Atom(str):
    """An atom token (case preserved; compare with ``.upper()``)."""


Token = Atom | bytes | list["Token"]


@dataclass
class Command:
    tag: str
    name: str  # upper case; "UID FETCH" style for UID commands
    args: list[Token]


def literal_at_end(line: bytes) -> tuple[int, bool] | None:
    """``(size, non_synchronising)`` when ``line`` announces a literal."""
    found = _LITERAL.search(line)
    if found is None:
        return None
    return int(found.group(1)), found.group(2) == b"+"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.tokens = 0

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def expect(self, byte: int) -> None:
        if self.peek() != byte:
            raise ParseError(f"expected {chr(byte)!r}")
        self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def token(self, depth: int) -> Token:
        self.tokens += 1
        if self.tokens > MAX_TOKENS:
            raise ParseError("too many tokens")
        c = self.peek()
        if c is None:
            raise ParseError("unexpected end of command")
        if c == ord("("):
            if depth >= MAX_DEPTH:
                raise ParseError("too deeply nested")
            self.pos += 1
            items: list[Token] = []
            while True:
                if self.peek() == ord(")"):
                    self.pos += 1
                    return items
                if items:
                    self.expect(ord(" "))
                    if self.peek() == ord(")"):
                        raise ParseError("space before ')'")
                items.append(self.token(depth + 1))
        if c == ord('"'):
            return self.quoted()
        if c == ord("{"):
            return self.literal()
        if c == ord("~") and self.data[self.pos + 1 : self.pos + 2] == b"{":
            self.pos += 1  # literal8 (RFC 3516, APPEND of binary content): bytes like any literal
            return self.literal()
        return self.atom()

    def quoted(self) -> bytes:
        self.pos += 1
        out = bytearray()
        while True:
            c = self.peek()
            if c is None or c in (0x0A, 0x0D, 0x00):
                raise ParseError("unterminated quoted string")
            self.pos += 1
            if c == ord('"'):
                return bytes(out)
            if c == ord("\\"):
                nxt = self.peek()
                if nxt not in (ord('"'), ord("\\")):
                    raise ParseError("bad escape in quoted string")
                self.pos += 1
                out.append(nxt)
            else:
                out.append(c)

    def literal(self) -> bytes:
        end = self.data.find(b"}", self.pos)
        if end < 0:
            raise ParseError("bad literal")
        spec = self.data[self.pos + 1 : end]
        if spec.endswith(b"+"):
            spec = spec[:-1]
        if not spec.isdigit() or len(spec) > 10:
            raise ParseError("bad literal size")
        size = int(spec)
        if self.data[end + 1 : end + 3] != b"\r\n":
            raise ParseError("literal must end the line")
        start = end + 3
        if start + size > len(self.data):
            raise ParseError("short literal")
        self.pos = start + size
        return self.data[start : start + size]

    def atom(self) -> Atom:
        start = self.pos
        if self.peek() == ord("\\"):  # a flag: "\" atom
            self.pos += 1
        while True:
            c = self.peek()
            if c is None or (c in ATOM_SPECIALS and c not in (ord("%"), ord("*"), ord("]"))):
                break
            if c == ord("["):
                depth = 0
                while True:
                    c = self.peek()
                    if c is None or c in (0x0A, 0x0D):
                        raise ParseError("unterminated section")
                    if c >= 0x80:
                        raise ParseError("8-bit characters in an atom")
                    self.pos += 1
                    if c == ord("["):
                        depth += 1
                    elif c == ord("]"):
                        depth -= 1
                        if depth == 0:
                            break
                continue
            if c == ord("]"):
                self.pos += 1
                continue
            if c >= 0x80:
                raise ParseError("8-bit characters in an atom")
            self.pos += 1
        if self.pos == start:
            raise ParseError("expected an atom")
        return Atom(self.data[start : self.pos].decode("ascii"))


def parse_command(data: bytes) -> Command:
    """One complete command (its last line without CRLF); :class:`ParseError`."""
    space = data.find(b" ")
    tag_bytes = data if space < 0 else data[:space]
    if not _TAG.fullmatch(tag_bytes):
        raise ParseError("bad tag")
    tag = tag_bytes.decode()
    if space < 0:
        raise ParseError("missing command", tag)
    reader = _Reader(data)
    reader.pos = space + 1
    try:
        name = reader.atom().upper()
        if name == "UID":
            reader.expect(ord(" "))
            name = "UID " + reader.atom().upper()
        args: list[Token] = []
        while not reader.at_end():
            reader.expect(ord(" "))
            args.append(reader.token(0))
    except ParseError as exc:
        raise ParseError(str(exc), tag) from None
    return Command(tag, name, args)


# --- typed argument helpers -------------------------------------------------------------


def as_string(token: Token) -> bytes:
    """An astring argument (atom or string)."""
    if isinstance(token, Atom):
        return token.encode()
    if isinstance(token, bytes):
        return token
    raise ParseError("expected a string")


def as_text(token: Token) -> str:
    try:
        return as_string(token).decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("string is not UTF-8") from None


def as_atom(token: Token) -> str:
    if not isinstance(token, Atom):
        raise ParseError("expected an atom")
    return token


def as_list(token: Token) -> list[Token]:
    if not isinstance(token, list):
        raise ParseError("expected a list")
    return token


# --- sequence sets --------------------------------------------------------------------------

_SEQ = re.compile(r"(\d+|\*)(?::(\d+|\*))?")


@dataclass(frozen=True)
class SequenceSet:
    """Ranges with ``None`` standing for ``*``; ``last`` is ``$`` (SEARCHRES) never."""

    ranges: tuple[tuple[int | None, int | None], ...]

    def resolve(self, largest: int) -> Iterator[tuple[int, int]]:
        """Closed ranges with ``*`` as ``largest`` (ordered low..high)."""
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            yield (min(a, b), max(a, b))

    def contains(self, value: int, largest: int) -> bool:
        return any(lo <= value <= hi for lo, hi in self.resolve(largest))


def parse_sequence(text: str) -> SequenceSet:
    ranges: list[tuple[int | None, int | None]] = []
    if not text or len(text) > 100_000:
        raise ParseError("bad sequence set")
    for item in text.split(","):
        found = _SEQ.fullmatch(item)
        if found is None:
            raise ParseError("bad sequence set")
        lo = None if found.group(1) == "*" else int(found.group(1))
        hi_text = found.group(2)
        hi = lo if hi_text is None else (None if hi_text == "*" else int(hi_text))
        if lo == 0 or hi == 0 or (lo or 0) > 2**32 - 1 or (hi or 0) > 2**32 - 1:
            raise ParseError("bad sequence number")
        ranges.append((lo, hi))
    return SequenceSet(tuple(ranges))


# --- writing --------------------------------------------------------------------------------


def quoted_or_literal(value: bytes) -> bytes:
    if len(value) < 1024 and _SAFE_QUOTED.fullmatch(value):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(value) + value


def nstring(value: bytes | str | None) -> bytes:
    if value is None:
        return b"NIL"
    if isinstance(value, str):
        value = value.encode("utf-8")
    return quoted_or_literal(value)


def astring(value: str) -> bytes:
    raw = value.encode("utf-8")
    if raw and all(b > 0x20 and b < 0x7F and b not in ATOM_SPECIALS for b in raw):
        return raw
    return quoted_or_literal(raw)


_FLAG_LISTS: dict[frozenset[str], bytes] = {}


def flag_list(flags: list[str] | set[str] | frozenset[str]) -> bytes:
    key = frozenset(flags)
    found = _FLAG_LISTS.get(key)
    if found is None:
        found = b"(" + " ".join(sorted(key, key=_flag_order)).encode() + b")"
        if len(_FLAG_LISTS) < 4096:  # flag combinations repeat: the cache stays small
            _FLAG_LISTS[key] = found
    return found


def _flag_order(flag: str) -> tuple[int, str]:
    order = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent"]
    return (order.index(flag), "") if flag in order else (len(order), flag)


def compact_set(values: list[int]) -> str:
    """``1:3,5`` for [1, 2, 3, 5] (sorted input)."""
    out: list[str] = []
    start = prev = None
    for v in values:
        if start is None:
            start = prev = v
        elif prev is not None and v == prev + 1:
            prev = v
        else:
            out.append(f"{start}" if start == prev else f"{start}:{prev}")
            start = prev = v
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}:{prev}")
    return ",".join(out)
