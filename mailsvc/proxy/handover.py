"""What a proxy-mode session does around its own command loop, the same for IMAP and POP3: run
the loop until it ends (logout) or hands over (logged in upstream), then splice the client to
the upstream; in every case close the upstream and give back the user+IP slot the login took."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from mailsvc.access import MailAccess
from mailsvc.proxy.splice import splice
from mailsvc.proxy.upstream import Upstream
from mailsvc.stream import Stream

log = logging.getLogger("mailsvc.proxy")


class Proxied(Protocol):
    """A proxy session: ``upstream`` is set once logged in there, ``proxied`` once the user
    holds a user+IP slot."""

    stream: Stream
    access: MailAccess
    upstream: Upstream | None
    proxied: str | None


async def serve_then_splice(
    protocol: str, session: Proxied, command_loop: Callable[[], Awaitable[None]], idle: float
) -> None:
    try:
        await command_loop()
        if session.upstream is not None:
            spliced = await splice(
                (session.stream.reader, session.stream.writer),
                (session.upstream.reader, session.upstream.writer),
                idle=idle,
            )
            log.info("%s proxy: %s from %s: %s; %d bytes up, %d down", protocol,
                     session.proxied, session.stream.remote_ip, spliced.reason,
                     spliced.to_upstream, spliced.to_client)  # fmt: skip
    finally:
        if session.upstream is not None:
            await session.upstream.close()
        if session.proxied is not None:
            session.access.release(session.proxied, session.stream.remote_ip)
