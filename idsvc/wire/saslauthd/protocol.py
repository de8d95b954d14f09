"""Pure codec for the Cyrus saslauthd "mux" protocol (protocols.md §1); no I/O, no awaits.

Wire format: a request is 4 or 5 *counted strings* (u16 big-endian length, then that many bytes,
no NUL terminator): login, password, service, realm and, from clients built from cyrus-sasl
master only, ``client_addr`` as ``ip;port``. The reply is one counted string starting with ``OK``
(success) or ``NO <reason>`` (bad credentials).

What it does: :class:`RequestDecoder` takes bytes in any chunking and splits complete fields as
they arrive, so the server can tell "4 fields done, maybe a 5th is coming" from "still inside a
field". :func:`encode_reply` / :func:`decode_reply` and :func:`encode_request` build and read the
other directions (used by tests, the load client and the benchmark).

What it does not do: decide anything about credentials, wait for the optional fifth field (the
server owns that timing), or join ``login@realm`` (the auth core does, per ``auth.realm_join``).

How it fails: :class:`SaslauthdProtocolError` (and nothing else) for a field longer than
:data:`MAX_FIELD` bytes (256, saslauthd's ``MAX_REQ_LEN``; raised as soon as the length prefix is
seen, before its bytes arrive), a NUL byte in a field, or text that is not UTF-8. The server
answers those with ``NO``. Bytes after a fifth field are counted and ignored, never buffered.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from idsvc.errors import InvalidInput

MAX_FIELD = 256  # bytes per field, as saslauthd's MAX_REQ_LEN
MIN_FIELDS = 4
MAX_FIELDS = 5
MAX_REPLY = 1023  # libsasl truncates longer replies
FIELD_NAMES = ("login", "password", "service", "realm", "client_addr")

_LEN = struct.Struct("!H")


class SaslauthdProtocolError(InvalidInput):
    """The request bytes break the saslauthd framing or limits; the message names the field."""


@dataclass(frozen=True, slots=True)
class SaslauthdRequest:
    """One decoded request. ``client_addr`` is the raw 5th field (``ip;port``) or None."""

    login: str
    password: str
    service: str
    realm: str
    client_addr: str | None = None

    def __repr__(self) -> str:  # never show the password
        return (
            f"SaslauthdRequest(login={self.login!r}, password='***', service={self.service!r}, "
            f"realm={self.realm!r}, client_addr={self.client_addr!r})"
        )

    @property
    def remote_ip(self) -> str | None:
        """The IP of ``client_addr`` (``ip;port``; bare ``ip`` accepted) if it is a valid IP."""
        if not self.client_addr:
            return None
        ip, sep, port = self.client_addr.rpartition(";")
        if not sep:
            ip, port = self.client_addr, ""
        if port and not (port.isdigit() and len(port) <= 5):
            return None
        try:
            return str(ipaddress.ip_address(ip))
        except ValueError:
            return None


class RequestDecoder:
    """Incremental field splitter: :meth:`feed` bytes, read :attr:`fields` as they complete.

    At most :data:`MAX_FIELDS` fields are kept; later bytes only increase :attr:`ignored`.
    Memory is bounded: one partial field (≤ 2 + 256 bytes) plus five complete fields.
    """

    __slots__ = ("_buf", "_fields", "ignored")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._fields: list[bytes] = []
        self.ignored = 0

    @property
    def fields(self) -> int:
        """How many fields are complete."""
        return len(self._fields)

    @property
    def partial(self) -> bool:
        """True while bytes of an incomplete field are buffered."""
        return bool(self._buf)

    def feed(self, data: bytes) -> None:
        """Consume ``data``; raise SaslauthdProtocolError on an over-long field length."""
        if len(self._fields) >= MAX_FIELDS:
            self.ignored += len(data)
            return
        self._buf += data
        while len(self._fields) < MAX_FIELDS and len(self._buf) >= _LEN.size:
            (length,) = _LEN.unpack_from(self._buf)
            if length > MAX_FIELD:
                name = FIELD_NAMES[len(self._fields)]
                self._buf.clear()
                raise SaslauthdProtocolError(f"{name} field longer than {MAX_FIELD} bytes")
            end = _LEN.size + length
            if len(self._buf) < end:
                break
            self._fields.append(bytes(self._buf[_LEN.size : end]))
            del self._buf[:end]
        if len(self._fields) >= MAX_FIELDS and self._buf:
            self.ignored += len(self._buf)
            self._buf.clear()

    def request(self) -> SaslauthdRequest:
        """Build the request from the complete fields (4, or 5 when the 5th has arrived)."""
        if len(self._fields) < MIN_FIELDS:
            raise SaslauthdProtocolError(
                f"truncated request: {len(self._fields)} of {MIN_FIELDS} fields"
            )
        text = [_text(i, raw) for i, raw in enumerate(self._fields)]
        return SaslauthdRequest(
            login=text[0],
            password=text[1],
            service=text[2],
            realm=text[3],
            client_addr=(text[4] or None) if len(text) > MIN_FIELDS else None,
        )


def _text(index: int, raw: bytes) -> str:
    name = FIELD_NAMES[index]
    if b"\0" in raw:
        raise SaslauthdProtocolError(f"{name} field contains NUL")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslauthdProtocolError(f"{name} field is not UTF-8") from None


def decode_request(data: bytes) -> SaslauthdRequest:
    """Decode a complete request held in one buffer (4 or 5 fields)."""
    decoder = RequestDecoder()
    decoder.feed(data)
    if decoder.partial:
        raise SaslauthdProtocolError("truncated field")
    return decoder.request()


def _counted(raw: bytes, what: str, limit: int) -> bytes:
    if len(raw) > limit:
        raise SaslauthdProtocolError(f"{what} longer than {limit} bytes")
    return _LEN.pack(len(raw)) + raw


def encode_request(request: SaslauthdRequest) -> bytes:
    """The bytes a libsasl client sends for ``request`` (5 fields when ``client_addr`` is set)."""
    values = [request.login, request.password, request.service, request.realm]
    if request.client_addr is not None:
        values.append(request.client_addr)
    out = bytearray()
    for name, value in zip(FIELD_NAMES, values, strict=False):
        raw = value.encode("utf-8")
        if b"\0" in raw:
            raise SaslauthdProtocolError(f"{name} field contains NUL")
        out += _counted(raw, f"{name} field", MAX_FIELD)
    return bytes(out)


def encode_reply(text: str) -> bytes:
    """One counted string; ``text`` is ``OK`` or ``NO <reason>`` (≤ 1023 bytes, ASCII)."""
    if not text.startswith(("OK", "NO")):
        raise ValueError("a saslauthd reply starts with OK or NO")
    return _counted(text.encode("ascii"), "reply", MAX_REPLY)


def decode_reply(data: bytes) -> tuple[str, int] | None:
    """Decode a reply from the front of ``data``: (text, bytes used), or None if incomplete.

    Raises SaslauthdProtocolError for a length above 1023 (a client refuses it, as libsasl does).
    """
    if len(data) < _LEN.size:
        return None
    (length,) = _LEN.unpack_from(data)
    if length > MAX_REPLY:
        raise SaslauthdProtocolError(f"reply longer than {MAX_REPLY} bytes")
    end = _LEN.size + length
    if len(data) < end:
        return None
    return data[_LEN.size : end].decode("utf-8", errors="replace"), end


def reply_is_ok(text: str) -> bool:
    """libsasl's rule: a reply is success iff it starts with ``OK``."""
    return text.startswith("OK")
