"""Proxy-mode POP3 and IMAP listeners: :class:`~mailsvc.listener.LineListener` running a
:class:`~mailsvc.proxy.pop3.ProxyPop3Session` / :class:`~mailsvc.proxy.imap.ProxyImapSession`
per connection, logging users in through :class:`ProxyAccess` (idsvc only: a proxied user has no
local mailbox, so neither socketmap nor the Maildir store is asked)."""

from __future__ import annotations

import ssl

from mailsvc.access import LoginResult, MailAccess, Result
from mailsvc.config import ListenerSettings
from mailsvc.imap.session import ImapOptions
from mailsvc.listener import LineListener
from mailsvc.pop3.session import Pop3Options
from mailsvc.proxy.imap import ProxyImapSession
from mailsvc.proxy.pop3 import ProxyPop3Session
from mailsvc.proxy.upstream import Connector
from mailsvc.smtp.session import Limits
from mailsvc.stream import Stream


class ProxyAccess(MailAccess):
    """Authentication through idsvc without opening a local account: ``ok`` carries the user
    idsvc authenticated (its canonical name) and no account."""

    async def open(self, user: str) -> LoginResult:
        return LoginResult(Result.OK, user)


def imap_proxy_listener(
    name: str,
    settings: ListenerSettings,
    access: ProxyAccess,
    options: ImapOptions,
    connector: Connector,
    *,
    limits: Limits,
    tls: ssl.SSLContext | None,
    implicit_tls: bool = False,
) -> LineListener:
    async def run(stream: Stream) -> None:
        await ProxyImapSession(stream, access, options, connector).run()

    return LineListener(
        name, settings, run, limits=limits, refusal=b"* BYE [UNAVAILABLE] Too many connections\r\n",
        timeout=options.preauth_timeout, tls=tls, implicit_tls=implicit_tls,
    )  # fmt: skip


def pop3_proxy_listener(
    name: str,
    settings: ListenerSettings,
    access: ProxyAccess,
    options: Pop3Options,
    connector: Connector,
    *,
    limits: Limits,
    tls: ssl.SSLContext | None,
    implicit_tls: bool = False,
) -> LineListener:
    async def run(stream: Stream) -> None:
        await ProxyPop3Session(stream, access, options, connector).run()

    return LineListener(
        name, settings, run, limits=limits, refusal=b"-ERR [SYS/TEMP] Too many connections\r\n",
        timeout=options.timeout, tls=tls, implicit_tls=implicit_tls,
    )  # fmt: skip
