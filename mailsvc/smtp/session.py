"""The aiosmtpd ``SMTP`` protocol as mailsvc runs it.

Over aiosmtpd 1.4.6 (which already ends DATA only at ``<CR><LF>.<CR><LF>``, bounds DATA by the
SIZE limit while reading, and discards pipelined plaintext on STARTTLS and starts a new session):

* connection limits, total and per client IP (``421 4.7.0`` and close);
* the raw envelope path goes to :func:`mailsvc.address.parse_envelope` unchanged (aiosmtpd's own
  parser silently drops source routes and unquotes local parts: decisions must see them);
* per-session command budgets (AUTH attempts, HELO/EHLO, RSET, NOOP, VRFY …): over budget,
  ``421`` and close;
* a :class:`MailEnvelope` carrying what RCPT resolved, for DATA;
* DATA streamed into a spool (:class:`tempfile.SpooledTemporaryFile`: at most ``SPOOL_MEMORY``
  bytes in memory per session, the rest in an unlinked temporary file), never the whole message
  in memory. Only ``<CR><LF>.<CR><LF>`` ends it; a line holding a bare CR or LF, a line over
  1000 octets or more than the SIZE limit is read to its end and refused (``550 5.5.2``,
  ``500 5.5.6``, ``552 5.3.4``) without reaching the handler; a spool write failure is ``451``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import tempfile
from collections import Counter
from typing import IO, Any

from aiosmtpd.smtp import MISSING, SMTP, Envelope, syntax

from mailsvc.smtp.resolve import LocalTarget

log = logging.getLogger("mailsvc.smtp.session")

SPOOL_MEMORY = 256 * 1024  # bytes of a message kept in memory before it goes to a temp file
MAX_DATA_LINE = 1000 + 1  # RFC 5321 §4.5.3.1.6 text line with CRLF, plus a transparency dot
TOO_LONG = "500 5.5.6 Line too long (RFC 5321 4.5.3.1.6)"
TOO_BIG = "552 5.3.4 Message size exceeds the fixed maximum"
BARE = "550 5.5.2 Message refused: bare CR or LF in the message (RFC 5322 needs CRLF)"
SPOOL_FAILED = "451 4.3.0 Cannot spool the message, try again later"


class MailEnvelope(Envelope):
    """aiosmtpd's envelope plus what RCPT resolved."""

    def __init__(self) -> None:
        super().__init__()
        self.local: dict[str, LocalTarget] = {}  # maildir path → target (one copy each)
        self.remote: list[str] = []  # for the smarthost
        self.instance = ""  # one id per message (the policy protocol's ``instance``)
        self.size = 0  # MAIL ... SIZE=, when given
        self.spool: IO[bytes] | None = None  # the message (un-dot-stuffed, CRLF), during DATA
        self.data_size = 0


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

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert isinstance(envelope, MailEnvelope)
        if not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY) as spool:
            problem = await self._read_data(spool)
            if problem is not None:
                self.envelope = self._create_envelope()  # the post-DATA state
                await self.push(problem)
                return
            envelope.spool = spool
            status = await self._call_handler_hook("DATA")
            self.envelope = self._create_envelope()  # the post-DATA state
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self, spool: IO[bytes]) -> str | None:
        """Read up to the end marker into ``spool``; the refusal, or None when all is well."""
        assert isinstance(self.envelope, MailEnvelope)
        limit = self.data_size_limit or 0
        problem: str | None = None
        size = 0
        line_start = True  # False while reading the tail of an over-long line
        while True:
            try:
                chunk = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:
                await self._reader.readexactly(exc.consumed)
                problem, line_start = problem or TOO_LONG, False
                continue
            if not line_start:
                line_start = True  # the end of an over-long line: dropped
                continue
            if chunk == b".\r\n":
                return problem
            line = chunk[1:] if chunk.startswith(b".") else chunk
            size += len(line)
            if problem is not None:
                continue  # read to the end marker, keep nothing
            if len(chunk) > MAX_DATA_LINE:
                problem = TOO_LONG
            elif b"\r" in line[:-2] or b"\n" in line[:-2]:
                problem = BARE
            elif limit and size > limit:
                problem = TOO_BIG
            else:
                try:
                    spool.write(line)
                except OSError as exc:
                    log.error("cannot spool a message: %s", exc)
                    problem = SPOOL_FAILED
                self.envelope.data_size = size

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
