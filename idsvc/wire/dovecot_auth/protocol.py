"""Pure codec of the Dovecot auth-client protocol, server side (protocols.md §2). No I/O.

What it does:

* tab-escaping both ways (``\\x01`` escapes: ``1 t r n 0``);
* parses one client line (without its LF) into a typed message: :class:`Version`, :class:`Cpid`,
  :class:`Auth` (with its parameters; ``resp=`` must be the last one), :class:`Cont`,
  :class:`Cancel`;
* builds the handshake exactly as Postfix needs it (``VERSION``, every ``MECH`` line with its
  property flags *before* ``SPID``, then ``CUID``, ``COOKIE`` (32 hex), ``DONE``) and the three
  replies ``OK`` / ``FAIL`` / ``CONT``;
* strict base64 for ``resp=`` and ``CONT`` data (:func:`decode_base64`).

What it does not do: keep per-connection state (which ids are in flight — the server does, using
:class:`DuplicateId`), read sockets, or authenticate.

How it fails: a line that the server must answer by disconnecting raises a :class:`ProtocolError`
subclass (bad version, unknown command, malformed id, parameters after ``resp=``, over-long line,
bad escape). Invalid base64 is *not* fatal: :class:`InvalidBase64` lets the server answer
``FAIL … code=invalid_base64`` and carry on. Messages never include the offending line (it may
hold a password).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

MAX_LINE = 16384  # bytes, excluding the LF (Dovecot AUTH_CLIENT_MAX_LINE_LENGTH)
MAJOR_VERSION = 1
MINOR_VERSION = 2  # what Dovecot 2.3 announces; Postfix only checks the major
MAX_ID = 2**32 - 1
MAX_PARAMS = 64  # AUTH parameters per line (Dovecot clients send fewer than 20)

FAIL_REASON = "Authentication failed"  # the one reason every definite failure carries


class ProtocolError(Exception):
    """The client broke the protocol; the server logs ``str(exc)`` and disconnects."""


class LineTooLong(ProtocolError):
    def __init__(self) -> None:
        super().__init__(f"line longer than {MAX_LINE} bytes")


class BadVersion(ProtocolError):
    """Missing/garbled VERSION, or a major version other than 1."""


class UnknownCommand(ProtocolError):
    pass


class MalformedLine(ProtocolError):
    """Wrong field count, bad id, bad escape, not UTF-8 …"""


class ParamsAfterResp(ProtocolError):
    def __init__(self) -> None:
        super().__init__("AUTH parameters after resp=")


class DuplicateId(ProtocolError):
    def __init__(self, request_id: int) -> None:
        super().__init__(f"duplicate request id {request_id}")


class InvalidBase64(ValueError):
    """``resp=``/``CONT`` data is not strict base64 (answered with FAIL, not a disconnect)."""


class FailCode(Enum):
    """``code=`` values of ``FAIL`` (auth-client-interface.h). Postfix ignores them."""

    TEMP_FAIL = "temp_fail"
    AUTHZ_FAIL = "authz_fail"
    USER_DISABLED = "user_disabled"
    PASS_EXPIRED = "pass_expired"  # noqa: S105 - a code name, not a secret
    INVALID_BASE64 = "invalid_base64"


# --- escaping ---------------------------------------------------------------------------------

_ESCAPE = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n", "\0": "\x010"}
_UNESCAPE = {"1": "\x01", "t": "\t", "r": "\r", "n": "\n", "0": "\0"}
_ESCAPE_TABLE = str.maketrans(_ESCAPE)


def tab_escape(value: str) -> str:
    """Escape a value so it can sit in one TAB-separated field of one line."""
    return value.translate(_ESCAPE_TABLE)


def tab_unescape(value: str) -> str:
    """Undo :func:`tab_escape`. ``\\x01`` followed by another character stands for that
    character (as Dovecot decodes it); a ``\\x01`` at the very end is malformed."""
    if "\x01" not in value:
        return value
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        j = value.find("\x01", i)
        if j < 0:
            out.append(value[i:])
            break
        out.append(value[i:j])
        if j + 1 >= n:
            raise MalformedLine("dangling escape character at end of field")
        nxt = value[j + 1]
        out.append(_UNESCAPE.get(nxt, nxt))
        i = j + 2
    return "".join(out)


# --- base64 -----------------------------------------------------------------------------------


def decode_base64(text: str) -> bytes:
    """Strict RFC 4648 base64: alphabet, padding and length are checked; ``""`` and ``"="`` are
    the empty message. Raises :class:`InvalidBase64`."""
    if text in ("", "="):
        return b""
    if len(text) % 4:
        raise InvalidBase64("base64 length is not a multiple of 4")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidBase64("not valid base64") from None
    if base64.b64encode(data).decode("ascii") != text:  # non-canonical padding bits
        raise InvalidBase64("non-canonical base64")
    return data


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- client messages --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Version:
    major: int
    minor: int


@dataclass(frozen=True, slots=True)
class Cpid:
    pid: int


@dataclass(frozen=True, slots=True)
class Auth:
    """``AUTH``. ``resp`` is the raw base64 initial response (None when absent); ``params`` holds
    every ``name=value`` parameter (unescaped) and ``flags`` every bare one, both unvalidated;
    the typed properties read the ones the server uses."""

    request_id: int
    mechanism: str
    params: Mapping[str, str] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    resp: str | None = None

    @property
    def service(self) -> str | None:
        """``service=`` (Postfix, Dovecot ≤2.3) or ``protocol=`` (newer Dovecot clients)."""
        return self.params.get("service") or self.params.get("protocol")

    @property
    def remote_ip(self) -> str | None:
        return self.params.get("rip") or None

    @property
    def local_ip(self) -> str | None:
        return self.params.get("lip") or None

    @property
    def secured(self) -> bool:
        return "secured" in self.flags or "secured" in self.params


@dataclass(frozen=True, slots=True)
class Cont:
    request_id: int
    data: str  # raw base64


@dataclass(frozen=True, slots=True)
class Cancel:
    request_id: int


Message = Version | Cpid | Auth | Cont | Cancel


def _uint(text: str, what: str, *, nonzero: bool = True) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise MalformedLine(f"{what} is not an unsigned 32-bit number")
    value = int(text)
    if value > MAX_ID or (nonzero and value == 0):
        raise MalformedLine(f"{what} out of range")
    return value


def _parse_auth(fields: list[str]) -> Auth:
    if len(fields) < 3:
        raise MalformedLine("AUTH needs an id and a mechanism")
    request_id = _uint(fields[1], "request id")
    mechanism = fields[2]
    if not mechanism or not mechanism.isascii() or not mechanism.isprintable():
        raise MalformedLine("AUTH mechanism name is invalid")
    if len(fields) - 3 > MAX_PARAMS:
        raise MalformedLine("too many AUTH parameters")
    params: dict[str, str] = {}
    flags: set[str] = set()
    resp: str | None = None
    for raw in fields[3:]:
        if resp is not None:
            raise ParamsAfterResp
        name, eq, value = raw.partition("=")
        if not name:
            raise MalformedLine("AUTH parameter without a name")
        if name == "resp":
            resp = value if eq else ""
            continue
        if eq:
            params[name] = tab_unescape(value)
        else:
            flags.add(name)
    return Auth(request_id, mechanism, params, frozenset(flags), resp)


def parse_line(line: bytes) -> Message:
    """Parse one client line (LF stripped; a trailing CR is tolerated). Raises ProtocolError."""
    if len(line) > MAX_LINE:
        raise LineTooLong
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedLine("line is not valid UTF-8") from None
    fields = text.split("\t")
    command = fields[0]
    if command == "AUTH":
        return _parse_auth(fields)
    if command == "CONT":
        if len(fields) != 3:
            raise MalformedLine("CONT needs an id and data")
        return Cont(_uint(fields[1], "request id"), fields[2])
    if command == "CANCEL":
        if len(fields) != 2:
            raise MalformedLine("CANCEL needs an id")
        return Cancel(_uint(fields[1], "request id"))
    if command == "VERSION":
        if len(fields) < 3:
            raise BadVersion("VERSION needs major and minor")
        major = _uint(fields[1], "major version", nonzero=False)
        minor = _uint(fields[2], "minor version", nonzero=False)
        if major != MAJOR_VERSION:
            raise BadVersion(f"unsupported major version {major}")
        return Version(major, minor)
    if command == "CPID":
        if len(fields) != 2:
            raise MalformedLine("CPID needs one pid")
        return Cpid(_uint(fields[1], "client pid"))
    raise UnknownCommand("unknown command")


# --- server lines -----------------------------------------------------------------------------


def handshake(
    mechanisms: Iterable[tuple[str, Iterable[str]]], *, spid: str, cuid: int, cookie: str
) -> bytes:
    """The whole server handshake: ``mechanisms`` is ``(name, property flags)`` in offer order.

    ``cookie`` must be 32 lower-case hex characters (128 random bits)."""
    if len(cookie) != 32 or any(c not in "0123456789abcdef" for c in cookie):
        raise ValueError("cookie must be 32 lower-case hex characters")
    lines = [f"VERSION\t{MAJOR_VERSION}\t{MINOR_VERSION}"]
    for name, flags in mechanisms:
        lines.append("\t".join(["MECH", tab_escape(name), *(tab_escape(f) for f in flags)]))
    lines += [f"SPID\t{tab_escape(spid)}", f"CUID\t{cuid}", f"COOKIE\t{cookie}", "DONE"]
    return ("\n".join(lines) + "\n").encode("utf-8")


def ok_reply(request_id: int, user: str) -> bytes:
    return f"OK\t{request_id}\tuser={tab_escape(user)}\n".encode()


def fail_reply(request_id: int, code: FailCode | None = None, reason: str = FAIL_REASON) -> bytes:
    code_field = f"\tcode={code.value}" if code is not None else ""
    return f"FAIL\t{request_id}{code_field}\treason={tab_escape(reason)}\n".encode()


def cont_reply(request_id: int, challenge: bytes) -> bytes:
    return f"CONT\t{request_id}\t{encode_base64(challenge)}\n".encode("ascii")
