"""Connecting to the upstream server of a proxy-mode listener and logging a user in there with
the master credential (:class:`Upstream`), within one time budget.

``none``: plain TCP. ``starttls``: STARTTLS (IMAP) / STLS (POP3) right after the greeting.
``implicit``: TLS from the first byte. The certificate is verified against ``tls_ca_file`` (the
system store when unset) and the name ``tls_server_name`` (default: the address's host), which
is also sent as SNI; ``tls_verify = false`` turns both checks off (a private link only).

Logging in: ``master_separator`` logs in as ``user<separator>master`` with the master password
(Dovecot's ``auth_master_user_separator``); ``sasl_plain`` sends SASL PLAIN with authzid = user,
authcid = master. The master password comes from a file that must be 0600 or stricter, read once
(:func:`read_master_password`) and never logged.

Every fault — no connection, TLS failure, an upstream that refuses the master login, an answer
that cannot be read, the time budget spent — is :class:`UpstreamError`, which the sessions turn
into a temporary failure (``NO [UNAVAILABLE]`` / ``-ERR [SYS/TEMP]``), never a password error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailsvc.config import ConfigError, Settings, UpstreamSettings
from mailsvc.proxy import protocol as pp

log = logging.getLogger("mailsvc.proxy")
READ_LIMIT = 1 << 16  # StreamReader limit: its buffer pauses the socket past twice this


class UpstreamError(Exception):
    """The upstream could not be reached or would not log the user in (temporary)."""


@dataclass(frozen=True)
class Secret:
    value: str = field(repr=False)

    def __str__(self) -> str:
        return "********"


def read_master_password(path: Path) -> Secret:
    """The master password in ``path``: a regular file, not a symlink, mode 0600 or stricter;
    one trailing newline is dropped. :class:`ConfigError` otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"master_password_file {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"master_password_file {path}: not a regular file")
        if info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise ConfigError(
                f"master_password_file {path}: mode {mode:04o}, must be 0600 or stricter"
            )
        raw = os.read(fd, 4097)
    finally:
        os.close(fd)
    if len(raw) > 4096:
        raise ConfigError(f"master_password_file {path}: longer than 4096 bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"master_password_file {path}: not UTF-8") from exc
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text or any(c in text for c in "\0\r\n"):
        raise ConfigError(f"master_password_file {path}: empty or more than one line")
    return Secret(text)


def check_upstreams(settings: Settings) -> None:
    """What ``serve`` would refuse in the enabled listeners' upstream tables (password files,
    CA files), for ``mailsvc check-config``; :class:`ConfigError`."""
    for listener in (settings.pop3, settings.pop3s, settings.imap, settings.imaps):
        if listener.enabled and listener.upstream is not None:
            Connector.from_settings(listener.upstream)


def client_context(settings: UpstreamSettings) -> ssl.SSLContext | None:
    """The TLS context for the upstream (``None`` for ``tls = "none"``)."""
    if settings.tls == "none":
        return None
    try:
        context = ssl.create_default_context(
            cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"upstream tls_ca_file {settings.tls_ca_file}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Upstream:
    """A logged-in upstream connection: ``reply`` is what to tell the client (IMAP: the
    upstream's capability list; POP3: the text of its ``+OK``)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reply: str

    async def close(self) -> None:
        await close_writer(self.writer)


async def close_writer(writer: asyncio.StreamWriter, grace: float = 5.0) -> None:
    """Close, flushing what is buffered for up to ``grace`` seconds, then abort."""
    with contextlib.suppress(Exception):
        writer.close()
    try:
        async with asyncio.timeout(grace):
            await writer.wait_closed()
    except Exception:  # timeout, reset, TLS errors: the socket goes anyway
        writer.transport.abort()


class _Conversation:
    """Line I/O with the upstream during the handshake."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def line(self) -> bytes:
        try:
            data = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            raise UpstreamError("response line too long") from exc
        except asyncio.IncompleteReadError as exc:
            raise UpstreamError("connection closed by the upstream") from exc
        if len(data) > pp.MAX_LINE + 2:
            raise UpstreamError("response line too long")
        return data[:-2] if data.endswith(b"\r\n") else data[:-1]

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


# the protocol's handshake on a fresh connection: (conversation, user, client IP) -> logged in
_Login = Callable[[_Conversation, str, str | None], Awaitable[Upstream]]


class Connector:
    """Opens logged-in upstream connections for one listener."""

    def __init__(self, settings: UpstreamSettings, password: Secret) -> None:
        self.settings = settings
        self.password = password
        self.tls = client_context(settings)

    @classmethod
    def from_settings(cls, settings: UpstreamSettings) -> Connector:
        return cls(settings, read_master_password(settings.master_password_file))

    @property
    def where(self) -> str:
        return self.settings.address

    async def _connect(self) -> _Conversation:
        s = self.settings
        implicit = self.tls if s.tls == "implicit" else None
        reader, writer = await asyncio.open_connection(
            s.host, s.port, ssl=implicit, server_hostname=s.server_name if implicit else None,
            limit=READ_LIMIT,
        )  # fmt: skip
        return _Conversation(reader, writer)

    async def _starttls(self, conv: _Conversation) -> None:
        """Upgrade; bytes the upstream sent after its STARTTLS answer, before the handshake,
        could be an injection (they would be read as if they came over TLS): refused."""
        assert self.tls is not None
        if getattr(conv.reader, "_buffer", b""):
            raise UpstreamError("data after the STARTTLS answer, before TLS")
        await conv.writer.start_tls(self.tls, server_hostname=self.settings.server_name)

    async def imap(self, user: str, remote_ip: str | None) -> Upstream:
        """An upstream IMAP connection logged in as ``user``."""
        return await self._logged_in(self._imap_login, user, remote_ip)

    async def pop3(self, user: str, remote_ip: str | None) -> Upstream:
        """An upstream POP3 connection logged in as ``user``."""
        return await self._logged_in(self._pop3_login, user, remote_ip)

    async def _logged_in(self, login: _Login, user: str, remote_ip: str | None) -> Upstream:
        """Connect and ``login`` within ``timeout``; the connection is closed on any failure,
        which comes out as ``UpstreamError``."""
        try:
            async with asyncio.timeout(self.settings.timeout):
                conv = await self._connect()
                try:
                    return await login(conv, user, remote_ip)
                except BaseException:
                    await close_writer(conv.writer, grace=0.5)
                    raise
        except TimeoutError as exc:
            raise UpstreamError(f"no answer within {self.settings.timeout:g}s") from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            raise UpstreamError(str(exc) or type(exc).__name__) from exc
        except pp.UpstreamProtocolError as exc:
            raise UpstreamError(f"unreadable answer: {exc}") from exc
        except ValueError as exc:  # a user name the upstream protocol cannot carry
            raise UpstreamError(f"cannot log in upstream: {exc}") from exc

    # --- IMAP ---------------------------------------------------------------------------

    async def _imap_command(
        self, conv: _Conversation, tag: str, segments: list[bytes]
    ) -> tuple[pp.ImapResponse, list[str] | None]:
        """Send one command (waiting for ``+`` between segments); the tagged response and
        the last capability list seen while waiting for it."""
        caps: list[str] | None = None
        pending = list(segments)
        await conv.send(pending.pop(0))
        while True:
            response = pp.parse_imap(await conv.line())
            if response.tag == "+":
                if not pending:
                    raise UpstreamError("unexpected continuation request")
                await conv.send(pending.pop(0))
                continue
            caps = pp.capabilities(response) or caps
            if response.status == "BYE":
                raise UpstreamError(f"upstream said BYE: {response.text}")
            if response.tag == tag:
                return response, caps

    async def _imap_login(self, conv: _Conversation, user: str, remote_ip: str | None) -> Upstream:
        s = self.settings
        greeting = pp.parse_imap(await conv.line())
        if greeting.tag != "*" or greeting.status != "OK":
            raise UpstreamError(f"unexpected greeting: {greeting.status} {greeting.text}")
        if s.tls == "starttls":
            answer, _ = await self._imap_command(conv, "P1", [b"P1 STARTTLS\r\n"])
            if answer.status != "OK":
                raise UpstreamError(f"STARTTLS refused: {answer.text}")
            await self._starttls(conv)
        if s.forward_client_ip and remote_ip:
            forward = pp.imap_id("P2", {"x-originating-ip": remote_ip})
            await self._imap_command(conv, "P2", [forward])
        if s.login == "sasl_plain":
            segments = pp.imap_authenticate_plain("P3", user, s.master_user, self.password.value)
        else:
            segments = pp.imap_login("P3", f"{user}{s.master_separator}{s.master_user}",
                                     self.password.value)  # fmt: skip
        answer, caps = await self._imap_command(conv, "P3", segments)
        if answer.status != "OK":
            code = f"[{answer.code}] " if answer.code else ""
            raise UpstreamError(
                f"master login for {user} refused: {answer.status} {code}{answer.text}"
            )
        if caps is None:
            _, caps = await self._imap_command(conv, "P4", [b"P4 CAPABILITY\r\n"])
        if caps is None:
            raise UpstreamError("no capability list after login")
        return Upstream(conv.reader, conv.writer, " ".join(caps))

    # --- POP3 ---------------------------------------------------------------------------

    async def _pop3_command(self, conv: _Conversation, line: bytes) -> pp.Pop3Reply:
        await conv.send(line)
        return pp.parse_pop3(await conv.line())

    async def _pop3_capa(self, conv: _Conversation) -> list[str]:
        reply = await self._pop3_command(conv, b"CAPA\r\n")
        caps: list[str] = []
        if not reply.ok:
            return caps
        while (line := await conv.line()) != b".":
            if len(caps) > 100:
                raise UpstreamError("CAPA list too long")
            caps.append(line.decode("utf-8", "replace").upper())
        return caps

    async def _pop3_xclient(self, conv: _Conversation, greeting: pp.Pop3Reply) -> bool:
        """Whether the upstream takes XCLIENT from us: Dovecot says so with an ``[XCLIENT]``
        code in its greeting to trusted networks; others may list it in CAPA."""
        if greeting.text.upper().startswith("[XCLIENT]"):
            return True
        return "XCLIENT" in await self._pop3_capa(conv)

    async def _pop3_login(self, conv: _Conversation, user: str, remote_ip: str | None) -> Upstream:
        s = self.settings
        greeting = pp.parse_pop3(await conv.line())
        if not greeting.ok:
            raise UpstreamError(f"unexpected greeting: -ERR {greeting.text}")
        if s.tls == "starttls":
            reply = await self._pop3_command(conv, b"STLS\r\n")
            if not reply.ok:
                raise UpstreamError(f"STLS refused: {reply.text}")
            await self._starttls(conv)
        if s.forward_client_ip and remote_ip and await self._pop3_xclient(conv, greeting):
            reply = await self._pop3_command(conv, pp.pop3_xclient(remote_ip))
            if not reply.ok:
                raise UpstreamError(f"XCLIENT refused: {reply.text}")
        if s.login == "sasl_plain":
            reply = await self._pop3_command(
                conv, pp.pop3_auth_plain(user, s.master_user, self.password.value)
            )
        else:
            first, second = pp.pop3_user_pass(f"{user}{s.master_separator}{s.master_user}",
                                              self.password.value)  # fmt: skip
            reply = await self._pop3_command(conv, first)
            if reply.ok:
                reply = await self._pop3_command(conv, second)
        if not reply.ok:
            raise UpstreamError(f"master login for {user} refused: -ERR {reply.text}")
        return Upstream(conv.reader, conv.writer, reply.text)
