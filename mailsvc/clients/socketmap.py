"""Postfix socketmap client (protocols.md §4): ``<map> <key>`` → ``OK <data>`` / ``NOTFOUND``.

The codec (:func:`encode_request`, :func:`parse_reply`) is pure; :class:`SocketmapClient` sends
one request at a time per connection over a bounded :class:`~mailsvc.clients.pool.Pool` of
persistent connections. Definite answers (found, not found) are kept ``cache_ttl`` seconds in a
bounded :class:`~mailsvc.clients.cache.LookupCache` (0 turns it off); failures never are.

Replies: ``OK data`` → the data; ``NOTFOUND`` → ``None``; ``TEMP``/``TIMEOUT``/``PERM``, anything
else, a malformed frame, a timeout or a lost connection → :class:`Unavailable` (a lookup that gave
no definite answer is never taken as "not found": that would bounce real mail).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailsvc.clients import netstring
from mailsvc.clients.cache import MISS, LookupCache
from mailsvc.clients.errors import Unavailable
from mailsvc.clients.pool import Conn, Pool
from mailsvc.clients.target import Target

MAX_QUERY = 10000  # socketmap_max_query_size
MAX_REPLY = 100000  # socketmap_max_reply_size


class Status(enum.Enum):
    OK = "OK"
    NOTFOUND = "NOTFOUND"
    TEMP = "TEMP"
    TIMEOUT = "TIMEOUT"
    PERM = "PERM"


@dataclass(frozen=True)
class Reply:
    status: Status
    data: str


class BadRequest(ValueError):
    """A map name or key that cannot be sent (space in the map name, control bytes, too long)."""


def encode_request(mapname: str, key: str) -> bytes:
    if not mapname or any(c in mapname for c in " \t\r\n\0,:"):
        raise BadRequest("bad map name")
    if not key or any(ord(c) < 0x20 or c == "\x7f" for c in key):
        raise BadRequest("bad key")
    payload = f"{mapname} {key}".encode()
    if len(payload) > MAX_QUERY:
        raise BadRequest("query too long")
    return netstring.encode(payload)


def parse_reply(payload: bytes) -> Reply:
    """One reply payload; :class:`Unavailable` when it is none of the five statuses."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unavailable("socketmap reply is not UTF-8") from exc
    word, _, data = text.partition(" ")
    try:
        status = Status(word)
    except ValueError:
        raise Unavailable("malformed socketmap reply") from None
    if status is Status.OK and not data:
        raise Unavailable("socketmap OK without data")
    return Reply(status, data)


async def _read_reply(conn: Conn) -> bytes:
    buffer = b""
    while True:
        try:
            found = netstring.decode_one(buffer, MAX_REPLY)
        except netstring.NetstringError as exc:
            raise Unavailable(f"socketmap: {exc}") from exc
        if found is not None:
            payload, rest = found
            if rest:
                raise Unavailable("socketmap: unsolicited data after the reply")
            return payload
        chunk = await conn.reader.read(65536)
        if not chunk:
            raise EOFError("socketmap connection closed")
        buffer += chunk


class SocketmapClient:
    """Lookups over persistent connections to one socketmap server."""

    def __init__(
        self,
        target: str | Target,
        *,
        size: int = 8,
        timeout: float = 10.0,
        cache_ttl: float = 0.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target if isinstance(target, Target) else Target.parse(target)
        self._pool = Pool(self.target, size=size, timeout=timeout)
        self.cache = LookupCache(ttl=cache_ttl, max_entries=cache_size, clock=clock)

    async def query(self, mapname: str, key: str) -> Reply:
        request = encode_request(mapname, key)

        async def step(conn: Conn) -> Reply:
            conn.writer.write(request)
            await conn.writer.drain()
            return parse_reply(await _read_reply(conn))

        return await self._pool.run(step)

    async def lookup(self, mapname: str, key: str) -> str | None:
        """The data for ``key`` in ``mapname``; ``None`` when not found; :class:`Unavailable`
        for every other answer."""
        cached = self.cache.get(mapname, key)
        if cached is not MISS:
            return cached if isinstance(cached, str) else None
        reply = await self.query(mapname, key)
        if reply.status is Status.OK:
            self.cache.put(mapname, key, reply.data)
            return reply.data
        if reply.status is Status.NOTFOUND:
            self.cache.put(mapname, key, None)
            return None
        raise Unavailable(f"socketmap {mapname}: {reply.status.value} {reply.data}".rstrip())

    async def close(self) -> None:
        await self._pool.close()
