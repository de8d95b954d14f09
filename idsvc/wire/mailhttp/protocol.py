"""HTTP/1.0 and 1.1 request heads and responses, as far as local mail daemons need them (pure).

What it does: :func:`parse_head` turns the bytes of one request head (request line and header
lines, without the blank line that ends it) into an :class:`HttpRequest`; :func:`render_response`
builds the bytes of a response. Only what nginx ``auth_http``, Dovecot's auth-policy client and
our Lua script send is accepted: origin-form targets, ``Content-Length`` bodies, no
``Transfer-Encoding``, no obsolete line folding, no duplicate header names (a forged second
``Auth-User`` must not win or lose by position), ASCII request lines and latin-1 header values
without control characters.

What it does not do: read sockets, bound sizes of what is still unread (the server caps the head
at ``MAX_HEAD`` bytes before calling this) or decide anything about the request.

How it fails: :class:`HttpError` carrying the status to answer (400, 414, 431, 501, 505) and a
short reason; nothing else is raised for any input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

MAX_HEAD = 16 * 1024  # request line and headers
MAX_TARGET = 2048
MAX_HEADERS = 64

_METHOD = re.compile(rb"[A-Z]{1,16}")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """The request cannot be served; answer ``status`` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    query: Mapping[str, str]
    version: str  # "HTTP/1.0" or "HTTP/1.1"
    headers: Mapping[str, str]  # lower-cased names, one value each
    content_length: int = 0
    keep_alive: bool = False
    body: bytes = field(default=b"", repr=False)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def parse_head(head: bytes) -> HttpRequest:
    """Parse one request head (CRLF or LF line ends, no trailing blank line)."""
    if len(head) > MAX_HEAD:
        raise HttpError(431, "request head too large")
    lines = head.split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    method, path, query, version = _request_line(lines[0])
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "too many header fields")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, value = _header_line(line)
        if name in headers:
            raise HttpError(400, f"duplicate header field {name}")
        headers[name] = value
    if "transfer-encoding" in headers:
        raise HttpError(501, "transfer codings are not supported")
    length = 0
    raw_length = headers.get("content-length")
    if raw_length is not None:
        if not raw_length.isascii() or not raw_length.isdigit() or len(raw_length) > 9:
            raise HttpError(400, "invalid Content-Length")
        length = int(raw_length)
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(400, "HTTP/1.1 request without Host")
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    return HttpRequest(method, path, query, version, headers, length, keep)


def _request_line(line: bytes) -> tuple[str, str, Mapping[str, str], str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        if re.fullmatch(rb"HTTP/\d\.\d", version):
            raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are served")
        raise HttpError(400, "malformed request line")
    if len(target) > MAX_TARGET:
        raise HttpError(414, "request target too long")
    if not _TARGET.fullmatch(target):
        raise HttpError(400, "request target must be an absolute path")
    path, _, raw_query = target.decode("ascii").partition("?")
    query: dict[str, str] = {}
    try:
        pairs = parse_qsl(
            raw_query, keep_blank_values=True, strict_parsing=False, max_num_fields=16
        )
    except ValueError:
        raise HttpError(400, "too many query parameters") from None
    for key, value in pairs:
        if key in query:
            raise HttpError(400, f"duplicate query parameter {key}")
        query[key] = value
    return method.decode("ascii"), path, query, version.decode("ascii")


def _header_line(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise HttpError(400, "obsolete header line folding")
    name, sep, value = line.partition(b":")
    if not sep or not _TOKEN.fullmatch(name):
        raise HttpError(400, "malformed header field")
    value = value.strip(b" \t")
    if _BAD_VALUE.search(value):
        raise HttpError(400, "control character in a header field")
    return name.decode("ascii").lower(), value.decode("latin-1")


def render_response(
    status: int,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    keep_alive: bool = False,
    version: str = "HTTP/1.1",
) -> bytes:
    """The bytes of a response; header names and values must be free of CR and LF."""
    lines = [f"{version} {status} {REASONS.get(status, 'Unknown')}"]
    for name, value in headers:
        if any(c in name or c in value for c in "\r\n\0"):
            raise ValueError(f"line break in response header {name!r}")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        lines.append("Connection: close")
    elif version == "HTTP/1.0":
        lines.append("Connection: keep-alive")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body
