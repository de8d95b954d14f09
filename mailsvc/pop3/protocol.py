"""POP3 codec (pure, no I/O): command lines in, response bytes out.

* :func:`parse` — one command line (without CRLF) → :class:`Command`; :class:`BadCommand` for
  non-ASCII or control bytes, an empty or over-long keyword, too many or too long arguments;
* :func:`ok`, :func:`err` (with RFC 2449/3206 response codes), :func:`multiline`;
* :func:`message_lines` — a stored message as CRLF lines, byte-stuffed (a leading ``.`` doubled),
  whole (RETR) or its header and first ``n`` body lines (TOP), ending with ``.CRLF``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_LINE = 255  # RFC 2449 §4: commands up to 255 octets including CRLF
MAX_SASL_LINE = 8192  # SASL responses may be longer (RFC 5034 §4)
MAX_ARG = 40
_KEYWORD = re.compile(rb"[A-Za-z]{3,4}")


class BadCommand(ValueError):
    pass


@dataclass(frozen=True)
class Command:
    name: str  # upper case
    args: tuple[str, ...]


def parse(line: bytes) -> Command:
    if len(line) > MAX_LINE - 2:
        raise BadCommand("line too long")
    if any(b < 0x20 or b > 0x7E for b in line):
        raise BadCommand("invalid characters")
    keyword, _, rest = line.partition(b" ")
    if not _KEYWORD.fullmatch(keyword):
        raise BadCommand("unknown command")
    name = keyword.decode().upper()
    if name == "PASS":  # the password may contain spaces (RFC 1939 leaves it open)
        return Command(name, (rest.decode(),) if rest else ())
    args = tuple(a.decode() for a in rest.split(b" ") if a) if rest else ()
    if len(args) > 2 or any(len(a) > MAX_ARG and name not in ("AUTH", "USER") for a in args):
        raise BadCommand("bad arguments")
    return Command(name, args)


def number(text: str) -> int | None:
    """A message number or line count argument (decimal, no sign), else ``None``."""
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        return None
    return int(text)


def ok(text: str = "") -> bytes:
    return f"+OK {text}\r\n".encode() if text else b"+OK\r\n"


def err(text: str, code: str | None = None) -> bytes:
    return f"-ERR [{code}] {text}\r\n".encode() if code else f"-ERR {text}\r\n".encode()


def multiline(first: bytes, lines: Iterable[str]) -> bytes:
    body = "".join(("." + line if line.startswith(".") else line) + "\r\n" for line in lines)
    return first + body.encode() + b".\r\n"


def _lines(raw: bytes) -> list[bytes]:
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def message_lines(raw: bytes, body_lines: int | None = None) -> bytes:
    """``raw`` as a multi-line POP3 response body (``body_lines``: TOP)."""
    if body_lines is None:
        text = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # every line end CRLF
        text = text.replace(b"\r\n.", b"\r\n..")
        if text.startswith(b"."):
            text = b"." + text
        if text and not text.endswith(b"\r\n"):
            text += b"\r\n"
        return text + b".\r\n"
    lines = _lines(raw)
    if body_lines is not None:
        try:
            blank = lines.index(b"")
        except ValueError:
            blank = len(lines)
        lines = lines[: blank + 1 + body_lines]
    out = bytearray()
    for line in lines:
        if line.startswith(b"."):
            out += b"."
        out += line
        out += b"\r\n"
    out += b".\r\n"
    return bytes(out)


def uidl(uid: int, uidvalidity: int) -> str:
    """Dovecot's default ``pop3_uidl_format`` (``%08Xu%08Xv``), so UIDLs survive a switch
    between Dovecot and mailsvc on the same Maildir."""
    return f"{uid:08x}{uidvalidity:08x}"  # Dovecot prints %X in lower case
