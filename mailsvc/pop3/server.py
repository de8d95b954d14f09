"""The POP3 listener: a :class:`~mailsvc.listener.LineListener` running one
:class:`~mailsvc.pop3.session.Pop3Session` per connection."""

from __future__ import annotations

import ssl

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
) -> LineListener:
    async def run(stream: Stream) -> None:
        await Pop3Session(stream, access, options).run()

    return LineListener(
        name, settings, run, limits=limits, refusal=b"-ERR [SYS/TEMP] Too many connections\r\n",
        timeout=options.timeout, tls=tls, implicit_tls=implicit_tls,
    )  # fmt: skip
