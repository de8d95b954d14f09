"""MIME structure measured on the raw message bytes (pure code, no I/O).

:func:`parse` splits a message into a tree of :class:`Part` objects that record byte offsets into
the original bytes — where a part's header starts, where its body starts (after the empty line)
and where it ends — so every size, line count and ``BODY[section]`` is cut from the bytes as
stored, never from a re-serialised message. Header fields are read with the stdlib ``email``
parser (``compat32``) on the header bytes only.

Multipart bodies are split at ``--boundary`` lines (the line break before a delimiter belongs to
the delimiter, RFC 2046 §5.1.1); ``message/rfc822`` bodies are parsed as a nested message.
Bounded: at most :data:`MAX_DEPTH` nesting levels and :data:`MAX_PARTS` parts, beyond which the
rest is treated as an opaque body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value

MAX_DEPTH = 50
MAX_PARTS = 5000
_BLANK = re.compile(rb"\r?\n\r?\n")
_PARSER = BytesHeaderParser(policy=compat32)


@dataclass
class Part:
    start: int  # first header byte
    body_start: int  # first body byte (after the empty line)
    end: int  # one past the last body byte
    headers: Message
    maintype: str
    subtype: str
    children: list[Part] = field(default_factory=list)
    message: Part | None = None  # the encapsulated message of message/rfc822
    closed_at_end: bool = False  # multipart whose close delimiter line ends the part

    @property
    def params(self) -> list[tuple[str, str]]:
        found = self.headers.get_params(header="content-type") or []
        return [(k, collapse_rfc2231_value(v)) for k, v in found[1:]]

    @property
    def is_multipart(self) -> bool:
        return self.maintype == "multipart"

    def header_bytes(self, raw: bytes) -> bytes:
        return raw[self.start : self.body_start]

    def body_bytes(self, raw: bytes) -> bytes:
        return raw[self.body_start : self.end]

    def body_lines(self, raw: bytes) -> int:
        """Line breaks in the body (a last line without one is not counted, as Dovecot does)."""
        return raw.count(b"\n", self.body_start, self.end)


class _Budget:
    def __init__(self) -> None:
        self.parts = 0


def header_end(raw: bytes, start: int, end: int) -> int:
    """Offset just after the header block's empty line (``end`` when there is none)."""
    if raw.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if raw.startswith(b"\n", start) and start + 1 <= end:
        return start + 1
    found = _BLANK.search(raw, start, end)
    if found is None:
        return end
    # the first line break ends the last header line; the second is the empty line
    return found.end()


def _content_type(headers: Message, default: str) -> tuple[str, str]:
    value = headers.get("content-type")
    if value is None:
        return tuple(default.split("/", 1))  # type: ignore[return-value]
    ctype = headers.get_content_type()
    main, _, sub = ctype.partition("/")
    if not main or not sub or (ctype == "text/plain" and "/" not in str(value)):
        return tuple(default.split("/", 1))  # type: ignore[return-value]
    return main, sub


def parse(raw: bytes) -> Part:
    return _parse(raw, 0, len(raw), "text/plain", 0, _Budget())


def _parse(raw: bytes, start: int, end: int, default: str, depth: int, budget: _Budget) -> Part:
    budget.parts += 1
    body_start = header_end(raw, start, end)
    headers = _PARSER.parsebytes(raw[start:body_start])
    main, sub = _content_type(headers, default)
    part = Part(start, body_start, end, headers, main, sub)
    if depth >= MAX_DEPTH or budget.parts >= MAX_PARTS:
        return part
    if main == "multipart":
        boundary = headers.get_param("boundary", header="content-type")
        if isinstance(boundary, str) and boundary:
            child_default = "message/rfc822" if sub == "digest" else "text/plain"
            marker = boundary.encode("latin-1", "replace")
            spans, part.closed_at_end = split_multipart(raw, body_start, end, marker)
            for child_start, child_end, line_break in spans:
                child = _parse(raw, child_start, child_end, child_default, depth + 1, budget)
                inner = child.message if child.message is not None else child
                if line_break and inner.is_multipart and inner.closed_at_end:
                    # the line break before our delimiter already ended the child's own close
                    # delimiter line: it stays in the child (Dovecot's reading)
                    child.end += line_break
                    if child.message is not None:
                        child.message.end += line_break
                part.children.append(child)
                if budget.parts >= MAX_PARTS:
                    break
    elif main == "message" and sub == "rfc822":
        part.message = _parse(raw, body_start, end, "text/plain", depth + 1, budget)
    return part


def split_multipart(
    raw: bytes, start: int, end: int, boundary: bytes
) -> tuple[list[tuple[int, int, int]], bool]:
    """(start, end, length of the line break cut before the next delimiter) of each body part
    between ``--boundary`` delimiter lines; True when the close delimiter line ends the body."""
    delimiter = b"--" + boundary
    spans: list[tuple[int, int, int]] = []
    part_start: int | None = None
    pos = start
    while pos < end:
        line_end = raw.find(b"\n", pos, end)
        next_pos = end if line_end < 0 else line_end + 1
        if raw.startswith(delimiter, pos) and pos + len(delimiter) <= end:
            rest = raw[pos + len(delimiter) : next_pos].rstrip(b"\r\n")
            closing = rest.startswith(b"--")
            if not rest.strip(b" \t") or closing:
                if part_start is not None:
                    # the line break before the delimiter belongs to it
                    stop = pos
                    if stop > part_start and raw[stop - 1 : stop] == b"\n":
                        stop -= 1
                        if stop > part_start and raw[stop - 1 : stop] == b"\r":
                            stop -= 1
                    stop = max(stop, part_start)
                    spans.append((part_start, stop, pos - stop))
                if closing:
                    return spans, next_pos >= end
                part_start = next_pos
        pos = next_pos
    if part_start is not None and part_start <= end:
        spans.append((part_start, end, 0))  # no closing delimiter: the part runs to the end
    return spans, False


def section(root: Part, path: tuple[int, ...]) -> Part | None:
    """The part at IMAP section ``path`` (1-based), ``None`` when there is none."""
    part = root
    at_message = True  # part is a message: the root, or the one inside message/rfc822
    stuck = False  # a non-multipart part already taken as its own part 1: nothing deeper
    for index in path:
        if not at_message and part.message is not None:
            part, at_message = part.message, True
        if part.is_multipart:
            if not 1 <= index <= len(part.children):
                return None
            part, at_message, stuck = part.children[index - 1], False, False
        elif index != 1 or stuck:
            return None
        else:  # part 1 of a non-multipart part is the part itself (of a message: its body)
            at_message, stuck = False, True
    return part
