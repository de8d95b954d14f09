r"""The Dovecot dict client protocol (``src/lib-dict/dict-client.h``), server side, pure: no I/O.

Framing: LF-terminated lines of at most :data:`MAX_LINE` bytes; a one-character command followed
by TAB-separated, tab-escaped arguments (the escaping of the auth-client protocol). The first line
must be the handshake ``H<major>\t<minor>\t<value type>\t<user>\t<dict name>``; Dovecot 2.3 sends
major 3 (2.2: 2), 2.4 sends 4; the server sends nothing back. Commands this read-only server
understands::

    L<key>\t<user>                       lookup   → O<value> | N | F<error>
    I<flags>\t<max rows>\t<path>\t<user> iterate  → O<key>\t<value> rows, then an empty line
    B/S/U/A/T/R/V …                      transaction commands: no reply (ignored)
    C<txid>                              commit   → F<txid>\t<error> (we are read-only)

Anything else — another first line, an unknown major version, an unknown command, a malformed
number, a dangling escape, a line over the limit, invalid UTF-8 — is a :class:`ProtocolError`:
the connection is closed (Dovecot then fails the lookup temporarily).
"""

from __future__ import annotations

from dataclasses import dataclass

from idsvc.wire.dovecot_auth.protocol import MalformedLine, tab_escape, tab_unescape
from idsvc.wire.framing import LineDecoder

MAX_LINE = 65536  # Dovecot's dict client limit for a command line
MAJOR_VERSIONS = frozenset({2, 3, 4})
MAX_ROWS_CAP = 2**32 - 1

# iterate flags (lib-dict/dict.h)
ITERATE_RECURSE = 0x01
ITERATE_SORT_BY_KEY = 0x02
ITERATE_SORT_BY_VALUE = 0x04
ITERATE_NO_VALUE = 0x08
ITERATE_EXACT_KEY = 0x10
ITERATE_ASYNC = 0x20

_IGNORED = frozenset("BSUATRV")  # transaction commands: no reply


class ProtocolError(Exception):
    """The client broke the protocol; the connection is closed."""


@dataclass(frozen=True, slots=True)
class Hello:
    major: int
    minor: int
    value_type: int
    user: str
    name: str


@dataclass(frozen=True, slots=True)
class Lookup:
    key: str
    user: str


@dataclass(frozen=True, slots=True)
class Iterate:
    flags: int
    max_rows: int  # 0: unlimited
    path: str
    user: str


@dataclass(frozen=True, slots=True)
class Commit:
    txid: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A transaction command that needs no reply."""

    command: str


Command = Hello | Lookup | Iterate | Commit | Ignored


def decoder() -> LineDecoder:
    return LineDecoder(MAX_LINE)


def _uint(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise ProtocolError(f"malformed {what}")
    value = int(text)
    if value > MAX_ROWS_CAP:
        raise ProtocolError(f"{what} out of range")
    return value


def _fields(rest: str) -> list[str]:
    try:
        return [tab_unescape(field) for field in rest.split("\t")]
    except MalformedLine as exc:
        raise ProtocolError(str(exc)) from None


def parse_line(line: bytes, *, greeted: bool) -> Command:
    """Parse one line (without its LF). ``greeted``: the handshake was already received."""
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("line is not UTF-8") from None
    if not text:
        raise ProtocolError("empty line")
    op, rest = text[0], text[1:]
    if not greeted:
        if op != "H":
            raise ProtocolError("expected the handshake first")
        return _hello(_fields(rest))
    if op == "L":
        args = _fields(rest)
        if not 1 <= len(args) <= 2:
            raise ProtocolError("malformed lookup")
        return Lookup(args[0], args[1] if len(args) > 1 else "")
    if op == "I":
        args = _fields(rest)
        if not 3 <= len(args) <= 4:
            raise ProtocolError("malformed iterate")
        flags = _uint(args[0], "iterate flags")
        return Iterate(flags, _uint(args[1], "max rows"), args[2], args[3] if len(args) > 3 else "")
    if op == "C":
        args = _fields(rest)
        if not args[0]:
            raise ProtocolError("malformed commit")
        return Commit(args[0])
    if op in _IGNORED:
        return Ignored(op)
    raise ProtocolError("unknown command")


def _hello(args: list[str]) -> Hello:
    if len(args) < 2:
        raise ProtocolError("malformed handshake")
    major, minor = _uint(args[0], "major version"), _uint(args[1], "minor version")
    if major not in MAJOR_VERSIONS:
        raise ProtocolError(f"unsupported protocol major version {major}")
    value_type = _uint(args[2], "value type") if len(args) > 2 and args[2] else 0
    user = args[3] if len(args) > 3 else ""
    name = args[4] if len(args) > 4 else ""
    return Hello(major, minor, value_type, user, name)


# --- replies ----------------------------------------------------------------------------------


def found(value: str) -> bytes:
    return b"O" + tab_escape(value).encode("utf-8") + b"\n"


def not_found() -> bytes:
    return b"N\n"


def failure(error: str) -> bytes:
    return b"F" + tab_escape(error).encode("utf-8") + b"\n"


def row(key: str, value: str) -> bytes:
    return (
        b"O" + tab_escape(key).encode("utf-8") + b"\t" + tab_escape(value).encode("utf-8") + b"\n"
    )


def end_of_rows() -> bytes:
    return b"\n"


def commit_failed(txid: str, error: str) -> bytes:
    return (
        b"F" + tab_escape(txid).encode("utf-8") + b"\t" + tab_escape(error).encode("utf-8") + b"\n"
    )
