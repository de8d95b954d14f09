"""The Dovecot dict proxy listener: Dovecot 2.3 ``passdb``/``userdb`` ``driver = dict`` (see
``protocol.py``) answered from :class:`idsvc.lookups.MailLookups`.

Keys (Dovecot prefixes ``shared/`` to the configured ``password_key`` / ``user_key``):

=====================================  ===========================================================
``shared/passdb/<user>``               ``{"user", "password"}`` (``{SCHEME}`` hash); ``N`` for
                                       a disabled account or domain (Dovecot's ``nologin`` would
                                       be ignored by SASL clients such as Postfix)
``shared/passdb/<service>/<user>``     the same, and ``N`` when the service is not enabled
``shared/userdb/<user>``               ``{"user", "home", "mail", "uid", "gid"[, "quota_rule"]}``
anything else (``priv/…`` too)         ``N`` (not found)
=====================================  ===========================================================

Iterating ``shared/userdb/`` (``doveadm user -A``, ``doveadm -A``) streams one row per account,
``iterate_page`` accounts per directory call, waiting whenever Dovecot does not read: never all
users in memory. A directory fault is ``F`` (Dovecot fails the lookup temporarily); an account
whose directory holds no hash (bind-only LDAP / AD) is ``F`` too, with a log line: the dict
form must hand Dovecot a hash, so it cannot serve such directories — use the Lua/HTTP adapter.
Dovecot verifies the hash itself here, so idsvc's penalties, cache and audit do not apply.
"""

from __future__ import annotations

import json
import logging

from idsvc.config import DovecotDictSettings
from idsvc.errors import TemporaryFailure
from idsvc.lookups import MailLookups
from idsvc.wire.dovecot_dict import protocol as proto
from idsvc.wire.serving import LookupServer, Reply

log = logging.getLogger(__name__)

PASSDB = "shared/passdb/"
USERDB = "shared/userdb/"
READ_ONLY = "idsvc's dict is read-only"


def _json(fields: dict[str, str]) -> str:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


class DictSession:
    def __init__(self, lookups: MailLookups, settings: DovecotDictSettings) -> None:
        self._lookups = lookups
        self._page = settings.iterate_page
        self._greeted = False

    async def handle(self, line: bytes, reply: Reply) -> bool:
        try:
            command = proto.parse_line(line, greeted=self._greeted)
        except proto.ProtocolError as exc:
            log.warning("dovecot-dict: %s: protocol error: %s; disconnecting", reply.peer, exc)
            return False
        match command:
            case proto.Hello():
                self._greeted = True
                log.debug("dovecot-dict: %s: dict %r, protocol %d.%d", reply.peer, command.name,
                          command.major, command.minor)  # fmt: skip
            case proto.Lookup(key=key):
                reply.write(await self._lookup(key))
            case proto.Iterate():
                await self._iterate(command, reply)
            case proto.Commit(txid=txid):
                reply.write(proto.commit_failed(txid, READ_ONLY))
            case proto.Ignored():
                pass
        return True

    async def _lookup(self, key: str) -> bytes:
        try:
            if key.startswith(USERDB):
                user = await self._lookups.userdb(key[len(USERDB) :])
                return proto.not_found() if user is None else proto.found(_json(user.fields()))
            if key.startswith(PASSDB):
                return await self._passdb(key[len(PASSDB) :])
        except TemporaryFailure as exc:
            log.warning("dovecot-dict: lookup failed temporarily: %s", exc)
            return proto.failure("temporary directory failure")
        return proto.not_found()

    async def _passdb(self, rest: str) -> bytes:
        service, slash, user = rest.partition("/")
        if not slash:
            service, user = "", rest
        record = await self._lookups.passdb(user, service or None)
        if record is None:
            return proto.not_found()
        if record.password is None:
            log.error(
                "dovecot-dict: %s has no password hash in the directory (bind-only); the dict "
                "passdb cannot serve it: use the Lua/HTTP adapter",
                record.user,
            )
            return proto.failure("no password hash available")
        if record.nologin is not None:
            # not "nologin": only Dovecot's login processes honour it, and SASL clients such as
            # Postfix smtpd would let the account in. Unknown is the answer that fails closed.
            log.debug("dovecot-dict: %s may not log in: %s", record.user, record.nologin)
            return proto.not_found()
        return proto.found(_json({"user": record.user, "password": record.password}))

    async def _iterate(self, command: proto.Iterate, reply: Reply) -> None:
        if command.path != USERDB or command.flags & proto.ITERATE_EXACT_KEY:
            reply.write(proto.end_of_rows())  # nothing else can be listed
            return
        with_values = not command.flags & proto.ITERATE_NO_VALUE
        remaining = command.max_rows or -1
        cursor: str | None = None
        try:
            while remaining != 0:
                page = await self._lookups.list_users(cursor, self._page)
                for address in page.items:
                    # only users a userdb lookup finds (not those of a disabled domain, nor one
                    # deleted meanwhile), so iteration and lookup agree
                    user = await self._lookups.userdb(address)
                    if user is None:
                        continue
                    value = _json(user.fields()) if with_values else ""
                    reply.write(proto.row(USERDB + address, value))
                    remaining -= 1
                    if remaining == 0:
                        break
                await reply.drain()
                cursor = page.next_cursor
                if cursor is None:
                    break
        except TemporaryFailure as exc:
            log.warning("dovecot-dict: iteration failed temporarily: %s", exc)
            reply.write(proto.failure("temporary directory failure"))
            return
        reply.write(proto.end_of_rows())


class DovecotDictServer(LookupServer[bytes]):
    def __init__(self, settings: DovecotDictSettings, lookups: MailLookups) -> None:
        super().__init__(
            "dovecot-dict",
            settings,
            socket=settings.socket,
            decoder_factory=proto.decoder,
            session_factory=lambda: DictSession(lookups, settings),
        )
