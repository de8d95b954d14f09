"""Netstrings (``<length>:<bytes>,``), the framing of Postfix socketmap. Pure, no I/O."""

from __future__ import annotations

MAX_DIGITS = 10


class NetstringError(ValueError):
    """Malformed framing: the connection carrying it cannot be trusted any further."""


def encode(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def decode_one(data: bytes, max_length: int) -> tuple[bytes, bytes] | None:
    """Split one netstring off the front of ``data``: ``(payload, rest)``, or ``None`` when more
    bytes are needed. Raises :class:`NetstringError` for malformed or over-long input."""
    colon = data.find(b":", 0, MAX_DIGITS + 1)
    if colon < 0:
        if len(data) > MAX_DIGITS or (data and not data.isdigit()):
            raise NetstringError("bad netstring length")
        return None
    digits = data[:colon]
    if not digits.isdigit() or (len(digits) > 1 and digits.startswith(b"0")):
        raise NetstringError("bad netstring length")
    length = int(digits)
    if length > max_length:
        raise NetstringError(f"netstring longer than {max_length} bytes")
    end = colon + 1 + length
    if len(data) <= end:
        return None
    if data[end : end + 1] != b",":
        raise NetstringError("netstring not terminated by ','")
    return data[colon + 1 : end], data[end + 1 :]
