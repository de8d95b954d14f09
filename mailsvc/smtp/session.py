"""The aiosmtpd ``SMTP`` protocol as mailsvc runs it.

Over aiosmtpd 1.4.6 (which already ends DATA only at ``<CR><LF>.<CR><LF>``, bounds DATA by the
SIZE limit while reading, and discards pipelined plaintext on STARTTLS and starts a new session):

* connection limits, total and per client IP (``421 4.7.0`` and close);
* the raw envelope path goes to :func:`mailsvc.address.parse_envelope` unchanged (aiosmtpd's own
  parser silently drops source routes and unquotes local parts: decisions must see them);
* per-session command budgets (AUTH attempts, HELO/EHLO, RSET, NOOP, VRFY …): over budget,
  ``421`` and close;
* a :class:`MailEnvelope` carrying what RCPT resolved, for DATA.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope

from mailsvc.smtp.resolve import LocalTarget

log = logging.getLogger("mailsvc.smtp.session")


class MailEnvelope(Envelope):
    """aiosmtpd's envelope plus what RCPT resolved."""

    def __init__(self) -> None:
        super().__init__()
        self.local: dict[str, LocalTarget] = {}  # maildir path → target (one copy each)
        self.remote: list[str] = []  # for the smarthost
        self.instance = ""  # one id per message (the policy protocol's ``instance``)
        self.size = 0  # MAIL ... SIZE=, when given


class Limits:
    """Open connections, total and per client IP, shared by one listener."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self.by_ip: Counter[str] = Counter()
        self.open = 0

    def enter(self, ip: str) -> bool:
        if self.open >= self.total or self.by_ip[ip] >= self.per_ip:
            return False
        self.open += 1
        self.by_ip[ip] += 1
        return True

    def leave(self, ip: str) -> None:
        self.open -= 1
        self.by_ip[ip] -= 1
        if self.by_ip[ip] <= 0:
            del self.by_ip[ip]


class MailSmtp(SMTP):
    """One SMTP connection (see the module docstring)."""

    def __init__(self, handler: Any, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._limits = limits
        self._counted_ip: str | None = None
        self.session_id = secrets.token_hex(8)
        self.errors = 0  # refused commands in this session (the handler's budget)
        self.transactions = 0  # MAIL commands accepted (numbers the policy ``instance``)
        self._pending_reply: list[bytes] = []

    async def push(self, status: str | bytes) -> None:
        """One write per reply: the lines of a multi-line reply (``250-…``) are held until its
        last line (one send instead of one per EHLO line)."""
        line = status if isinstance(status, bytes) else status.encode("ascii", "replace")
        self._pending_reply.append(line + b"\r\n")
        if line[3:4] == b"-" and len(self._pending_reply) < 64:
            return
        data, self._pending_reply = b"".join(self._pending_reply), []
        self._writer.write(data)
        await self._writer.drain()

    def _create_envelope(self) -> MailEnvelope:
        return MailEnvelope()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        if first:
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
            if not self._limits.enter(ip):
                log.warning("connection limit reached for %s: refused", ip)
                writer = getattr(transport, "write", None)
                if writer is not None:
                    writer(b"421 4.7.0 Too many connections, try again later\r\n")
                transport.close()
                return
            self._counted_ip = ip
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted_ip is not None:
            self._limits.leave(self._counted_ip)
            self._counted_ip = None
        if getattr(self, "session", None) is None or self._timeout_handle is None:
            return  # refused in connection_made: aiosmtpd never started this session
        super().connection_lost(error)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The path between ``<`` and ``>`` as sent (``<>`` for the null path), then the rest."""
        text = arg.strip()
        if not text:
            return "", ""
        if text.startswith("<"):
            end = text.find(">")
            if end < 0:
                return None, None
            inner, rest = text[1:end], text[end + 1 :]
            if rest and not rest.startswith(" "):
                return None, None
            return (inner if inner else "<>"), rest.strip()
        address, _, rest = text.partition(" ")  # tolerated without brackets, like Postfix
        return address, rest.strip()
