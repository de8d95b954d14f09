"""The IMAP listener: a :class:`~mailsvc.listener.LineListener` running one
:class:`~mailsvc.imap.session.ImapSession` per connection."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from mailsvc.access import MailAccess
from mailsvc.config import ListenerSettings
from mailsvc.imap.session import ImapOptions, ImapSession
from mailsvc.listener import LineListener
from mailsvc.smtp.session import Limits
from mailsvc.stream import Stream

__all__ = ["ImapOptions", "imap_listener"]


def imap_listener(
    name: str,
    settings: ListenerSettings,
    access: MailAccess,
    options: ImapOptions,
    *,
    limits: Limits,
    tls: ssl.SSLContext | None,
    implicit_tls: bool = False,
    session: Callable[[Stream, MailAccess, ImapOptions], ImapSession] = ImapSession,
) -> LineListener:
    """``session`` is what runs per connection (a proxy-mode listener passes its subclass)."""

    async def run(stream: Stream) -> None:
        await session(stream, access, options).run()

    return LineListener(
        name, settings, run, limits=limits, refusal=b"* BYE [UNAVAILABLE] Too many connections\r\n",
        timeout=options.preauth_timeout, tls=tls, implicit_tls=implicit_tls,
    )  # fmt: skip
