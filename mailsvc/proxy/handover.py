"""What a proxy-mode session does around its own command loop, the same for IMAP and POP3: once
idsvc accepted a login, take the user+IP slot and log in upstream (``log_in_upstream``); run the
loop until it ends (logout) or hands over (logged in upstream), then splice the client to the
upstream; in every case close the upstream and give back the user+IP slot the login took."""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from mailsvc.access import MailAccess
from mailsvc.proxy.splice import splice
from mailsvc.proxy.upstream import Connector, Upstream, UpstreamError
from mailsvc.stream import Stream

log = logging.getLogger("mailsvc.proxy")


class Proxied(Protocol):
    """A proxy session: ``upstream`` is set once logged in there, ``proxied`` once the user
    holds a user+IP slot."""

    stream: Stream
    access: MailAccess
    connector: Connector
    upstream: Upstream | None
    proxied: str | None


class Refused(enum.Enum):
    """Why ``log_in_upstream`` did not log in."""

    LIMIT = "limit"  # the user+IP connection limit is reached
    UNAVAILABLE = "unavailable"  # the upstream failed or refused the master login (logged)


async def log_in_upstream(
    protocol: str,
    session: Proxied,
    user: str,
    connect: Callable[[str, str | None], Awaitable[Upstream]],
) -> Upstream | Refused:
    """Take ``user``'s user+IP slot, then log in upstream with ``connect`` (the connector's
    ``imap`` or ``pop3``): the upstream, also set with the user on ``session``, or why not (the
    slot is given back then)."""
    remote_ip = session.stream.remote_ip
    if not session.access.claim(user, remote_ip):
        return Refused.LIMIT
    try:
        upstream = await connect(user, remote_ip)
    except UpstreamError as exc:
        session.access.release(user, remote_ip)
        log.warning("%s proxy: %s from %s: upstream %s: %s", protocol, user, remote_ip,
                    session.connector.where, exc)  # fmt: skip
        return Refused.UNAVAILABLE
    session.proxied, session.upstream = user, upstream
    log.info("%s proxy: %s from %s: logged in on %s", protocol, user, remote_ip,
             session.connector.where)  # fmt: skip
    return upstream


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
