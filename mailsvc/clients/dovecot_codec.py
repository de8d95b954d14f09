"""Pure codec of the Dovecot auth-client protocol, client side (protocols.md §2). No I/O.

Builds ``VERSION``/``CPID``/``AUTH``/``CONT``/``CANCEL`` lines and parses the server's handshake
(``VERSION MECH SPID CUID COOKIE DONE``) and replies (``OK``/``FAIL``/``CONT``). Values are
tab-escaped both ways (``\\x01`` + ``1 t r n 0``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_LINE = 16384
MAJOR = 1
MINOR = 2

_ESCAPES = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n", "\0": "\x010"}
_UNESCAPES = {"1": "\x01", "t": "\t", "r": "\r", "n": "\n", "0": "\0"}


class ServerProtocolError(ValueError):
    """The server sent something this client cannot trust: drop the connection."""


def escape(value: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in value)


def unescape(value: str) -> str:
    out: list[str] = []
    chars = iter(value)
    for c in chars:
        if c == "\x01":
            nxt = next(chars, "")
            out.append(_UNESCAPES.get(nxt, nxt))
        else:
            out.append(c)
    return "".join(out)


def hello(pid: int) -> bytes:
    return f"VERSION\t{MAJOR}\t{MINOR}\nCPID\t{pid}\n".encode()


def auth_line(
    request_id: int,
    mechanism: str,
    params: Mapping[str, str | None],
    initial: bytes | None = None,
) -> bytes:
    """``AUTH <id> <mech> <params…> [resp=<b64>]``; a ``None`` value is a bare flag."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", mechanism):
        raise ValueError("bad mechanism name")
    fields = ["AUTH", str(request_id), mechanism.upper()]
    for name, value in params.items():
        fields.append(name if value is None else f"{name}={escape(value)}")
    if initial is not None:
        fields.append("resp=" + base64.b64encode(initial).decode("ascii"))
    line = "\t".join(fields) + "\n"
    if len(line) > MAX_LINE:
        raise ValueError("AUTH line too long")
    return line.encode()


def cont_line(request_id: int, data: bytes) -> bytes:
    line = f"CONT\t{request_id}\t{base64.b64encode(data).decode('ascii')}\n"
    if len(line) > MAX_LINE:
        raise ValueError("CONT line too long")
    return line.encode()


def cancel_line(request_id: int) -> bytes:
    return f"CANCEL\t{request_id}\n".encode()


@dataclass(frozen=True)
class Handshake:
    major: int
    minor: int
    mechanisms: dict[str, frozenset[str]] = field(default_factory=dict)


class HandshakeReader:
    """Feed handshake lines one at a time until :attr:`done`."""

    def __init__(self) -> None:
        self.version: tuple[int, int] | None = None
        self.mechanisms: dict[str, frozenset[str]] = {}
        self.done = False

    def feed(self, line: str) -> None:
        fields = line.split("\t")
        cmd = fields[0]
        if self.version is None:
            if cmd != "VERSION" or len(fields) < 3 or not all(f.isdigit() for f in fields[1:3]):
                raise ServerProtocolError("handshake does not start with VERSION")
            self.version = (int(fields[1]), int(fields[2]))
            if self.version[0] != MAJOR:
                raise ServerProtocolError(f"unsupported major version {self.version[0]}")
        elif cmd == "MECH" and len(fields) >= 2:
            self.mechanisms[fields[1].upper()] = frozenset(fields[2:])
        elif cmd == "DONE":
            self.done = True
        # SPID, CUID, COOKIE and unknown lines: ignored, as Postfix does

    def result(self) -> Handshake:
        assert self.version is not None
        return Handshake(self.version[0], self.version[1], dict(self.mechanisms))


@dataclass(frozen=True)
class Reply:
    """``OK``/``FAIL``/``CONT`` for request ``request_id``; ``data`` is the decoded challenge of a
    ``CONT``; ``params`` the ``name=value`` fields (flags map to ``""``)."""

    kind: str
    request_id: int
    data: bytes = b""
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def user(self) -> str | None:
        return self.params.get("user")

    @property
    def temporary(self) -> bool:
        return self.params.get("code") == "temp_fail"


def parse_reply(line: str) -> Reply:
    fields = line.split("\t")
    if fields[0] not in ("OK", "FAIL", "CONT") or len(fields) < 2 or not fields[1].isdigit():
        raise ServerProtocolError("unexpected line from the auth server")
    request_id = int(fields[1])
    if fields[0] == "CONT":
        text = fields[2] if len(fields) > 2 else ""
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ServerProtocolError("CONT with invalid base64") from exc
        return Reply("CONT", request_id, data)
    params: dict[str, str] = {}
    for item in fields[2:]:
        name, _, value = item.partition("=")
        params.setdefault(name, unescape(value))
    return Reply(fields[0], request_id, b"", params)
