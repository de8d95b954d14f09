"""The Postfix policy delegation protocol (``SMTPD_POLICY_README``), pure: no I/O.

A request is ``name=value`` lines, each ended by LF, terminated by an empty line; a connection
carries any number of requests. The reply is one ``action=<access(5) action>`` line and an empty
line. Names are printable ASCII without ``=``; unknown names are kept (and ignored by the rules);
when a name repeats, the first value counts. Values are decoded as UTF-8 (invalid bytes become
U+FFFD, so they can never match an address).

Limits: a line is at most :data:`MAX_LINE` bytes and a request at most ``max_attributes`` lines;
beyond either, or on a line without ``=`` or with an empty name, :class:`FramingError` is raised
and the connection closes (Postfix then applies ``smtpd_policy_service_default_action``).
"""

from __future__ import annotations

from idsvc.wire.framing import FramingError, LineDecoder

MAX_LINE = 8192
DEFAULT_MAX_ATTRIBUTES = 100
MAX_ACTION = 512

Attributes = dict[str, str]


class PolicyDecoder:
    """Incremental decoder: complete requests as dicts, one at a time (``idsvc.wire.framing``)."""

    __slots__ = ("_attrs", "_count", "_lines", "_max")

    def __init__(self, max_attributes: int = DEFAULT_MAX_ATTRIBUTES) -> None:
        self._lines = LineDecoder(MAX_LINE)
        self._attrs: Attributes = {}
        self._count = 0
        self._max = max_attributes

    def feed(self, data: bytes) -> None:
        self._lines.feed(data)

    def next(self) -> Attributes | None:
        while (line := self._lines.next()) is not None:
            if not line:
                if not self._count:
                    raise FramingError("empty request")
                attrs, self._attrs, self._count = self._attrs, {}, 0
                return attrs
            self._count += 1
            if self._count > self._max:
                raise FramingError(f"more than {self._max} attributes in one request")
            name, eq, value = line.partition(b"=")
            if not eq or not name or not name.isascii() or not name.decode("ascii").isprintable():
                raise FramingError("malformed attribute line")
            self._attrs.setdefault(name.decode("ascii"), value.decode("utf-8", "replace"))
        return None

    @property
    def pending(self) -> bool:
        return self._count > 0 or self._lines.pending


def encode_request(attrs: Attributes) -> bytes:
    """A request as Postfix sends it (for tests and tools)."""
    return b"".join(f"{k}={v}\n".encode() for k, v in attrs.items()) + b"\n"


def reply(action: str) -> bytes:
    """``action=<action>`` and the empty line; control characters in the text become spaces."""
    clean = "".join(ch if ch.isprintable() else " " for ch in action)[:MAX_ACTION].strip()
    if not clean:
        raise ValueError("empty policy action")
    return b"action=" + clean.encode("utf-8") + b"\n\n"
