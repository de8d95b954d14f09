"""Pure incremental decoders shared by the line- and netstring-framed lookup protocols.

A decoder is fed whatever bytes arrive (:meth:`feed`) and hands out complete frames one at a time
(:meth:`next`), so the server can stop taking frames (and stop reading) while it is busy: the
bytes held are then at most one read plus one frame. ``pending`` tells whether a partial frame is
buffered (the server's request timeout runs while it is). Malformed or over-long input raises
:class:`FramingError` at once; the connection is then closed. No I/O here.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


class FramingError(Exception):
    """The peer broke the framing (the message is safe to log: it never echoes input)."""


class Decoder(Protocol[T_co]):
    """What the lookup servers need from a protocol's decoder."""

    def feed(self, data: bytes) -> None: ...

    def next(self) -> T_co | None: ...

    @property
    def pending(self) -> bool: ...


class LineDecoder:
    """LF-terminated lines (a CR before the LF is kept: callers decide), at most ``max_line``
    bytes each without the LF."""

    __slots__ = ("_buf", "_max", "_scan")

    def __init__(self, max_line: int) -> None:
        self._buf = bytearray()
        self._max = max_line
        self._scan = 0  # where the search for LF resumes (no rescans of a long partial line)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> bytes | None:
        end = self._buf.find(b"\n", self._scan)
        if end < 0:
            self._scan = len(self._buf)
            if len(self._buf) > self._max:
                raise FramingError(f"line longer than {self._max} bytes")
            return None
        if end > self._max:
            raise FramingError(f"line longer than {self._max} bytes")
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        self._scan = 0
        return line

    @property
    def pending(self) -> bool:
        return bool(self._buf)


class NetstringDecoder:
    """``<length>:<bytes>,`` frames (D. J. Bernstein's netstrings) of at most ``max_size`` bytes.

    The length must be plain decimal digits (no sign, no spaces); a length over ``max_size``, a
    missing ``:`` after enough digits for ``max_size``, or anything but ``,`` after the payload is
    a :class:`FramingError`.
    """

    __slots__ = ("_buf", "_digits", "_max")

    def __init__(self, max_size: int) -> None:
        self._buf = bytearray()
        self._max = max_size
        self._digits = len(str(max_size))

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> bytes | None:
        buf = self._buf
        if not buf:
            return None
        colon = buf.find(b":", 0, self._digits + 1)
        if colon < 0:
            head = bytes(buf[: self._digits + 1])
            if not head.isdigit() or len(head) > self._digits:
                raise FramingError("malformed netstring length")
            return None
        digits = bytes(buf[:colon])
        if not digits.isdigit():
            raise FramingError("malformed netstring length")
        size = int(digits)
        if size > self._max:
            raise FramingError(f"netstring longer than {self._max} bytes")
        end = colon + 1 + size
        if len(buf) <= end:
            return None
        if buf[end] != 0x2C:  # ","
            raise FramingError("netstring not terminated by ','")
        payload = bytes(buf[colon + 1 : end])
        del buf[: end + 1]
        return payload

    @property
    def pending(self) -> bool:
        return bool(self._buf)


def netstring(payload: bytes) -> bytes:
    """Encode one netstring."""
    return b"%d:%s," % (len(payload), payload)
