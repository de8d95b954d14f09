"""The Postfix tcp_table protocol (``tcp_table(5)``), pure: no I/O.

One LF-terminated line per request and per reply on a persistent connection::

    C: get <key>          the key %-encoded (Postfix encodes '%', whitespace, non-printables)
    S: 200 <value>        found (value %-encoded the same way)
    S: 500 <text>         not found
    S: 400 <text>         temporary failure: Postfix retries

``get`` is the only request; anything else, or a line over :data:`MAX_LINE` bytes, is a
:class:`ProtocolError` (the connection closes). A key with a broken ``%`` escape, or that decodes
to something that is not printable UTF-8, can be no address: :func:`parse_request` gives None for
it (answered 500). A reply longer than :data:`MAX_REPLY` bytes (Postfix's limit, LF included) is
answered 400 — never a truncated list.
"""

from __future__ import annotations

import re

from idsvc.wire.framing import LineDecoder

MAX_LINE = 4096
MAX_REPLY = 4096
_HEX = re.compile(rb"%([0-9A-Fa-f]{2})")
_SAFE = frozenset(range(0x21, 0x7F)) - {0x25}  # printable ASCII except '%'


class ProtocolError(Exception):
    """Not a tcp_table request; the connection is closed."""


def decoder() -> LineDecoder:
    return LineDecoder(MAX_LINE)


def unquote(raw: bytes) -> bytes | None:
    """Decode %XX escapes; None when a '%' is not followed by two hex digits."""
    if raw.count(b"%") != len(_HEX.findall(raw)):
        return None
    return _HEX.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


def quote(text: str) -> str:
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in text.encode("utf-8"))


def parse_request(line: bytes) -> str | None:
    """The decoded key of a ``get`` request, or None when it can be no address."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line.startswith(b"get "):
        raise ProtocolError("expected 'get <key>'")
    raw = unquote(line[4:])
    if raw is None:
        return None
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return key if key and key.isprintable() else None


def found(value: str) -> bytes:
    line = b"200 " + quote(value).encode("ascii") + b"\n"
    return line if len(line) <= MAX_REPLY else temporary("reply too long for tcp_table")


def not_found() -> bytes:
    return b"500 not%20found\n"


def temporary(reason: str) -> bytes:
    return b"400 " + quote(reason[:200]).encode("ascii") + b"\n"
