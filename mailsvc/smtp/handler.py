"""The aiosmtpd handler: every decision of the MX and submission listeners.

=============  ===========================================================================
MAIL           sender syntax (``553 5.1.7``); free space under 1.5 x SIZE → ``452 4.3.1``;
               submission: the sender must be one the login may use (``senderlogin`` map),
               else ``553 5.7.1``; the null sender only on MX
RCPT           syntax and address tricks (``553 5.1.3``, :mod:`mailsvc.address`); a hosted
               domain: alias/mailbox resolution, unknown → ``550 5.1.1``, mailbox already
               over quota → ``452 4.2.2``; any other domain: only for an authenticated client
               or ``relay_networks``, and only with a smarthost (``554 5.7.1`` otherwise);
               the policy service, when configured; more than ``max_recipients`` →
               ``452 4.5.3``
DATA           bare CR or LF anywhere → ``550 5.5.2`` (SMTP smuggling); quota → ``552 5.2.2``;
               one durable copy per distinct maildir, then the smarthost for remote
               recipients, then ``250``; any failure withdraws the copies already made and
               answers ``451`` (``4.3.0`` disk, ``4.4.1`` smarthost)
AUTH           PLAIN and LOGIN relayed to the Dovecot auth socket from async code (both
               AUTH PLAIN forms: initial response and ``334`` challenge); outage →
               ``454 4.7.0``; wrong → ``535 5.7.8``
=============  ===========================================================================

A lookup that gives no definite answer is ``451 4.3.0`` — never a ``5xx`` for a temporary fault.
Rejected MAIL/RCPT/AUTH count against ``max_bad_commands`` per session (``421`` and close).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import logging
import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import MISSING, AuthResult, Session

from mailsvc.address import BadAddress, parse_envelope
from mailsvc.clients import Unavailable
from mailsvc.clients.dovecot_auth import DovecotAuthClient, MechanismUnavailable
from mailsvc.clients.policy import DEFAULT_ACTION, PolicyClient, decide
from mailsvc.config import Settings
from mailsvc.mailbox.account import FolderRegistry
from mailsvc.maildir import Chunk, Maildir, MaildirStore, Quota, StoreError, chunk_size
from mailsvc.smtp import headers
from mailsvc.smtp.outbound import RelayFailed, Smarthost
from mailsvc.smtp.resolve import (
    LocalTarget,
    Prefetched,
    Resolution,
    Resolver,
    TooManyDestinations,
)
from mailsvc.smtp.session import MailEnvelope, MailSmtp

log = logging.getLogger("mailsvc.smtp")

TEMP_LOOKUP = "451 4.3.0 Temporary lookup failure, try again later"
TEMP_AUTH = "454 4.7.0 Temporary authentication failure"
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
SPACE_FACTOR = 1.5
FREE_TTL = 0.5  # seconds a free-space reading is reused


class QuotaFull(Exception):
    pass


@dataclass(frozen=True)
class Login:
    """``session.auth_data`` after a successful AUTH (aiosmtpd copies ``login``)."""

    login: str


@dataclass
class Services:
    """What every listener shares: the identity clients, the store and the smarthost."""

    settings: Settings
    auth: DovecotAuthClient
    resolver: Resolver
    policy: PolicyClient | None
    store: MaildirStore
    registry: FolderRegistry  # open folders, shared with the POP3/IMAP sessions
    executor: ThreadPoolExecutor
    smarthost: Smarthost | None

    _free: tuple[float, int] | None = None  # (when, bytes): statvfs at most every FREE_TTL s

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def free_bytes(self) -> int:
        now = time.monotonic()
        if self._free is None or now - self._free[0] > FREE_TTL:
            self._free = (now, await self.run(self.store.free_bytes))
        return self._free[1]


def _deliver_all(
    store: MaildirStore, targets: Sequence[LocalTarget], chunks: Sequence[Chunk]
) -> list[tuple[Maildir, str, Quota]]:
    """Quota check for all, then one copy per target; on any failure the copies made are
    withdrawn and the error re-raised."""
    size = sum(chunk_size(c) for c in chunks)
    boxes = [(store.mailbox(t.path), Quota(bytes=t.quota)) for t in targets]
    for box, quota in boxes:
        if not quota.unlimited and box.usage(quota).exceeds(quota, size, 1):
            raise QuotaFull(str(box.path))
    done: list[tuple[Maildir, str, Quota]] = []
    try:
        for box, quota in boxes:
            done.append((box, box.deliver(chunks, quota), quota))
    except BaseException:
        _withdraw(done)
        raise
    return done


def _withdraw(done: Sequence[tuple[Maildir, str, Quota]]) -> None:
    for box, name, quota in done:
        with contextlib.suppress(StoreError):
            box.withdraw(name, quota)


def _mailbox_full(store: MaildirStore, target: LocalTarget) -> bool:
    quota = Quota(bytes=target.quota)
    return store.mailbox(target.path).usage(quota).exceeds(quota)


class SmtpHandler:
    """Handler for one listener kind: ``mx`` (inbound, no AUTH) or ``submission``."""

    def __init__(
        self,
        services: Services,
        *,
        submission: bool,
        implicit_tls: bool = False,
        proxy_trusted: Sequence[str] = (),
    ) -> None:
        self.services = services
        self.settings = services.settings.smtp
        self.submission = submission
        self.implicit_tls = implicit_tls
        self.proxy_trusted = [ipaddress.ip_network(n, strict=False) for n in proxy_trusted]
        self.relay_networks = [
            ipaddress.ip_network(n, strict=False) for n in self.settings.relay_networks
        ]

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def client_ip(session: Session | None) -> str:
        if session is None:
            return "unknown"
        proxy = getattr(session, "proxy_data", None)
        src = getattr(proxy, "src_addr", None) if proxy is not None else None
        if src is not None:
            return str(src)
        peer = session.peer
        return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"

    def secured(self, server: MailSmtp) -> bool:
        if self.implicit_tls or server._tls_protocol is not None:
            return True
        transport = server.transport
        return transport is not None and transport.get_extra_info("ssl_object") is not None

    def _in(
        self, ip: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
    ) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in networks)

    def _refuse(self, server: MailSmtp, reply: str) -> str:
        """Count a refusal; over the budget the session ends with ``421``."""
        server.errors += 1
        if server.errors >= self.settings.max_bad_commands:
            log.warning("%s: too many errors, closing", self.client_ip(server.session))
            transport = server.transport
            if transport is not None:
                asyncio.get_running_loop().call_soon(transport.close)
            return "421 4.7.0 Too many errors, closing connection"
        return reply

    # --- hooks -----------------------------------------------------------------------------

    async def handle_PROXY(
        self, server: MailSmtp, session: Session, envelope: MailEnvelope, proxy_data: Any
    ) -> bool:
        peer = session.peer
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._in(ip, self.proxy_trusted):
            log.warning("PROXY header from untrusted %s: closed", ip or "unknown peer")
            return False
        return bool(proxy_data)

    async def handle_EHLO(
        self,
        server: MailSmtp,
        session: Session,
        envelope: MailEnvelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        out = [r for r in responses[:-1] if r.rstrip() != "250-AUTH" and r != "250-HELP"]
        if not self.submission:
            out = [r for r in out if not r.startswith("250-AUTH")]
        out += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]
        return out

    async def handle_MAIL(
        self,
        server: MailSmtp,
        session: Session,
        envelope: MailEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if address == "<>":
            if self.submission:
                return self._refuse(server, "553 5.7.1 The null sender is not accepted here")
            sender = "<>"
        else:
            try:
                sender = str(parse_envelope(address))
            except BadAddress as exc:
                return self._refuse(server, f"553 5.1.7 Bad sender address syntax: {exc}")
        try:
            free = await self.services.free_bytes()
        except OSError:
            return "451 4.3.0 Local storage unavailable"
        if free < SPACE_FACTOR * self.settings.max_message_size:
            log.warning("free space %d bytes is under 1.5 x the size limit", free)
            return "452 4.3.1 Insufficient system storage"
        if self.submission:
            login = str(session.login_data or "")
            try:
                allowed = await self.services.resolver.sender_logins(sender)
            except Unavailable as exc:
                log.warning("senderlogin lookup failed: %s", exc)
                return TEMP_LOOKUP
            if login.lower() not in allowed:
                return self._refuse(
                    server, f"553 5.7.1 <{sender}>: Sender address not owned by user {login}"
                )
        envelope.mail_from = sender
        envelope.mail_options.extend(mail_options)
        server.transactions += 1
        envelope.instance = f"{server.session_id}.{server.transactions}"
        for option in mail_options:
            name, _, value = option.partition("=")
            if name.upper() == "SIZE" and value.isdigit() and len(value) < 16:
                envelope.size = int(value)
        return "250 2.1.0 Ok"

    async def _resolve_local(
        self, server: MailSmtp, rcpt: Any, first: Prefetched
    ) -> Resolution | str:
        resolver = self.services.resolver
        try:
            found = await resolver.recipient(rcpt, first)
        except TooManyDestinations:
            return "451 4.3.5 Alias expansion too large"
        if found is None:
            return self._refuse(
                server, f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
            )
        if found.remote and self.services.smarthost is None:
            log.warning("%s forwards to a remote address but no smarthost is set", rcpt)
            return "451 4.3.5 Forwarding is not configured"
        for target in found.local:
            if target.quota > 0:
                try:
                    full = await self.services.run(_mailbox_full, self.services.store, target)
                except StoreError as exc:
                    log.error("mailbox %s unavailable: %s", target.path, exc)
                    return "451 4.3.0 Mailbox unavailable, try again later"
                if full:
                    return f"452 4.2.2 <{rcpt}>: Mailbox full"
        return found

    async def handle_RCPT(
        self,
        server: MailSmtp,
        session: Session,
        envelope: MailEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return "452 4.5.3 Too many recipients"
        try:
            rcpt = parse_envelope(address)
        except BadAddress as exc:
            return self._refuse(server, f"553 5.1.3 Bad recipient address syntax: {exc}")
        try:
            first = await self.services.resolver.prefetch(rcpt)
            if first.hosted:
                result = await self._resolve_local(server, rcpt, first)
                if isinstance(result, str):
                    return result
            else:
                may_relay = session.authenticated or self._in(
                    self.client_ip(session), self.relay_networks
                )
                if not may_relay:
                    return self._refuse(server, f"554 5.7.1 <{rcpt}>: Relay access denied")
                if self.services.smarthost is None:
                    return self._refuse(
                        server, f"554 5.7.1 <{rcpt}>: Relay not available: no smarthost configured"
                    )
                result = Resolution(remote=[str(rcpt)])
        except Unavailable as exc:
            log.warning("lookup for a recipient failed: %s", exc)
            return TEMP_LOOKUP
        refused = await self._policy(server, session, envelope, str(rcpt))
        if refused is not None:
            return refused
        envelope.rcpt_tos.append(str(rcpt))
        envelope.rcpt_options.extend(rcpt_options)
        for target in result.local:
            envelope.local.setdefault(target.path, target)
        for remote in result.remote:
            if remote not in envelope.remote:
                envelope.remote.append(remote)
        return "250 2.1.5 Ok"

    async def _policy(
        self, server: MailSmtp, session: Session, envelope: MailEnvelope, rcpt: str
    ) -> str | None:
        policy = self.services.policy
        if policy is None:
            return None
        attributes = {
            "protocol_state": "RCPT",
            "protocol_name": "ESMTP" if session.extended_smtp else "SMTP",
            "helo_name": str(session.host_name or ""),
            "queue_id": "",
            "sender": "" if envelope.mail_from == "<>" else str(envelope.mail_from or ""),
            "recipient": rcpt,
            "recipient_count": str(len(envelope.rcpt_tos)),
            "client_address": self.client_ip(session),
            "client_name": "unknown",
            "reverse_client_name": "unknown",
            "instance": envelope.instance,
            "sasl_method": "",
            "sasl_username": str(session.login_data or ""),
            "size": str(envelope.size),
            "encryption_protocol": "TLS" if self.secured(server) else "",
        }
        try:
            action = await policy.check(attributes)
        except Unavailable as exc:
            log.warning("policy service gave no answer: %s", exc)
            return DEFAULT_ACTION
        return decide(action)

    async def handle_DATA(self, server: MailSmtp, session: Session, envelope: MailEnvelope) -> str:
        content = envelope.spool  # bare CR/LF, line length and SIZE were checked while reading
        assert content is not None
        queue_id = secrets.token_hex(6).upper()
        sender = "" if envelope.mail_from == "<>" else str(envelope.mail_from)
        login = str(session.login_data) if session.authenticated and session.login_data else None
        ssl_object = server.transport.get_extra_info("ssl_object") if server.transport else None
        tls = None
        if ssl_object is not None:
            tls = f"using {ssl_object.version()} with cipher {ssl_object.cipher()[0]}"
        received = headers.received(
            helo=session.host_name,
            client_ip=self.client_ip(session),
            by=self.settings.hostname,
            proto=headers.protocol(bool(session.extended_smtp), self.secured(server), bool(login)),
            queue_id=queue_id,
            login=login,
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
            tls=tls,
        )
        done: list[tuple[Maildir, str, Quota]] = []
        targets = list(envelope.local.values())
        if targets:
            chunks: list[Chunk] = [headers.return_path(sender), received, content]
            try:
                done = await self.services.run(_deliver_all, self.services.store, targets, chunks)
            except QuotaFull:
                return "552 5.2.2 Mailbox full"
            except StoreError as exc:
                log.error("delivery %s failed: %s", queue_id, exc)
                return "451 4.3.0 Local delivery failed, try again later"
        if envelope.remote:
            smarthost = self.services.smarthost
            assert smarthost is not None  # RCPT accepted no remote recipient without one
            try:
                await smarthost.send(sender, envelope.remote, [received, content])
            except RelayFailed as exc:
                log.warning("smarthost refused %s: %s", queue_id, exc.reply)
                await self.services.run(_withdraw, done)
                return exc.reply
        for box, _name, _quota in done:
            self.services.registry.poke(str(box.path))  # wakes IDLE sessions at once
        log.info(
            "%s: from=<%s> to=%d local=%d remote=%d size=%d%s",
            queue_id, sender, len(envelope.rcpt_tos), len(done), len(envelope.remote),
            envelope.data_size, f" login={login}" if login else "",
        )  # fmt: skip
        return f"250 2.0.0 Ok: queued as {queue_id}"

    # --- AUTH ------------------------------------------------------------------------------

    async def auth_PLAIN(self, server: MailSmtp, args: list[str]) -> AuthResult:
        return await self._auth(server, "PLAIN", args)

    async def auth_LOGIN(self, server: MailSmtp, args: list[str]) -> AuthResult:
        return await self._auth(server, "LOGIN", args)

    async def _auth(self, server: MailSmtp, mechanism: str, args: list[str]) -> AuthResult:
        initial: bytes | None = None
        if len(args) == 2:
            if args[1] == "=":
                initial = b""
            else:
                try:
                    initial = base64.b64decode(args[1], validate=True)
                except (binascii.Error, ValueError):
                    await server.push("501 5.5.2 Cannot decode base64")
                    return AuthResult(success=False, handled=True)

        async def respond(challenge: bytes) -> bytes | None:
            answer = await server.challenge_auth(challenge, encode_to_b64=True)
            return None if answer is MISSING else bytes(answer)

        session = server.session
        sockname = server.transport.get_extra_info("sockname") if server.transport else None
        try:
            outcome = await self.services.auth.authenticate(
                mechanism,
                respond=respond,
                initial=initial,
                local_ip=str(sockname[0]) if isinstance(sockname, tuple) else None,
                remote_ip=self.client_ip(session),
                secured=self.secured(server),
            )
        except Unavailable as exc:
            log.warning("auth service unavailable: %s", exc)
            return AuthResult(success=False, handled=False, message=TEMP_AUTH)
        except MechanismUnavailable:
            return AuthResult(
                success=False, handled=False, message="504 5.5.4 Mechanism unavailable"
            )
        if outcome.aborted:
            return AuthResult(success=False, handled=True)
        if outcome.user is None:
            return AuthResult(
                success=False, handled=False, message=self._refuse(server, AUTH_FAILED)
            )
        log.info("%s: authenticated as %s", self.client_ip(session), outcome.user)
        return AuthResult(
            success=True,
            auth_data=Login(outcome.user),
            message="235 2.7.0 Authentication successful",
        )
