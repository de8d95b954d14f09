"""The Postfix socketmap protocol (``socketmap_table(5)``), pure: no I/O.

Framing: one netstring per request and per reply (:mod:`idsvc.wire.framing`); a connection
carries any number of requests, answered in order. A request is ``<map> <key>`` (one space); the
reply is one of::

    OK <value>        found
    NOTFOUND          not found (with the conventional trailing space)
    TEMP <reason>     a temporary problem: Postfix defers and retries
    PERM <reason>     a configuration problem (unknown map, expansion too large)

Limits: a request is at most :data:`MAX_QUERY` bytes (Postfix ``socketmap_max_query_size``); a
reply at most :data:`MAX_REPLY` bytes (``socketmap_max_reply_size``): a longer value is a PERM
reply, never a truncated list. A key that is not printable UTF-8 (NUL, CR, LF, other controls,
invalid bytes) can be no address: :func:`parse_request` hands it back as None, which the server
answers NOTFOUND. A payload with no space or an empty map name is malformed: PERM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from idsvc.wire.framing import NetstringDecoder, netstring

MAX_QUERY = 10_000
MAX_REPLY = 100_000
MAX_REASON = 200
_MAP_NAME = re.compile(rb"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class Request:
    table: str
    key: str | None  # None: not printable UTF-8 (answered NOTFOUND)


class MalformedRequest(ValueError):
    """The payload is not ``<map> <key>``."""


def decoder() -> NetstringDecoder:
    return NetstringDecoder(MAX_QUERY)


def parse_request(payload: bytes) -> Request:
    """Split a request payload; raises MalformedRequest when there is no ``<map> `` prefix."""
    table, space, raw = payload.partition(b" ")
    if not space or _MAP_NAME.fullmatch(table) is None:
        raise MalformedRequest("expected '<map> <key>'")
    try:
        key: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        key = None
    if key is not None and (not key or not key.isprintable()):
        key = None
    return Request(table.decode("ascii"), key)


def _reason(text: str) -> bytes:
    clean = "".join(ch if ch.isprintable() else "?" for ch in text)[:MAX_REASON]
    return clean.encode("utf-8", "replace")


def ok(value: str) -> bytes:
    payload = b"OK " + value.encode("utf-8")
    if len(payload) > MAX_REPLY:
        return perm("reply longer than socketmap_max_reply_size")
    return netstring(payload)


def notfound() -> bytes:
    return netstring(b"NOTFOUND ")


def temp(reason: str) -> bytes:
    return netstring(b"TEMP " + _reason(reason))


def perm(reason: str) -> bytes:
    return netstring(b"PERM " + _reason(reason))
