"""The webmail's IMAP side: one conversation per page (connect, LOGIN, the commands, LOGOUT)
over aioimaplib, against whatever IMAP server is configured — unless the previous page of the
same web session parked its logged-in conversation (``mailsvc.webmail.park``, ``imap_keep``
seconds): then the page checks it with NOOP and reuses it, saving the connection, greeting,
LOGIN and LOGOUT (about 10 ms of a 25 ms inbox page on Dovecot). A conversation that fails, or
a page that fails, is never parked; a parked one that does not answer is replaced, so a
restarted server costs one reconnect, not an error. No socket is held for a user idle for
longer than ``imap_keep``.

Every mailbox name and search text that reaches a command is quoted here; CR, LF and NUL are
refused (command injection). Responses are parsed defensively: a line that does not look as
expected is skipped, never trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aioimaplib

from mailsvc.webmail.config import WebmailSettings
from mailsvc.webmail.park import Park

TIMEOUT = 20.0
LOGOUT_TIMEOUT = 5.0
NOOP_TIMEOUT = 5.0
HEADER_FIELDS = "BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)]"
MAX_MESSAGE = 25 * 1024 * 1024
_LIST = re.compile(rb'^\((?P<flags>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (?P<name>.+)$')
_FETCH = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"UID (\d+)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class ImapError(Exception):
    """The IMAP server refused or failed (the page says so; nothing is retried silently)."""


class LoginFailed(ImapError):
    pass


@dataclass(frozen=True, slots=True)
class Folder:
    name: str
    special: str  # "\\Sent", "\\Trash", … or ""


@dataclass(frozen=True, slots=True)
class Summary:
    uid: int
    seen: bool
    size: int
    header: bytes  # the FROM/TO/SUBJECT/DATE header block


def quote(value: str) -> str:
    if any(c in value for c in "\r\n\0") or len(value) > 512:
        raise ImapError("refused: a mailbox name or search text with line breaks")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _ok(response: aioimaplib.Response, what: str) -> list[bytes]:
    if response.result != "OK":
        raise ImapError(f"{what}: {response.result}")
    return [bytes(line) for line in response.lines]


class Mailbox:
    """One logged-in IMAP conversation."""

    def __init__(self, client: aioimaplib.IMAP4) -> None:
        self._c = client
        self.selected = ""

    async def folders(self) -> list[Folder]:
        lines = _ok(await self._c.list('""', '"*"'), "LIST")
        out = []
        for line in lines:
            m = _LIST.match(line)
            if m is None:
                continue
            flags = m.group("flags").decode("ascii", "replace").split()
            if "\\Noselect" in flags or "\\NonExistent" in flags:
                continue
            special = next((f for f in flags if f in ("\\Sent", "\\Trash", "\\Drafts",
                                                        "\\Junk", "\\Archive")), "")  # fmt: skip
            out.append(Folder(_unquote(m.group("name")), special))
        out.sort(key=lambda f: (f.name.upper() != "INBOX", f.name.lower()))
        return out

    async def select(self, folder: str) -> int:
        """Select ``folder``; the number of messages in it."""
        lines = _ok(await self._c.select(quote(folder)), "SELECT")
        self.selected = folder
        for line in lines:
            parts = line.split()
            if len(parts) == 2 and parts[1] == b"EXISTS" and parts[0].isdigit():
                return int(parts[0])
        return 0

    async def _summaries(self, lines: list[bytes]) -> list[Summary]:
        out: list[Summary] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            if _FETCH.match(line):
                uid, flags, size = _UID.search(line), _FLAGS.search(line), _SIZE.search(line)
                header = lines[i + 1] if i + 1 < len(lines) else b""
                if uid is not None:
                    out.append(
                        Summary(
                            uid=int(uid.group(1)),
                            seen=flags is not None and b"\\Seen" in flags.group(1),
                            size=int(size.group(1)) if size else 0,
                            header=header if not _FETCH.match(header) else b"",
                        )
                    )
                i += 2
                continue
            i += 1
        out.sort(key=lambda s: s.uid, reverse=True)
        return out

    async def page(self, exists: int, page: int, size: int) -> list[Summary]:
        """Messages of the selected folder, newest first, page ``page`` (0 = newest)."""
        high = exists - page * size
        if high < 1:
            return []
        low = max(1, high - size + 1)
        response = await self._c.fetch(f"{low}:{high}", f"(UID FLAGS RFC822.SIZE {HEADER_FIELDS})")
        return await self._summaries(_ok(response, "FETCH"))

    async def search(self, text: str, limit: int) -> list[Summary]:
        lines = _ok(await self._c.uid_search("TEXT", quote(text), charset="UTF-8"), "SEARCH")
        uids: list[int] = []
        for line in lines[:-1]:  # the last line is the tagged completion text
            words = line.split()
            if words and words[0] == b"SEARCH":  # aioimaplib usually strips it already
                words = words[1:]
            if words and all(w.isdigit() for w in words):
                uids += [int(w) for w in words]
        uids = sorted(uids, reverse=True)[:limit]
        if not uids:
            return []
        response = await self._c.uid(
            "fetch", ",".join(map(str, uids)), f"(UID FLAGS RFC822.SIZE {HEADER_FIELDS})"
        )
        return await self._summaries(_ok(response, "FETCH"))

    async def message(self, uid: int) -> bytes:
        """The whole message (marks it seen)."""
        lines = _ok(await self._c.uid("fetch", str(uid), "(BODY[])"), "FETCH")
        for i, line in enumerate(lines):
            if _FETCH.match(line) and i + 1 < len(lines):
                return lines[i + 1][:MAX_MESSAGE]
        raise ImapError("no such message")

    async def move(self, uid: int, target: str) -> None:
        _ok(await self._c.uid("move", str(uid), quote(target)), "MOVE")

    async def delete(self, uid: int, trash: str | None) -> None:
        """To the Trash folder, or — in the Trash, or without one — for good."""
        if trash and trash != self.selected:
            await self.move(uid, trash)
            return
        _ok(await self._c.uid("store", str(uid), "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
        _ok(await self._c.uid("expunge", str(uid)), "EXPUNGE")

    async def append(self, folder: str, message: bytes) -> None:
        _ok(await self._c.append(message, mailbox=quote(folder), flags="(\\Seen)"), "APPEND")


async def _connect(settings: WebmailSettings, user: str, password: str) -> aioimaplib.IMAP4:
    if settings.imap_tls == "tls":
        context = ssl.create_default_context(cafile=settings.ca_file)
        context.check_hostname = settings.tls_check_hostname  # as for SMTP (a loopback name)
        client: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(
            host=settings.imap_host, port=settings.imap_port, ssl_context=context, timeout=TIMEOUT
        )
    else:
        client = aioimaplib.IMAP4(host=settings.imap_host, port=settings.imap_port, timeout=TIMEOUT)
    try:
        await client.wait_hello_from_server()
        response = await client.login(user, password)
        if response.result != "OK":
            raise LoginFailed("login refused")
    except BaseException:
        await close(client)
        raise
    return client


async def close(client: aioimaplib.IMAP4) -> None:
    """LOGOUT (bounded), then the socket, whatever state the conversation is in."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.logout(), LOGOUT_TIMEOUT)
    transport = getattr(getattr(client, "protocol", None), "transport", None)
    if transport is not None and not transport.is_closing():
        transport.close()  # a failed LOGOUT must not leave the socket to the collector


async def _alive(client: aioimaplib.IMAP4) -> bool:
    """Does a parked conversation still answer (NOOP)? The server may have logged it out."""
    try:
        response = await asyncio.wait_for(client.noop(), NOOP_TIMEOUT)
    except (OSError, TimeoutError, aioimaplib.Abort, aioimaplib.CommandTimeout):
        return False
    return bool(response.result == "OK")


@contextlib.asynccontextmanager
async def session(
    settings: WebmailSettings,
    user: str,
    password: str,
    *,
    park: Park | None = None,
    key: str = "",
) -> AsyncIterator[Mailbox]:
    """A logged-in conversation; LoginFailed when the server refuses the credentials. With a
    ``park`` and a ``key`` (the web session's id), the conversation parked there by the previous
    page is reused when it still answers, and this one is parked for the next page when the page
    succeeded (``mailsvc.webmail.park``); otherwise it ends with LOGOUT."""
    client = park.take(key) if park is not None and key else None
    if client is not None and not await _alive(client):
        await close(client)
        client = None
    try:
        if client is None:
            client = await _connect(settings, user, password)
        yield Mailbox(client)
    except (OSError, TimeoutError, aioimaplib.Abort) as exc:
        if client is not None:
            await close(client)
        raise ImapError(f"IMAP server: {type(exc).__name__}") from exc
    except BaseException:
        if client is not None:
            await close(client)
        raise
    if park is None or not key or not park.put(key, client):
        await close(client)
