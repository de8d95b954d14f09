"""The tcp_table listener: ``get <key>`` → one lookup in the configured map
(:mod:`idsvc.wire.tables`) → ``200``/``500``/``400``. Loopback TCP only (tcp_table has no
authentication). A directory fault is ``400`` (Postfix retries); an alias expanding past
``mail.max_alias_results`` or a value over 4096 bytes is ``400`` with an error log line: the
protocol has no "configuration error" reply, and a truncated list must never be delivered.
"""

from __future__ import annotations

import logging

from idsvc.config import TcpTableSettings
from idsvc.errors import TemporaryFailure
from idsvc.lookups import ExpansionLimit, MailLookups
from idsvc.wire import tables
from idsvc.wire.serving import LookupServer, Reply
from idsvc.wire.tcp_table import protocol as proto

log = logging.getLogger(__name__)


class TcpTableSession:
    def __init__(self, lookups: MailLookups, table: str) -> None:
        self._lookups = lookups
        self._table = table

    async def handle(self, line: bytes, reply: Reply) -> bool:
        try:
            key = proto.parse_request(line)
        except proto.ProtocolError as exc:
            log.warning("tcp-table: %s: protocol error: %s; disconnecting", reply.peer, exc)
            return False
        reply.write(await self._answer(key))
        return True

    async def _answer(self, key: str | None) -> bytes:
        if key is None:
            return proto.not_found()
        try:
            value = await tables.lookup(self._lookups, self._table, key)
        except TemporaryFailure as exc:
            log.warning("tcp-table: %s lookup failed temporarily: %s", self._table, exc)
            return proto.temporary("directory temporarily unavailable")
        except ExpansionLimit as exc:
            log.error("tcp-table: %s: %s", self._table, exc)
            return proto.temporary("alias expansion too large")
        if value is None:
            return proto.not_found()
        answer = proto.found(value)
        if not answer.startswith(b"200 "):
            log.error("tcp-table: %s: value over %d bytes", self._table, proto.MAX_REPLY)
        return answer


class TcpTableServer(LookupServer[bytes]):
    def __init__(self, settings: TcpTableSettings, lookups: MailLookups) -> None:
        super().__init__(
            "tcp-table",
            settings,
            socket=None,
            decoder_factory=proto.decoder,
            session_factory=lambda: TcpTableSession(lookups, settings.map),
        )
