"""The IMAP session of a proxy-mode listener: our :class:`~mailsvc.imap.session.ImapSession`
until login (greeting, CAPABILITY, STARTTLS, ID, LOGIN/AUTHENTICATE, limits, idsvc's verdict),
then the upstream's.

After idsvc accepts the login the user is counted against the user+IP limit, the upstream
connection is logged in with the master credential and the tagged ``OK`` to the client's
LOGIN/AUTHENTICATE carries the *upstream's* capability list (as Dovecot's own proxy does). Our
command loop then ends and the two connections are spliced byte for byte; commands the client
pipelined after its login go upstream first. No upstream, or an upstream that refuses the
master login, is ``NO [UNAVAILABLE]`` (logged), never an authentication failure.
"""

from __future__ import annotations

import logging

from mailsvc.access import LoginResult, MailAccess, Result
from mailsvc.imap.session import ImapOptions, ImapSession, No, State
from mailsvc.proxy.handover import Refused, log_in_upstream, serve_then_splice
from mailsvc.proxy.upstream import Connector, Upstream
from mailsvc.stream import Stream

log = logging.getLogger("mailsvc.proxy")


class ProxyImapSession(ImapSession):
    def __init__(
        self, stream: Stream, access: MailAccess, options: ImapOptions, connector: Connector
    ) -> None:
        super().__init__(stream, access, options)
        self.connector = connector
        self.upstream: Upstream | None = None
        self.proxied: str | None = None  # the user counted against the user+IP limit

    async def run(self) -> None:
        # our own command loop ends once logged out, or logged in upstream
        await serve_then_splice("imap", self, super().run, self.options.timeout)

    async def finish_login(self, result: LoginResult) -> str:
        if result.result is Result.UNAVAILABLE:
            raise No("Temporary authentication failure, try again later", "UNAVAILABLE")
        if result.result is Result.NO_MECHANISM:
            raise No("Unsupported authentication mechanism")
        if result.result is not Result.OK or result.user is None:
            await self.count_bad()
            raise No("Authentication failed.", "AUTHENTICATIONFAILED")
        upstream = await log_in_upstream("imap", self, result.user, self.connector.imap)
        if upstream is Refused.LIMIT:
            raise No("Maximum number of connections from user+IP exceeded", "UNAVAILABLE")
        if upstream is Refused.UNAVAILABLE:
            raise No("Temporary failure, try again later", "UNAVAILABLE")
        self.state = State.LOGOUT  # our command loop ends here; run() splices
        return f"[CAPABILITY {upstream.reply}] Logged in"
