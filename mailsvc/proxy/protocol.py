"""The upstream side of proxy mode as a pure codec (no I/O): the commands mailsvc sends to an
upstream IMAP/POP3 server to log a user in with a master credential, and the reading of the
upstream's answers during that handshake.

Commands are returned as *segments*: the first is sent at once, each further one only after the
upstream's ``+`` continuation (an IMAP synchronising literal, a SASL response). Nothing here
accepts a CR, LF or NUL inside a POP3 argument; IMAP strings that are not printable ASCII go as
literals, so any user name or password is carried exactly.

Reading: :func:`parse_imap` splits one response line (CRLF already removed) into tag, status,
response code and text; :func:`capabilities` finds a capability list in an untagged
``CAPABILITY`` response or a ``[CAPABILITY …]`` code; :func:`parse_pop3` reads ``+OK``/``-ERR``
lines. Anything else raises :class:`UpstreamProtocolError` — a temporary failure, never
mistaken for a verdict on the user's password.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

MAX_LINE = 8192  # the longest handshake line accepted from the upstream
_STATUS = ("OK", "NO", "BAD", "BYE", "PREAUTH")
_CODE = re.compile(r"\[([^\]]*)\]\s?(.*)", re.DOTALL)
_ATOM_CAP = re.compile(r"[!#$&'+,\-./0-9:;<=>?@A-Z^_`a-z|~]+")


class UpstreamProtocolError(ValueError):
    """The upstream said something this codec cannot read."""


@dataclass(frozen=True)
class ImapResponse:
    tag: str  # "*" untagged, "+" continuation, else the command tag
    status: str | None  # OK/NO/BAD/BYE/PREAUTH, None for data responses and continuations
    code: str | None  # the bracketed response code without brackets
    text: str


def _checked(line: bytes) -> str:
    if len(line) > MAX_LINE:
        raise UpstreamProtocolError("response line too long")
    if any(b in (0, 0x0A, 0x0D) for b in line):
        raise UpstreamProtocolError("control characters in a response line")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UpstreamProtocolError("response line is not UTF-8") from exc


def parse_imap(line: bytes) -> ImapResponse:
    """One upstream IMAP response line without its CRLF."""
    text = _checked(line)
    if text == "+" or text.startswith("+ "):
        return ImapResponse("+", None, None, text[2:])
    tag, sep, rest = text.partition(" ")
    if not sep or not tag or not rest:
        raise UpstreamProtocolError("malformed response line")
    word, _, tail = rest.partition(" ")
    status = word.upper()
    if status not in _STATUS:
        if tag != "*":
            raise UpstreamProtocolError("tagged response without a status")
        return ImapResponse("*", None, None, rest)
    code = None
    found = _CODE.fullmatch(tail)
    if found is not None:
        code, tail = found.group(1), found.group(2)
    return ImapResponse(tag, status, code, tail)


def capabilities(response: ImapResponse) -> list[str] | None:
    """The capability list carried by ``response``, if it carries one."""
    if response.code is not None and response.code.upper().startswith("CAPABILITY "):
        words = response.code.split(" ")[1:]
    elif response.status is None and response.tag == "*" and \
            response.text.upper().startswith("CAPABILITY "):  # fmt: skip
        words = response.text.split(" ")[1:]
    else:
        return None
    caps = [w for w in words if w]
    if not caps or not all(_ATOM_CAP.fullmatch(w) for w in caps):
        raise UpstreamProtocolError("malformed capability list")
    return caps


def imap_string(value: str) -> tuple[bytes, bytes | None]:
    """``value`` as an IMAP astring argument: ``(text, None)`` for a quoted string, or
    ``(announcement, data)`` for a synchronising literal sent after the continuation."""
    raw = value.encode("utf-8")
    if all(0x20 <= b < 0x7F for b in raw):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"', None
    return b"{%d}" % len(raw), raw


def imap_login(tag: str, user: str, password: str) -> list[bytes]:
    """``tag LOGIN user password`` as segments (literals for strings that cannot be quoted)."""
    segments: list[bytes] = []
    current = tag.encode() + b" LOGIN"
    for value in (user, password):
        text, data = imap_string(value)
        current += b" " + text
        if data is not None:
            segments.append(current + b"\r\n")
            current = data
    segments.append(current + b"\r\n")
    return segments


def sasl_plain(authzid: str, authcid: str, password: str) -> bytes:
    """The base64 SASL PLAIN message (RFC 4616): authorise as ``authzid``, authenticate as
    ``authcid`` with ``password``."""
    for value in (authzid, authcid, password):
        if "\0" in value:
            raise ValueError("NUL in a SASL PLAIN field")
    message = f"{authzid}\0{authcid}\0{password}".encode()
    return base64.b64encode(message)


def imap_authenticate_plain(tag: str, authzid: str, authcid: str, password: str) -> list[bytes]:
    """``tag AUTHENTICATE PLAIN`` then the response after the ``+`` continuation."""
    return [tag.encode() + b" AUTHENTICATE PLAIN\r\n",
            sasl_plain(authzid, authcid, password) + b"\r\n"]  # fmt: skip


def imap_id(tag: str, fields: dict[str, str]) -> bytes:
    """``tag ID (...)`` (RFC 2971) with the given fields, quoted."""
    parts: list[bytes] = []
    for key, value in fields.items():
        for item in (key, value):
            text, data = imap_string(item)
            if data is not None:
                raise ValueError(f"ID field not quotable: {item!r}")
            parts.append(text)
    return tag.encode() + b" ID (" + b" ".join(parts) + b")\r\n"


def _pop3_arg(value: str) -> bytes:
    raw = value.encode("utf-8")
    if not raw or any(b <= 0x20 or b == 0x7F for b in raw):
        raise ValueError("a POP3 argument must be non-empty, without spaces or controls")
    return raw


def pop3_user_pass(user: str, password: str) -> list[bytes]:
    """``USER``/``PASS`` lines (each sent after the ``+OK`` to the one before)."""
    secret = password.encode("utf-8")
    if not secret or any(b in (0, 0x0A, 0x0D) for b in secret):
        raise ValueError("a POP3 password must be non-empty, without CR, LF or NUL")
    return [b"USER " + _pop3_arg(user) + b"\r\n", b"PASS " + secret + b"\r\n"]


def pop3_auth_plain(authzid: str, authcid: str, password: str) -> bytes:
    """``AUTH PLAIN`` with the initial response (RFC 5034)."""
    return b"AUTH PLAIN " + sasl_plain(authzid, authcid, password) + b"\r\n"


def pop3_xclient(addr: str) -> bytes:
    """Dovecot's ``XCLIENT ADDR=…`` (honoured from ``login_trusted_networks`` only)."""
    return b"XCLIENT ADDR=" + _pop3_arg(addr) + b"\r\n"


@dataclass(frozen=True)
class Pop3Reply:
    ok: bool
    text: str


def parse_pop3(line: bytes) -> Pop3Reply:
    """An upstream POP3 status line without its CRLF."""
    text = _checked(line)
    if text == "+OK" or text.startswith("+OK "):
        return Pop3Reply(True, text[4:])
    if text == "-ERR" or text.startswith("-ERR "):
        return Pop3Reply(False, text[5:])
    raise UpstreamProtocolError("expected +OK or -ERR")
