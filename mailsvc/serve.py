"""``mailsvc serve``: the SMTP listeners (MX, submission with STARTTLS, submissions with implicit
TLS), POP3 (STLS) and POP3S, IMAP (STARTTLS) and IMAPS over one set of identity clients, one
Maildir store and one smarthost, until SIGTERM/SIGINT.

Start-up logs one ``<name>: listening on host:port`` line per listener and then ``ready``; a
listener that cannot bind stops everything with exit code 1 (2 for invalid settings). The
identity sockets are not needed to start: every lookup connects on demand and a missing idsvc is
a temporary failure (``451``/``454``) until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import ssl
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mailsvc.access import MailAccess
from mailsvc.clients.dovecot_auth import DovecotAuthClient
from mailsvc.clients.policy import PolicyClient
from mailsvc.clients.socketmap import SocketmapClient
from mailsvc.config import ConfigError, ListenerSettings, Settings
from mailsvc.imap.server import ImapOptions, imap_listener
from mailsvc.imap.session import ImapSession
from mailsvc.listener import LineListener
from mailsvc.mailbox.account import FolderRegistry
from mailsvc.maildir import CRASH_STEPS, MaildirStore, StoreError
from mailsvc.pop3.server import pop3_listener
from mailsvc.pop3.session import Pop3Options, Pop3Session
from mailsvc.proxy.imap import ProxyImapSession
from mailsvc.proxy.pop3 import ProxyPop3Session
from mailsvc.proxy.server import ProxyAccess
from mailsvc.proxy.upstream import Connector
from mailsvc.smtp.handler import Services, SmtpHandler
from mailsvc.smtp.outbound import Smarthost
from mailsvc.smtp.resolve import Resolver
from mailsvc.smtp.session import Limits, MailSmtp
from mailsvc.smtp.tls import server_context
from mailsvc.stream import Stream

log = logging.getLogger("mailsvc.serve")

EXIT_OK, EXIT_START, EXIT_CONFIG = 0, 1, 2
CRASH_ENV = "MAILSVC_TEST_CRASH_AT"  # test hook, see mailsvc.maildir
CLOSE_GRACE = 10.0


class SmtpListener:
    """One TCP listener serving SMTP with its own handler and connection limits."""

    def __init__(
        self,
        name: str,
        settings: ListenerSettings,
        handler: SmtpHandler,
        smtp: dict[str, Any],
        *,
        implicit_tls: ssl.SSLContext | None = None,
        limits: Limits,
    ) -> None:
        self.name = name
        self.settings = settings
        self.handler = handler
        self.smtp = smtp
        self.implicit_tls = implicit_tls
        self.limits = limits
        self.server: asyncio.Server | None = None

    def _protocol(self) -> MailSmtp:
        return MailSmtp(
            self.handler, limits=self.limits, loop=asyncio.get_running_loop(), **self.smtp
        )

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(
            self._protocol,
            self.settings.host,
            self.settings.port,
            ssl=self.implicit_tls,
            reuse_address=True,
        )

    @property
    def where(self) -> str:
        if self.server is None or not self.server.sockets:
            return self.settings.listen
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_GRACE):
                    await self.server.wait_closed()


def build_services(settings: Settings) -> Services:
    ident = settings.identity
    crash_at = os.environ.get(CRASH_ENV) or None
    if crash_at is not None and crash_at not in CRASH_STEPS:
        raise ConfigError(f"{CRASH_ENV}: unknown step {crash_at!r}")
    store = MaildirStore(
        settings.store.root,
        hostname=settings.smtp.hostname,
        fsync=settings.store.fsync,
        crash_at=crash_at,
    )
    try:
        store.check_root()
    except (OSError, StoreError) as exc:
        raise ConfigError(f"vmail root {settings.store.root}: {exc}") from exc
    maps = SocketmapClient(
        ident.socketmap,
        size=ident.pool_size,
        timeout=ident.timeout,
        cache_ttl=ident.cache_ttl,
        cache_size=ident.cache_size,
    )
    return Services(
        settings=settings,
        auth=DovecotAuthClient(ident.auth, service="smtp", timeout=ident.auth_timeout),
        resolver=Resolver(maps, depth=settings.smtp.alias_depth, fanout=settings.smtp.alias_fanout),
        policy=PolicyClient(ident.policy, size=ident.pool_size) if ident.policy else None,
        store=store,
        registry=FolderRegistry(fsync=settings.store.fsync),
        executor=ThreadPoolExecutor(settings.store.workers, thread_name_prefix="mailsvc-store"),
        smarthost=(
            Smarthost(settings.smarthost, settings.smtp.hostname)
            if settings.smarthost.address
            else None
        ),
    )


def build_listeners(settings: Settings, services: Services) -> list[SmtpListener]:
    smtp = settings.smtp
    tls = server_context(settings.tls, smtp.hostname)
    common: dict[str, Any] = {
        "data_size_limit": smtp.max_message_size,
        "hostname": smtp.hostname,
        "ident": "mailsvc",
        "timeout": smtp.timeout,
        "command_call_limit": {
            "AUTH": 3, "EHLO": 10, "HELO": 10, "STARTTLS": 2, "NOOP": 20, "RSET": 100,
            "VRFY": 3, "HELP": 5, "*": 1_000_000,
        },
    }  # fmt: skip
    listeners: list[SmtpListener] = []

    def proxy(ls: ListenerSettings) -> dict[str, Any]:
        return {"proxy_protocol_timeout": 10.0} if ls.proxy_trusted else {}

    def limits(ls: ListenerSettings) -> Limits:
        # behind a proxy every connection comes from the proxy: only the total limit applies
        per_ip = smtp.max_connections if ls.proxy_trusted else smtp.max_connections_per_ip
        return Limits(smtp.max_connections, per_ip)

    if settings.mx.enabled:
        handler = SmtpHandler(services, submission=False, proxy_trusted=settings.mx.proxy_trusted)
        listeners.append(
            SmtpListener(
                "mx",
                settings.mx,
                handler,
                {
                    **common,
                    **proxy(settings.mx),
                    "tls_context": tls,
                    "auth_exclude_mechanism": ["PLAIN", "LOGIN"],
                },
                limits=limits(settings.mx),
            )
        )
    if settings.submission.enabled:
        assert tls is not None  # Settings refuses submission without TLS
        handler = SmtpHandler(
            services, submission=True, proxy_trusted=settings.submission.proxy_trusted
        )
        listeners.append(
            SmtpListener(
                "submission",
                settings.submission,
                handler,
                {
                    **common,
                    **proxy(settings.submission),
                    "tls_context": tls,
                    "require_starttls": True,
                    "auth_required": True,
                    "auth_require_tls": True,
                },
                limits=limits(settings.submission),
            )
        )
    if settings.submissions.enabled:
        assert tls is not None
        handler = SmtpHandler(
            services,
            submission=True,
            implicit_tls=True,
            proxy_trusted=settings.submissions.proxy_trusted,
        )
        listeners.append(
            SmtpListener(
                "submissions",
                settings.submissions,
                handler,
                {
                    **common,
                    **proxy(settings.submissions),
                    "auth_required": True,
                    "auth_require_tls": False,  # the transport is TLS from the first byte
                },
                implicit_tls=tls,
                limits=limits(settings.submissions),
            )
        )
    return listeners


def build_access(
    settings: Settings, services: Services, service: str, kind: type[MailAccess] = MailAccess
) -> MailAccess:
    """The access of ``service``'s listeners: ``MailAccess``, or ``ProxyAccess`` for listeners
    that proxy to an upstream and never open a mailbox."""
    ident = settings.identity
    return kind(
        DovecotAuthClient(ident.auth, service=service, timeout=ident.auth_timeout),
        services.resolver.maps,
        services.store,
        services.executor,
        services.registry,
        max_user_ip=settings.access.max_user_ip_connections,
    )


def build_mail_listeners(
    settings: Settings, services: Services, accesses: list[MailAccess]
) -> list[LineListener]:
    """The POP3 and IMAP listeners (STARTTLS/STLS on the plain ports, implicit TLS on the
    others), each with its own connection limits; a listener with an ``upstream`` section is a
    proxy (:mod:`mailsvc.proxy`) and serves no local mailbox."""
    access_settings = settings.access
    tls = server_context(settings.tls, settings.smtp.hostname)
    out: list[LineListener] = []

    def limits(ls: ListenerSettings) -> Limits:
        per_ip = (
            access_settings.max_connections
            if ls.proxy_trusted
            else access_settings.max_connections_per_ip
        )
        return Limits(access_settings.max_connections, per_ip)

    shared: dict[tuple[str, bool], MailAccess] = {}

    def access_for(service: str, proxy: bool) -> MailAccess:
        """One access per service and kind (local or proxy), shared by its listeners."""
        key = (service, proxy)
        if key not in shared:
            kind = ProxyAccess if proxy else MailAccess
            shared[key] = build_access(settings, services, service, kind)
            accesses.append(shared[key])
        return shared[key]

    pop3_options = Pop3Options(
        hostname=settings.smtp.hostname,
        allow_plaintext=access_settings.allow_plaintext,
        timeout=access_settings.pop3_timeout,
    )
    pop3_all = (("pop3", settings.pop3, False), ("pop3s", settings.pop3s, True))
    for name, ls, implicit in pop3_all:
        if not ls.enabled:
            continue
        pop3_session: Callable[[Stream, MailAccess, Pop3Options], Pop3Session] = Pop3Session
        if ls.upstream is not None:
            connector = Connector.from_settings(ls.upstream)
            pop3_session = functools.partial(ProxyPop3Session, connector=connector)
        pop3_access = access_for("pop3", ls.upstream is not None)
        out.append(pop3_listener(name, ls, pop3_access, pop3_options, limits=limits(ls), tls=tls,
                                 implicit_tls=implicit, session=pop3_session))  # fmt: skip
    imap_options = ImapOptions.from_settings(settings)
    imap_all = (("imap", settings.imap, False), ("imaps", settings.imaps, True))
    for name, imap_ls, implicit in imap_all:
        if not imap_ls.enabled:
            continue
        imap_session: Callable[[Stream, MailAccess, ImapOptions], ImapSession] = ImapSession
        if imap_ls.upstream is not None:
            connector = Connector.from_settings(imap_ls.upstream)
            imap_session = functools.partial(ProxyImapSession, connector=connector)
        imap_access = access_for("imap", imap_ls.upstream is not None)
        out.append(imap_listener(name, imap_ls, imap_access, imap_options, limits=limits(imap_ls),
                                 tls=tls, implicit_tls=implicit, session=imap_session))  # fmt: skip
    return out


async def close_services(services: Services) -> None:
    await services.auth.close()
    await services.resolver.maps.close()
    if services.policy is not None:
        await services.policy.close()
    services.executor.shutdown(wait=True)


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> int:
    services = build_services(settings)
    listeners: Sequence[SmtpListener | LineListener] = []
    started: list[SmtpListener | LineListener] = []
    accesses: list[MailAccess] = []
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        listeners = [
            *build_listeners(settings, services),
            *build_mail_listeners(settings, services, accesses),
        ]
        for listener in listeners:
            try:
                await listener.start()
            except OSError as exc:
                log.error(
                    "cannot start: %s: cannot listen on %s: %s",
                    listener.name,
                    listener.settings.listen,
                    exc,
                )
                return EXIT_START
            started.append(listener)
            log.info("%s: listening on %s", listener.name, listener.where)
        log.info(
            "ready: %d listener(s): %s (event loop: %s)",
            len(started), ", ".join(x.name for x in started),
            "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio",
        )  # fmt: skip
        await stop.wait()
        log.info("stopping")
        return EXIT_OK
    finally:
        for listener in started:
            await listener.close()
        for access in accesses:
            await access.auth.close()
        await close_services(services)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
