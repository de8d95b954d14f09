"""The POP3 session of a proxy-mode listener: our :class:`~mailsvc.pop3.session.Pop3Session`
in the AUTHORIZATION state (greeting, CAPA, STLS, USER/PASS, AUTH, limits, idsvc's verdict),
then the upstream's.

After idsvc accepts the login the user is counted against the user+IP limit, the upstream
connection is logged in with the master credential, the client gets the upstream's ``+OK``
text, and the two connections are spliced byte for byte. No upstream, or an upstream that
refuses the master login, is ``-ERR [SYS/TEMP]`` (logged), never ``[AUTH]``.
"""

from __future__ import annotations

import logging

from mailsvc.access import LoginResult, MailAccess, Result
from mailsvc.pop3 import protocol as p
from mailsvc.pop3.session import Pop3Options, Pop3Session, State
from mailsvc.proxy.handover import Refused, log_in_upstream, serve_then_splice
from mailsvc.proxy.upstream import Connector, Upstream
from mailsvc.stream import Stream

log = logging.getLogger("mailsvc.proxy")


class ProxyPop3Session(Pop3Session):
    def __init__(
        self, stream: Stream, access: MailAccess, options: Pop3Options, connector: Connector
    ) -> None:
        super().__init__(stream, access, options)
        self.connector = connector
        self.upstream: Upstream | None = None
        self.proxied: str | None = None  # the user counted against the user+IP limit

    async def run(self) -> None:
        # our own command loop ends after QUIT, or once logged in upstream
        await serve_then_splice("pop3", self, super().run, self.options.timeout)

    async def finish_login(self, result: LoginResult) -> None:
        if result.result is Result.UNAVAILABLE:
            await self.send(p.err("Temporary authentication failure, try again later", "SYS/TEMP"))
            return
        if result.result is not Result.OK or result.user is None:
            await self.bad_command_auth()
            return
        upstream = await log_in_upstream("pop3", self, result.user, self.connector.pop3)
        if upstream is Refused.LIMIT:
            await self.send(p.err("Maximum number of connections from user+IP exceeded",
                                  "SYS/TEMP"))  # fmt: skip
            return
        if upstream is Refused.UNAVAILABLE:
            await self.send(p.err("Temporary failure, try again later", "SYS/TEMP"))
            return
        await self.send(p.ok(upstream.reply))
        self.state = State.DONE  # our command loop ends here; run() splices
