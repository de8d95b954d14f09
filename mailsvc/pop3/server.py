"""The POP3 listener: a :class:`~mailsvc.listener.LineListener` running one
:class:`~mailsvc.pop3.session.Pop3Session` per connection."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from mailsvc.access import MailAccess
from mailsvc.config import ListenerSettings
from mailsvc.listener import LineListener
from mailsvc.pop3.session import Pop3Options, Pop3Session
from mailsvc.smtp.session import Limits
from mailsvc.stream import Stream


def pop3_listener(
    name: str,
    settings: ListenerSettings,
    access: MailAccess,
    options: Pop3Options,
    *,
    limits: Limits,
    tls: ssl.SSLContext | None,
    implicit_tls: bool = False,
    session: Callable[[Stream, MailAccess, Pop3Options], Pop3Session] = Pop3Session,
) -> LineListener:
    """``session`` is what runs per connection (a proxy-mode listener passes its subclass)."""

    async def run(stream: Stream) -> None:
        await session(stream, access, options).run()

    return LineListener(
        name, settings, run, limits=limits, refusal=b"-ERR [SYS/TEMP] Too many connections\r\n",
        timeout=options.timeout, tls=tls, implicit_tls=implicit_tls,
    )  # fmt: skip
