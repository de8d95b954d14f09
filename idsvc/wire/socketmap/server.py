"""The socketmap listener: netstrings in, one lookup each, netstrings out (see ``protocol.py``).

Replies by outcome: found → ``OK <value>``; not found or a key that is no address → ``NOTFOUND``;
a directory fault or timeout → ``TEMP`` (Postfix defers); an unknown map name, a malformed
request or an alias expanding past ``mail.max_alias_results`` → ``PERM`` (a configuration
problem, logged). A framing error (bad length, missing ``,``, over ``MAX_QUERY``) closes the
connection. Transport, limits and timeouts: :mod:`idsvc.wire.serving`.
"""

from __future__ import annotations

import logging

from idsvc.config import SocketmapSettings
from idsvc.errors import TemporaryFailure
from idsvc.lookups import ExpansionLimit, MailLookups
from idsvc.wire import tables
from idsvc.wire.serving import LookupServer, Reply
from idsvc.wire.socketmap import protocol as proto

log = logging.getLogger(__name__)


class SocketmapSession:
    def __init__(self, lookups: MailLookups) -> None:
        self._lookups = lookups

    async def handle(self, request: bytes, reply: Reply) -> bool:
        reply.write(await self.answer(request, reply.peer))
        return True

    async def answer(self, payload: bytes, peer: str) -> bytes:
        try:
            req = proto.parse_request(payload)
        except proto.MalformedRequest as exc:
            log.warning("socketmap: %s: %s", peer, exc)
            return proto.perm(str(exc))
        if req.table not in tables.MAPS:
            log.warning("socketmap: %s: unknown map %r", peer, req.table)
            return proto.perm("unknown map name")
        if req.key is None:
            return proto.notfound()
        try:
            value = await tables.lookup(self._lookups, req.table, req.key)
        except TemporaryFailure as exc:
            log.warning("socketmap: %s lookup failed temporarily: %s", req.table, exc)
            return proto.temp("directory temporarily unavailable")
        except ExpansionLimit as exc:
            log.error("socketmap: %s: %s", req.table, exc)
            return proto.perm(str(exc))
        return proto.notfound() if value is None else proto.ok(value)


class SocketmapServer(LookupServer[bytes]):
    def __init__(self, settings: SocketmapSettings, lookups: MailLookups) -> None:
        super().__init__(
            "socketmap",
            settings,
            socket=settings.socket,
            decoder_factory=proto.decoder,
            session_factory=lambda: SocketmapSession(lookups),
        )
