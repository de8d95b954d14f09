"""One IMAP4rev1 session: an explicit state machine (RFC 3501 §3) with one command table per
state, over a :class:`~mailsvc.stream.Stream`.

================  =========================================================================
any state         CAPABILITY, NOOP, LOGOUT, ID
not authenticated STARTTLS, LOGIN, AUTHENTICATE (PLAIN, LOGIN; SASL-IR)
authenticated     SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB,
                  STATUS, APPEND, NAMESPACE, ENABLE, IDLE, GETQUOTA, GETQUOTAROOT
selected          the above plus CHECK, CLOSE, UNSELECT, EXPUNGE, SEARCH, FETCH, STORE, COPY,
                  MOVE and their UID forms, UID EXPUNGE
================  =========================================================================

CONDSTORE and QRESYNC (RFC 7162): ``ENABLE``, ``SELECT``/``EXAMINE`` parameters, ``STATUS
(HIGHESTMODSEQ)``, ``FETCH MODSEQ`` and ``(CHANGEDSINCE n [VANISHED])``, ``STORE (UNCHANGEDSINCE
n)``, ``SEARCH MODSEQ``; the syntax is in :mod:`mailsvc.imap.condstore`, the persistent values in
:mod:`mailsvc.mailbox.modseq`.

Limits: lines of 8 KiB and literals of 4 KiB before login (a larger non-synchronising literal
ends the session before a byte of it is read; a larger synchronising one is refused without
``+``), configurable after; three bad commands (failed logins included) before login end the
session, ``max_bad`` after; autologout after ``preauth_timeout`` / ``timeout`` of silence (30
minutes by default, also in IDLE). STARTTLS discards anything pipelined after it. A temporary
fault of idsvc or the store is ``NO [UNAVAILABLE]``, never an authentication failure.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import datetime as dt
import enum
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailsvc.access import LoginResult, MailAccess, Peer, Result, plain_response
from mailsvc.config import Settings
from mailsvc.imap import condstore as cs
from mailsvc.imap import fetch as fx
from mailsvc.imap import protocol as p
from mailsvc.imap.search import Candidate, parse_program
from mailsvc.imap.selected import Selected
from mailsvc.mailbox import names
from mailsvc.mailbox.account import Account, FolderExists, NoSuchFolder
from mailsvc.mailbox.flags import SYSTEM_FLAGS, TooManyKeywords, canonical, is_keyword
from mailsvc.mailbox.folder import Folder
from mailsvc.mailbox.mime import Part
from mailsvc.mailbox.mime import parse as parse_mime
from mailsvc.maildir import StoreError
from mailsvc.stream import Closed, LineTooLong, Stream

log = logging.getLogger("mailsvc.imap")

PREAUTH_LINE = 8192
PREAUTH_LITERAL = 4096
FETCH_BATCH = 200
QUOTA_ROOT = "User quota"
_DATE = re.compile(
    r"^ ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$"
)
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


@dataclass(frozen=True)
class ImapOptions:
    hostname: str = "localhost"
    allow_plaintext: bool = False
    timeout: float = 1800.0
    preauth_timeout: float = 60.0
    max_line: int = 65536
    max_literal: int = 52_428_800
    max_bad_preauth: int = 3
    max_bad: int = 20

    @classmethod
    def from_settings(cls, settings: Settings) -> ImapOptions:
        access = settings.access
        return cls(
            hostname=settings.smtp.hostname,
            allow_plaintext=access.allow_plaintext,
            timeout=access.imap_timeout,
            preauth_timeout=access.imap_preauth_timeout,
            max_line=access.imap_max_line,
            max_literal=access.imap_max_literal,
            max_bad=access.imap_max_bad_commands,
        )


class Bad(Exception):
    """A command the client got wrong: ``BAD``."""


class No(Exception):
    """A command that failed: ``NO`` (``code`` without brackets)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.code = code


class Bye(Exception):
    pass


Handler = Callable[["ImapSession", p.Command], Awaitable[str]]


def format_date(ts: float) -> str:
    t = dt.datetime.fromtimestamp(ts, dt.UTC)
    return f"{t.day:02d}-{MONTHS[t.month - 1]}-{t.year} {t:%H:%M:%S} +0000"


def parse_datetime(text: str) -> float:
    found = _DATE.match(text)
    if found is None or found.group(2).capitalize() not in MONTHS:
        raise Bad("bad date-time")
    day, mon, year, hh, mm, ss, sign, oh, om = found.groups()
    offset = dt.timedelta(hours=int(oh), minutes=int(om)) * (1 if sign == "+" else -1)
    try:
        when = dt.datetime(int(year), MONTHS.index(mon.capitalize()) + 1, int(day), int(hh),
                           int(mm), int(ss), tzinfo=dt.timezone(offset))  # fmt: skip
    except ValueError:
        raise Bad("bad date-time") from None
    return when.timestamp()


class ImapSession:
    def __init__(self, stream: Stream, access: MailAccess, options: ImapOptions) -> None:
        self.stream = stream
        self.access = access
        self.options = options
        self.state = State.NOT_AUTHENTICATED
        self.user: str | None = None
        self.account: Account | None = None
        self.selected: Selected | None = None
        self.bad = 0
        self.stream.timeout = options.preauth_timeout
        self._cache: dict[int, tuple[bytes, Part]] = {}
        self._cache_folder: Folder | None = None
        self.condstore = False  # RFC 7162: enabled by ENABLE or a CONDSTORE-enabling command
        self.qresync = False

    # --- plumbing ---------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        await self.stream.write(data)

    def capabilities(self) -> str:
        caps = ["IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE"]
        if self.state is State.NOT_AUTHENTICATED:
            if self.stream.tls is not None and not self.stream.secured:
                caps.append("STARTTLS")
            if self.plaintext_ok:
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            else:
                caps.append("LOGINDISABLED")
        else:
            caps += ["NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE"]
            caps += ["CONDSTORE", "QRESYNC", "BINARY"]
            caps += ["QUOTA", "QUOTA=RES-STORAGE", f"APPENDLIMIT={self.options.max_literal}"]
        return " ".join(caps)

    @property
    def plaintext_ok(self) -> bool:
        return self.stream.secured or self.options.allow_plaintext

    async def run(self) -> None:
        try:
            await self.send(f"* OK [CAPABILITY {self.capabilities()}] {self.options.hostname} "
                            "IMAP4rev1 ready\r\n".encode())  # fmt: skip
            while self.state is not State.LOGOUT:
                data = await self.read_command()
                if data is None:
                    continue
                await self.dispatch(data)
        except Bye as exc:
            with contextlib.suppress(Closed):
                await self.send(f"* BYE {exc}\r\n".encode())
        except Closed:
            pass
        except LineTooLong:
            with contextlib.suppress(Closed):
                await self.send(b"* BYE Line too long\r\n")
        finally:
            if self.user is not None:
                self.access.release(self.user, self.stream.remote_ip)

    async def read_command(self) -> bytes | None:
        authed = self.state is not State.NOT_AUTHENTICATED
        line_limit = self.options.max_line if authed else PREAUTH_LINE
        literal_limit = self.options.max_literal if authed else PREAUTH_LITERAL
        try:
            line = await self.stream.readline(line_limit)
        except Closed:
            if self.state is not State.LOGOUT:
                with contextlib.suppress(Closed):
                    await self.send(b"* BYE Autologout; idle for too long\r\n")
            raise
        buf = bytearray(line)
        total = 0
        while (found := p.literal_at_end(line)) is not None:
            size, nonsync = found
            total += size
            if total > literal_limit:
                if nonsync:
                    raise Bye("Literal too large")  # cannot skip it safely: end the session
                tag = bytes(buf).split(b" ", 1)[0].decode("ascii", "replace")
                await self.send(f"{tag} BAD [TOOBIG] Literal too large\r\n".encode())
                await self.count_bad()
                return None
            if not nonsync:
                await self.send(b"+ Ready for literal data\r\n")
            data = await self.stream.readexactly(size)
            line = await self.stream.readline(line_limit)
            buf += b"\r\n" + data + line
            if len(buf) > literal_limit + line_limit * 4:
                raise Bye("Command too long")
        return bytes(buf)

    async def count_bad(self) -> None:
        self.bad += 1
        limit = self.options.max_bad if self.state is not State.NOT_AUTHENTICATED else \
            self.options.max_bad_preauth  # fmt: skip
        if self.bad >= limit:
            raise Bye("Too many invalid commands")

    async def dispatch(self, data: bytes) -> None:
        try:
            command = p.parse_command(data)
        except p.ParseError as exc:
            await self.send(f"{exc.tag or '*'} BAD {exc}\r\n".encode())
            await self.count_bad()
            return
        handler = COMMANDS[self.state].get(command.name)
        tag = command.tag
        if handler is None:
            known = any(command.name in table for table in COMMANDS.values())
            await self.send(f"{tag} BAD {'Command not allowed now' if known else 'Unknown command'}"
                            "\r\n".encode())  # fmt: skip
            await self.count_bad()
            return
        try:
            text = await handler(self, command)
        except _Silent:
            return
        except (Bad, p.ParseError, fx.BadSection, ValueError) as exc:
            await self.flush_updates(allow_expunge=False)
            await self.send(f"{tag} BAD {exc or 'Invalid arguments'}\r\n".encode())
            await self.count_bad()
            return
        except No as exc:
            await self.flush_updates(allow_expunge=True)
            code = f"[{exc.code}] " if exc.code else ""
            await self.send(f"{tag} NO {code}{exc}\r\n".encode())
            return
        except (StoreError, OSError) as exc:
            log.error("imap %s for %s: %s", command.name, self.user, exc)
            await self.send(f"{tag} NO [UNAVAILABLE] Temporary failure, try again\r\n".encode())
            return
        if self.state is State.LOGOUT:
            await self.send(f"{tag} OK {text}\r\n".encode())
            return
        await self.flush_updates(allow_expunge=command.name not in ("FETCH", "STORE", "SEARCH"))
        await self.send(f"{tag} OK {text}\r\n".encode())

    async def flush_updates(self, *, allow_expunge: bool) -> None:
        sel = self.selected
        if sel is None:
            return
        try:
            await self.access.run(sel.folder.sync, move_new=not sel.readonly)
        except (StoreError, OSError) as exc:
            log.warning("imap sync: %s", exc)
            return
        out = sel.updates(allow_expunge=allow_expunge)
        if out:
            await self.send(b"".join(out))

    def need_account(self) -> Account:
        assert self.account is not None
        return self.account

    def need_selected(self) -> Selected:
        assert self.selected is not None
        return self.selected

    # --- any state ------------------------------------------------------------------------

    async def capability(self, command: p.Command) -> str:
        await self.send(f"* CAPABILITY {self.capabilities()}\r\n".encode())
        return "Capability completed"

    async def noop(self, command: p.Command) -> str:
        return "NOOP completed"

    async def logout(self, command: p.Command) -> str:
        await self.send(b"* BYE Logging out\r\n")
        self.state = State.LOGOUT
        return "Logout completed"

    async def id_(self, command: p.Command) -> str:
        await self.send(b'* ID ("name" "mailsvc")\r\n')
        return "ID completed"

    # --- not authenticated ------------------------------------------------------------

    async def starttls(self, command: p.Command) -> str:
        if self.stream.tls is None or self.stream.secured:
            raise Bad("TLS not available")
        await self.send(f"{command.tag} OK Begin TLS negotiation now\r\n".encode())
        await self.stream.start_tls()  # discards anything pipelined after STARTTLS
        raise _Silent()

    def peer(self) -> Peer:
        return Peer(self.stream.local_ip, self.stream.remote_ip, self.stream.secured)

    async def login(self, command: p.Command) -> str:
        if len(command.args) != 2:
            raise Bad("LOGIN needs a user name and a password")
        if not self.plaintext_ok:
            raise No("Plaintext authentication disallowed on non-secure connections",
                     "PRIVACYREQUIRED")  # fmt: skip
        user, password = p.as_text(command.args[0]), p.as_text(command.args[1])

        async def no_challenge(_: bytes) -> bytes | None:
            return None

        result = await self.access.login("PLAIN", self.peer(), respond=no_challenge,
                                         initial=plain_response(user, password))  # fmt: skip
        return await self.finish_login(result)

    async def authenticate(self, command: p.Command) -> str:
        if not command.args or len(command.args) > 2:
            raise Bad("AUTHENTICATE needs a mechanism")
        mechanism = p.as_atom(command.args[0]).upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            raise No("Unsupported authentication mechanism")
        if not self.plaintext_ok:
            raise No("Plaintext authentication disallowed on non-secure connections",
                     "PRIVACYREQUIRED")  # fmt: skip
        initial: bytes | None = None
        if len(command.args) == 2:
            initial = _b64(p.as_string(command.args[1]).decode("ascii", "replace"))
            if initial is None:
                raise Bad("Invalid base64 in the initial response")
        aborted = False

        async def respond(challenge: bytes) -> bytes | None:
            nonlocal aborted
            await self.send(b"+ " + base64.b64encode(challenge) + b"\r\n")
            line = await self.stream.readline(PREAUTH_LINE)
            if line == b"*":
                aborted = True
                return None
            return _b64(line.decode("ascii", "replace"))

        result = await self.access.login(mechanism, self.peer(), respond=respond, initial=initial)
        if result.result is Result.ABORTED:
            if aborted:
                raise Bad("Authentication aborted")
            raise Bad("Invalid base64 in the response")
        return await self.finish_login(result)

    async def finish_login(self, result: LoginResult) -> str:
        if result.result is Result.UNAVAILABLE:
            raise No("Temporary authentication failure, try again later", "UNAVAILABLE")
        if result.result is Result.NO_MECHANISM:
            raise No("Unsupported authentication mechanism")
        if result.result is not Result.OK or result.account is None or result.user is None:
            await self.count_bad()
            raise No("Authentication failed.", "AUTHENTICATIONFAILED")
        if not self.access.claim(result.user, self.stream.remote_ip):
            raise No("Maximum number of connections from user+IP exceeded", "UNAVAILABLE")
        self.user, self.account = result.user, result.account
        self.state = State.AUTHENTICATED
        self.bad = 0
        self.stream.timeout = self.options.timeout
        return f"[CAPABILITY {self.capabilities()}] Logged in"

    # --- authenticated ------------------------------------------------------------------

    def mailbox_name(self, token: p.Token) -> str:
        raw = p.as_string(token)
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise No("Mailbox name is not modified UTF-7", "CANNOT") from None
        try:
            names.mutf7_decode(text)
        except names.BadFolderName as exc:
            raise No(str(exc), "CANNOT") from None
        return names.normalise(text)

    async def open_folder(self, name: str) -> Folder:
        account = self.need_account()
        try:
            return await self.access.run(account.folder, name)
        except NoSuchFolder:
            raise No("Mailbox doesn't exist: " + name, "NONEXISTENT") from None
        except names.BadFolderName as exc:
            raise No(str(exc), "CANNOT") from None

    async def select(self, command: p.Command) -> str:
        return await self._select(command, readonly=False)

    async def examine(self, command: p.Command) -> str:
        return await self._select(command, readonly=True)

    async def _select(self, command: p.Command, *, readonly: bool) -> str:
        if len(command.args) not in (1, 2):
            raise Bad("SELECT needs a mailbox name")
        params = cs.parse_select_params(command.args[1]) if len(command.args) == 2 else \
            cs.SelectParams()  # fmt: skip
        if params.qresync is not None and not self.qresync:
            raise Bad("QRESYNC is not enabled")
        if self.selected is not None and self.qresync:
            await self.send(b"* OK [CLOSED] Previous mailbox closed.\r\n")
        self.selected = None
        self.state = State.AUTHENTICATED
        folder = await self.open_folder(self.mailbox_name(command.args[0]))
        await self.access.run(folder.sync, move_new=not readonly)
        if params.condstore:
            self.condstore = True
        with folder.lock:
            sel = Selected(folder, readonly, list(folder.sorted_uids), modseq=folder.modseq,
                           condstore=self.condstore, qresync=self.qresync)  # fmt: skip
            keywords = [k for k in folder.keywords if k]
            resync = self.resync(sel, params.qresync) if params.qresync is not None else b""
        if not readonly:
            sel.recent = await self.access.run(folder.claim_recent)
        first_unseen = next((i for i, uid in enumerate(sel.uids, 1)
                             if "\\Seen" not in sel.flags_of(uid)), None)  # fmt: skip
        flags = " ".join([*SYSTEM_FLAGS, *keywords])
        lines = [
            f"* FLAGS ({flags})",
            f"* OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted."
            if not readonly else "* OK [PERMANENTFLAGS ()] Read-only mailbox.",
            f"* {sel.exists} EXISTS",
            f"* {len(sel.recent)} RECENT",
        ]  # fmt: skip
        if first_unseen is not None:
            lines.append(f"* OK [UNSEEN {first_unseen}] First unseen.")
        lines += [f"* OK [UIDVALIDITY {folder.uidvalidity}] UIDs valid",
                  f"* OK [UIDNEXT {folder.next_uid}] Predicted next UID"]  # fmt: skip
        if self.condstore:
            lines.append(f"* OK [HIGHESTMODSEQ {sel.modseq}] Highest")
        await self.send(("\r\n".join(lines) + "\r\n").encode() + resync)
        self.selected = sel
        self.state = State.SELECTED
        return "[READ-ONLY] Examine completed" if readonly else "[READ-WRITE] Select completed"

    def resync(self, sel: Selected, params: cs.Qresync) -> bytes:
        """QRESYNC (RFC 7162): what changed since ``params.modseq`` among the UIDs the
        client knows — ``VANISHED (EARLIER)``, then FETCH for changed messages (folder lock
        held)."""
        folder = sel.folder
        if params.uidvalidity != folder.uidvalidity:
            return b""
        known = params.known_uids
        top = folder.next_uid - 1
        out = self.vanished_since(sel, params.modseq, known, top)
        for msn, uid in enumerate(sel.uids, 1):
            msg = folder.messages.get(uid)
            if msg is None or msg.modseq <= params.modseq:
                continue
            if known is not None and not known.contains(uid, top):
                continue
            out += b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n" % (
                msn, uid, p.flag_list(sel.flags_of(uid)), msg.modseq)  # fmt: skip
        return out

    def vanished_since(
        self, sel: Selected, modseq: int, uid_set: p.SequenceSet | None, top: int
    ) -> bytes:
        """``VANISHED (EARLIER)`` for UIDs of ``uid_set`` (all when None) expunged after
        ``modseq``; below the folder's memory of expunges, every such UID that no longer
        exists (the conservative answer RFC 7162 allows). Folder lock held."""
        folder = sel.folder
        wanted = uid_set or p.SequenceSet(((1, None),))
        if modseq >= folder.vanished_floor:
            gone = sorted(u for u, m in folder.vanished.items()
                          if m > modseq and wanted.contains(u, top))  # fmt: skip
            return cs.vanished(gone, earlier=True)
        ranges = list(cs.missing_ranges(wanted.resolve(top), folder.sorted_uids, top))
        if not ranges:
            return b""
        return f"* VANISHED (EARLIER) {cs.format_ranges(ranges)}\r\n".encode()

    async def enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162): from now on, MODSEQ everywhere; in
        the selected state the client learns HIGHESTMODSEQ at once."""
        if self.condstore:
            return
        self.condstore = True
        sel = self.selected
        if sel is not None:
            sel.condstore = True
            with sel.folder.lock:
                highest = sel.folder.modseq
            await self.send(f"* OK [HIGHESTMODSEQ {highest}] Highest\r\n".encode())

    async def create(self, command: p.Command) -> str:
        if len(command.args) != 1:
            raise Bad("CREATE needs a mailbox name")
        name = self.mailbox_name(command.args[0])
        try:
            await self.access.run(self.need_account().create, name)
        except FolderExists:
            raise No("Mailbox already exists", "ALREADYEXISTS") from None
        except names.BadFolderName as exc:
            raise No(str(exc), "CANNOT") from None
        return "Create completed"

    async def delete(self, command: p.Command) -> str:
        if len(command.args) != 1:
            raise Bad("DELETE needs a mailbox name")
        name = self.mailbox_name(command.args[0])
        if names.is_inbox(name):
            raise No("INBOX cannot be deleted", "CANNOT")
        if self.selected is not None and self.selected.folder.name == name:
            self.selected, self.state = None, State.AUTHENTICATED
        try:
            await self.access.run(self.need_account().delete, name)
        except NoSuchFolder:
            raise No("Mailbox doesn't exist", "NONEXISTENT") from None
        except names.BadFolderName as exc:
            raise No(str(exc), "CANNOT") from None
        return "Delete completed"

    async def rename(self, command: p.Command) -> str:
        if len(command.args) != 2:
            raise Bad("RENAME needs two mailbox names")
        old, new = self.mailbox_name(command.args[0]), self.mailbox_name(command.args[1])
        try:
            await self.access.run(self.need_account().rename, old, new)
        except NoSuchFolder:
            raise No("Mailbox doesn't exist", "NONEXISTENT") from None
        except FolderExists:
            raise No("Target mailbox already exists", "ALREADYEXISTS") from None
        except names.BadFolderName as exc:
            raise No(str(exc), "CANNOT") from None
        except StoreError as exc:
            raise No(str(exc), "CANNOT") from None
        return "Rename completed"

    async def subscribe(self, command: p.Command) -> str:
        return await self._subscribe(command, True)

    async def unsubscribe(self, command: p.Command) -> str:
        return await self._subscribe(command, False)

    async def _subscribe(self, command: p.Command, on: bool) -> str:
        if len(command.args) != 1:
            raise Bad("mailbox name expected")
        name = self.mailbox_name(command.args[0])
        await self.access.run(self.need_account().subscribe, name, on)
        return ("Subscribe" if on else "Unsubscribe") + " completed"

    async def list_(self, command: p.Command) -> str:
        args = list(command.args)
        select_opts: set[str] = set()
        if args and isinstance(args[0], list):
            select_opts = {p.as_atom(x).upper() for x in p.as_list(args.pop(0))}
        if len(args) >= 3 and isinstance(args[-2], p.Atom) and args[-2].upper() == "RETURN":
            args = args[:-2]
        if len(args) != 2:
            raise Bad("LIST needs a reference and a pattern")
        reference = p.as_string(args[0]).decode("ascii", "replace")
        patterns = [p.as_string(x).decode("ascii", "replace") for x in
                    (args[1] if isinstance(args[1], list) else [args[1]])]  # fmt: skip
        account = self.need_account()
        if patterns == [""]:
            await self.send(b'* LIST (\\Noselect) "." ""\r\n')
            return "List completed"
        folders = await self.access.run(account.folders)
        subscribed = set(await self.access.run(account.subscriptions))
        out = []
        for info in folders:
            if not any(_matches(reference + pat, info.name) for pat in patterns):
                continue
            attrs = list(info.attributes)
            if "SUBSCRIBED" in select_opts:
                if info.name not in subscribed:
                    continue
                attrs.append("\\Subscribed")
            if "SPECIAL-USE" in select_opts and len(attrs) < 2:
                continue
            out.append(f"* LIST ({' '.join(attrs)}) \".\" ".encode() + p.astring(info.name) +
                       b"\r\n")  # fmt: skip
        await self.send(b"".join(out))
        return "List completed"

    async def lsub(self, command: p.Command) -> str:
        if len(command.args) != 2:
            raise Bad("LSUB needs a reference and a pattern")
        reference = p.as_string(command.args[0]).decode("ascii", "replace")
        pattern = p.as_string(command.args[1]).decode("ascii", "replace")
        subscribed = await self.access.run(self.need_account().subscriptions)
        out = [b'* LSUB () "." ' + p.astring(name) + b"\r\n" for name in subscribed
               if _matches(reference + pattern, name)]  # fmt: skip
        await self.send(b"".join(dict.fromkeys(out)))
        return "Lsub completed"

    async def status(self, command: p.Command) -> str:
        if len(command.args) != 2:
            raise Bad("STATUS needs a mailbox and a list of items")
        name = self.mailbox_name(command.args[0])
        items = [p.as_atom(x).upper() for x in p.as_list(command.args[1])]
        folder = await self.open_folder(name)
        await self.access.run(folder.sync, move_new=False)
        if "HIGHESTMODSEQ" in items:
            await self.enable_condstore()
        values: list[str] = []
        with folder.lock:
            for item in items:
                if item == "MESSAGES":
                    values.append(f"MESSAGES {len(folder.sorted_uids)}")
                elif item == "RECENT":
                    recent = sum(1 for u in folder.sorted_uids if u >= folder.recent_floor)
                    values.append(f"RECENT {recent}")
                elif item == "UIDNEXT":
                    values.append(f"UIDNEXT {folder.next_uid}")
                elif item == "UIDVALIDITY":
                    values.append(f"UIDVALIDITY {folder.uidvalidity}")
                elif item == "UNSEEN":
                    unseen = sum(1 for m in folder.messages.values() if "\\Seen" not in m.flags)
                    values.append(f"UNSEEN {unseen}")
                elif item == "HIGHESTMODSEQ":
                    values.append(f"HIGHESTMODSEQ {folder.modseq}")
                else:
                    raise Bad(f"unknown STATUS item {item}")
        await self.send(b"* STATUS " + p.astring(name) + f" ({' '.join(values)})\r\n".encode())
        return "Status completed"

    async def append(self, command: p.Command) -> str:
        args = list(command.args)
        if len(args) < 2:
            raise Bad("APPEND needs a mailbox and a message")
        name = self.mailbox_name(args.pop(0))
        flags: frozenset[str] = frozenset()
        when: float | None = None
        if args and isinstance(args[0], list):
            flags = _flags(p.as_list(args.pop(0)))
        if len(args) == 2:
            when = parse_datetime(p.as_string(args.pop(0)).decode("ascii", "replace"))
        if len(args) != 1 or not isinstance(args[0], bytes):
            raise Bad("APPEND needs one message literal")
        message = args[0]
        if not message:
            raise No("Empty message", "CANNOT")
        account = self.need_account()
        try:
            folder = await self.open_folder(name)
        except No:
            raise No("Mailbox doesn't exist", "TRYCREATE") from None
        if await self.access.run(account.over_quota, len(message)):
            raise No("Quota exceeded", "OVERQUOTA")
        try:
            done = await self.access.run(folder.append, message, flags, when)
        except TooManyKeywords:
            raise No("Too many keywords in this mailbox", "LIMIT") from None
        await self.access.run(account.root.quota_add, account.quota, len(message), 1)
        return f"[APPENDUID {folder.uidvalidity} {done.uid}] Append completed"

    async def namespace(self, command: p.Command) -> str:
        await self.send(b'* NAMESPACE (("" ".")) NIL NIL\r\n')
        return "Namespace completed"

    async def enable(self, command: p.Command) -> str:
        if not command.args:
            raise Bad("ENABLE needs capabilities")
        enabled: list[str] = []
        for token in command.args:
            name = p.as_atom(token).upper()
            if name == "CONDSTORE":  # listed even when already on, as Dovecot does
                enabled.append(name)
                await self.enable_condstore()
            elif name == "QRESYNC":
                enabled.append(name)
                self.qresync = True
                await self.enable_condstore()
                if self.selected is not None:
                    self.selected.qresync = True
        await self.send(("* ENABLED" + "".join(f" {e}" for e in enabled) + "\r\n").encode())
        return "Enabled"

    async def getquotaroot(self, command: p.Command) -> str:
        if len(command.args) != 1:
            raise Bad("GETQUOTAROOT needs a mailbox")
        name = self.mailbox_name(command.args[0])
        await self.open_folder(name)
        await self.send(b"* QUOTAROOT " + p.astring(name) + f' "{QUOTA_ROOT}"\r\n'.encode())
        await self.send_quota()
        return "Getquotaroot completed"

    async def getquota(self, command: p.Command) -> str:
        if len(command.args) != 1 or p.as_text(command.args[0]) != QUOTA_ROOT:
            raise No("No such quota root", "NONEXISTENT")
        await self.send_quota()
        return "Getquota completed"

    async def send_quota(self) -> None:
        account = self.need_account()
        if account.quota.unlimited:
            await self.send(f'* QUOTA "{QUOTA_ROOT}" ()\r\n'.encode())
            return
        usage = await self.access.run(account.usage)
        used, limit = usage.bytes // 1024, account.quota.bytes // 1024
        await self.send(f'* QUOTA "{QUOTA_ROOT}" (STORAGE {used} {limit})\r\n'.encode())

    async def idle(self, command: p.Command) -> str:
        await self.send(b"+ idling\r\n")
        sel = self.selected
        changed = asyncio.Event()
        loop = asyncio.get_running_loop()

        def poke() -> None:
            loop.call_soon_threadsafe(changed.set)

        if sel is not None:
            sel.folder.watchers.append(poke)
        reader = asyncio.create_task(self.stream.readline(PREAUTH_LINE))
        deadline = time.monotonic() + self.options.timeout
        try:
            while True:
                waiter = asyncio.create_task(changed.wait())
                done, _ = await asyncio.wait({reader, waiter}, timeout=2.0,
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                waiter.cancel()
                changed.clear()
                if reader in done:
                    line = reader.result()
                    if line.upper() != b"DONE":
                        raise Bad("expected DONE")
                    return "Idle completed"
                if time.monotonic() > deadline:
                    raise Bye("Autologout; idle for too long")
                await self.flush_updates(allow_expunge=True)
        finally:
            if sel is not None:
                with contextlib.suppress(ValueError):
                    sel.folder.watchers.remove(poke)
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Closed, LineTooLong):
                    await reader

    # --- selected -----------------------------------------------------------------------

    async def check(self, command: p.Command) -> str:
        return "Check completed"

    async def close(self, command: p.Command) -> str:
        sel = self.need_selected()
        if not sel.readonly:
            deleted = [u for u in sel.uids if "\\Deleted" in sel.flags_of(u)]
            if deleted:
                await self.access.run(sel.folder.expunge, deleted, self.need_account().quota)
        self.selected, self.state = None, State.AUTHENTICATED
        return "Close completed"

    async def unselect(self, command: p.Command) -> str:
        self.selected, self.state = None, State.AUTHENTICATED
        return "Unselect completed"

    async def expunge(self, command: p.Command) -> str:
        return await self._expunge(None)

    async def uid_expunge(self, command: p.Command) -> str:
        if len(command.args) != 1:
            raise Bad("UID EXPUNGE needs a UID set")
        return await self._expunge(p.parse_sequence(p.as_atom(command.args[0])))

    async def _expunge(self, uid_set: p.SequenceSet | None) -> str:
        sel = self.need_selected()
        if sel.readonly:
            raise No("Mailbox is read-only", "READ-ONLY")
        top = sel.uids[-1] if sel.uids else 0
        deleted = [u for u in sel.uids if "\\Deleted" in sel.flags_of(u)
                   and (uid_set is None or uid_set.contains(u, top))]  # fmt: skip
        if deleted:
            await self.access.run(sel.folder.expunge, deleted, self.need_account().quota)
        if self.condstore:  # RFC 7162 (once the untagged responses went out)
            await self.flush_updates(allow_expunge=True)
            with sel.folder.lock:
                highest = sel.folder.modseq
            return f"[HIGHESTMODSEQ {highest}] Expunge completed"
        return "Expunge completed"

    def resolve(self, text: str, *, uid: bool) -> list[int]:
        """The UIDs a sequence set names (MSNs or UIDs), in ascending order."""
        sel = self.need_selected()
        seq = p.parse_sequence(text)
        if not uid:
            out: list[int] = []
            for lo, hi in seq.resolve(sel.exists):
                if lo < 1 or hi > sel.exists:
                    raise Bad("Invalid message sequence number")
                out.extend(sel.uids[lo - 1 : hi])
            return sorted(set(out))
        top = sel.uids[-1] if sel.uids else 0
        found: set[int] = set()
        for lo, hi in seq.resolve(top):
            start = bisect.bisect_left(sel.uids, lo)
            end = bisect.bisect_right(sel.uids, hi)
            found.update(sel.uids[start:end])
        return sorted(found)

    async def fetch(self, command: p.Command) -> str:
        return await self._fetch(command, uid=False)

    async def uid_fetch(self, command: p.Command) -> str:
        return await self._fetch(command, uid=True)

    async def _fetch(self, command: p.Command, *, uid: bool) -> str:
        if len(command.args) not in (2, 3):
            raise Bad("FETCH needs a sequence set and items")
        sel = self.need_selected()
        mods = cs.parse_fetch_modifiers(command.args[2]) if len(command.args) == 3 else \
            cs.FetchModifiers()  # fmt: skip
        if mods.vanished and not (uid and self.qresync):
            raise Bad("VANISHED needs UID FETCH with QRESYNC enabled")
        set_text = p.as_atom(command.args[0])
        uids = self.resolve(set_text, uid=uid)
        items = _fetch_items(command.args[1], uid)
        if mods.changedsince is not None or any(i.name == "MODSEQ" for i in items):
            await self.enable_condstore()
        if mods.changedsince is not None and not any(i.name == "MODSEQ" for i in items):
            items.append(FetchItem("MODSEQ"))
        if mods.changedsince is not None:
            since = mods.changedsince
            folder = sel.folder
            early = b""
            with folder.lock:  # a thread lock: nothing awaited while holding it
                if mods.vanished:
                    top = folder.next_uid - 1
                    early = self.vanished_since(sel, since, p.parse_sequence(set_text), top)
                uids = [u for u in uids if (m := folder.messages.get(u)) and m.modseq > since]
            if early:
                await self.send(early)
        batch_size = FETCH_BATCH * 10 if all(i.name in _CHEAP for i in items) else FETCH_BATCH
        for start in range(0, len(uids), batch_size):
            batch = uids[start : start + batch_size]
            data = await self.access.run(self.render, sel, batch, items)
            if data:
                await self.send(data)
        return "Fetch completed"

    def load(self, folder: Folder, uid: int, box: int | None = None) -> tuple[bytes, Part]:
        """The message and its MIME structure (parsed once, cached for the last few)."""
        if self._cache_folder is not folder:
            self._cache.clear()
            self._cache_folder = folder
        hit = self._cache.get(uid)
        if hit is None:
            raw = folder.read(uid, box=box)
            hit = (raw, parse_mime(raw))
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            self._cache[uid] = hit
        return hit

    def render(self, sel: Selected, uids: list[int], items: list[FetchItem]) -> bytes:
        """FETCH responses for ``uids`` (worker thread): one directory descriptor for the
        batch; message files are read only for items that need them, and parsed only for
        items that need the MIME structure."""
        out = bytearray()
        folder = sel.folder
        messages = folder.messages
        sets_seen = not sel.readonly and any(i.sets_seen for i in items)
        has_flags = any(i.name == "FLAGS" for i in items)
        needs_file = any(i.name not in _CHEAP for i in items)
        with contextlib.ExitStack() as stack:
            box = stack.enter_context(folder.dirfd()) if needs_file else None
            for uid, msn in zip(uids, sel.msns(uids), strict=True):
                msg = messages.get(uid)
                if msn is None or msg is None:
                    continue
                try:
                    parts: list[bytes] = []
                    if sets_seen and "\\Seen" not in msg.flags:
                        with folder.lock:
                            done = folder.store_flags([uid], "+FLAGS", _SEEN)
                            if done.modseq and sel.modseq == done.previous:
                                sel.modseq = done.modseq  # answered here, not again later
                        if not has_flags:
                            parts.append(b"FLAGS " + p.flag_list(sel.flags_of(uid)))
                    raw: bytes | None = None
                    for item in items:
                        name = item.name
                        if name == "UID":
                            parts.append(b"UID %d" % uid)
                        elif name == "FLAGS":
                            flags = msg.flags | _RECENT if uid in sel.recent else msg.flags
                            parts.append(b"FLAGS " + p.flag_list(flags))
                        elif name == "RFC822.SIZE" and msg.size is not None:
                            parts.append(b"RFC822.SIZE %d" % msg.size)
                        elif name == "MODSEQ":
                            parts.append(b"MODSEQ (%d)" % msg.modseq)
                        elif name in _CHEAP:
                            parts.append(self.render_item(sel, uid, item))
                        elif (item.section is not None and not item.section.path and \
                                item.section.text == "") or name == "RFC822":  # fmt: skip
                            if raw is None:
                                cached = self._cache.get(uid) if self._cache_folder is folder \
                                    else None  # fmt: skip
                                raw = cached[0] if cached else folder.read(uid, box=box)
                            parts.append(_whole(item, raw))
                        else:
                            parts.append(self.render_item(sel, uid, item, box))
                except FileNotFoundError:
                    continue  # expunged meanwhile: reported by the next EXPUNGE
                out += b"* %d FETCH (" % msn + b" ".join(parts) + b")\r\n"
        return bytes(out)

    def render_item(
        self, sel: Selected, uid: int, item: FetchItem, box: int | None = None
    ) -> bytes:
        folder = sel.folder
        name = item.name
        if name == "UID":
            return b"UID %d" % uid
        if name == "FLAGS":
            return b"FLAGS " + p.flag_list(sel.flags_of(uid))
        if name == "INTERNALDATE":
            return f'INTERNALDATE "{format_date(folder.internaldate(uid))}"'.encode()
        if name == "RFC822.SIZE":
            return b"RFC822.SIZE %d" % folder.size(uid)
        if name == "MODSEQ":
            msg = folder.get(uid)
            return b"MODSEQ (%d)" % (msg.modseq if msg is not None else 0)
        raw, root = self.load(folder, uid, box)
        if name == "ENVELOPE":
            return b"ENVELOPE " + fx.envelope(raw, root)
        if name in ("BODYSTRUCTURE", "BODY"):
            return name.encode() + b" " + fx.bodystructure(raw, root, extended=name != "BODY")
        if name == "RFC822":
            return b"RFC822 " + fx.literal(raw)
        if name == "RFC822.HEADER":
            return b"RFC822.HEADER " + fx.literal(root.header_bytes(raw))
        if name == "RFC822.TEXT":
            return b"RFC822.TEXT " + fx.literal(root.body_bytes(raw))
        if name in ("BINARY[]", "BINARY.SIZE"):
            try:
                data, decoded = fx.binary_section(raw, root, item.path)
            except fx.UnknownCte:
                raise No("Unknown Content-Transfer-Encoding", "UNKNOWN-CTE") from None
            except fx.BadEncoding:
                raise No("Invalid data in MIME part", "PARSE") from None
            if name == "BINARY.SIZE":
                return f"{item.label} {len(data)}".encode()
            # a literal8 for decoded content (as Dovecot) and for any NUL (never in a literal)
            return _with_partial(item, data, binary=decoded or b"\x00" in data)
        assert item.section is not None
        data = fx.section_bytes(raw, root, item.section) or b""
        return _with_partial(item, data)

    async def store(self, command: p.Command) -> str:
        return await self._store(command, uid=False)

    async def uid_store(self, command: p.Command) -> str:
        return await self._store(command, uid=True)

    async def _store(self, command: p.Command, *, uid: bool) -> str:
        args = list(command.args)
        unchanged_since: int | None = None
        if len(args) == 4:
            unchanged_since = cs.parse_store_modifiers(args.pop(1))
        if len(args) != 3:
            raise Bad("STORE needs a sequence set, an action and flags")
        sel = self.need_selected()
        await self.flush_updates(allow_expunge=False)
        uids = self.resolve(p.as_atom(args[0]), uid=uid)
        action = p.as_atom(args[1]).upper()
        silent = action.endswith(".SILENT")
        action = action.removesuffix(".SILENT")
        if action not in ("FLAGS", "+FLAGS", "-FLAGS"):
            raise Bad("unknown STORE action")
        raw_flags = args[2]
        flags = _flags(raw_flags if isinstance(raw_flags, list) else [raw_flags])
        if sel.readonly:
            raise No("Mailbox is read-only", "READ-ONLY")
        if unchanged_since is not None:
            await self.enable_condstore()
        folder = sel.folder
        if "\\Recent" in flags and action == "-FLAGS":
            sel.recent -= set(uids)
        try:
            result = await self.access.run(folder.store_flags, uids, action, flags,
                                           unchanged_since)  # fmt: skip
        except TooManyKeywords:
            raise No("Too many keywords in this mailbox", "LIMIT") from None
        with folder.lock:
            if result.modseq and sel.modseq == result.previous:
                sel.modseq = result.modseq  # only our own changes: answered below, not again
        refused = set(result.refused)
        changed = set(result.changed)
        out = []
        for u in uids:
            msn = sel.msn(u)
            msg = folder.get(u)
            if msn is None or msg is None or u in refused:
                continue
            if self.condstore and u not in changed:
                continue  # nothing changed, no new MODSEQ to tell (Dovecot answers nothing)
            if silent and not self.condstore:
                continue
            with_uid = b"UID %d " % u if uid or self.qresync else b""
            if silent:  # RFC 7162: the new MODSEQ even when silent
                out.append(b"* %d FETCH (%sMODSEQ (%d))\r\n" % (msn, with_uid, msg.modseq))
            elif self.condstore:
                flag_text = p.flag_list(sel.flags_of(u))
                out.append(b"* %d FETCH (%sFLAGS %s MODSEQ (%d))\r\n"
                           % (msn, with_uid, flag_text, msg.modseq))  # fmt: skip
            else:
                extra = b" UID %d" % u if uid else b""
                flag_text = p.flag_list(sel.flags_of(u))
                out.append(b"* %d FETCH (FLAGS %s%s)\r\n" % (msn, flag_text, extra))
        await self.send(b"".join(out))
        if refused:
            numbers = sorted(refused) if uid else sorted(sel.msn(u) or 0 for u in refused)
            return f"[MODIFIED {p.compact_set(numbers)}] Conditional STORE failed"
        return "Store completed"

    async def copy(self, command: p.Command) -> str:
        return await self._copy(command, uid=False, move=False)

    async def uid_copy(self, command: p.Command) -> str:
        return await self._copy(command, uid=True, move=False)

    async def move(self, command: p.Command) -> str:
        return await self._copy(command, uid=False, move=True)

    async def uid_move(self, command: p.Command) -> str:
        return await self._copy(command, uid=True, move=True)

    async def _copy(self, command: p.Command, *, uid: bool, move: bool) -> str:
        if len(command.args) != 2:
            raise Bad("COPY needs a sequence set and a mailbox")
        sel = self.need_selected()
        if move and sel.readonly:
            raise No("Mailbox is read-only", "READ-ONLY")
        uids = self.resolve(p.as_atom(command.args[0]), uid=uid)
        name = self.mailbox_name(command.args[1])
        account = self.need_account()
        try:
            target = await self.open_folder(name)
        except No:
            raise No("Mailbox doesn't exist", "TRYCREATE") from None
        source = sel.folder
        total = sum([await self.access.run(source.size, u) for u in uids if source.get(u)])
        if await self.access.run(account.over_quota, total, len(uids)):
            raise No("Quota exceeded", "OVERQUOTA")
        await self.access.run(target.sync, move_new=False)
        pairs = await self.access.run(target.copy_in, source, uids)
        await self.access.run(account.root.quota_add, account.quota, total, len(pairs))
        if not pairs:
            return "No messages copied"
        code = (f"COPYUID {target.uidvalidity} {p.compact_set([a for a, _ in pairs])} "
                f"{p.compact_set([b for _, b in pairs])}")  # fmt: skip
        if not move:
            return f"[{code}] Copy completed"
        await self.send(f"* OK [{code}] Moved\r\n".encode())
        await self.access.run(source.expunge, [a for a, _ in pairs], account.quota)
        return "Move completed"

    async def search(self, command: p.Command) -> str:
        return await self._search(command, uid=False)

    async def uid_search(self, command: p.Command) -> str:
        return await self._search(command, uid=True)

    async def _search(self, command: p.Command, *, uid: bool) -> str:
        args = list(command.args)
        if len(args) >= 2 and isinstance(args[0], p.Atom) and args[0].upper() == "CHARSET":
            charset = p.as_string(args[1]).decode("ascii", "replace").upper()
            if charset not in ("UTF-8", "US-ASCII"):
                raise No("Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
            args = args[2:]
        matcher, uses_modseq = parse_program(args)
        sel = self.need_selected()
        folder = sel.folder
        if uses_modseq:
            await self.enable_condstore()

        highest = 0

        def run() -> list[int]:
            with folder.dirfd() as box:
                return search_in(box)

        def search_in(box: int) -> list[int]:
            nonlocal highest
            hits: list[int] = []
            top_uid = sel.uids[-1] if sel.uids else 0
            for msn, u in enumerate(list(sel.uids), 1):
                msg = folder.get(u)
                if msg is None:
                    continue
                cand = Candidate(
                    msn, u, msg.flags, u in sel.recent,
                    size=lambda u=u: folder.size(u),  # type: ignore[misc]
                    internaldate=lambda u=u: folder.internaldate(u),  # type: ignore[misc]
                    load=lambda u=u: folder.read(u, box=box),  # type: ignore[misc]
                    largest_msn=sel.exists, largest_uid=top_uid, modseq=msg.modseq,
                )  # fmt: skip
                try:
                    if matcher(cand):
                        hits.append(u if uid else msn)
                        highest = max(highest, msg.modseq)
                except FileNotFoundError:
                    continue
            return hits

        hits = await self.access.run(run)
        tail = f" (MODSEQ {highest})" if uses_modseq and hits else ""
        await self.send(("* SEARCH" + "".join(f" {h}" for h in hits) + tail + "\r\n").encode())
        return "Search completed"


# answered without reading the file
_CHEAP = {"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"}
_RECENT = frozenset({"\\Recent"})
_SEEN = frozenset({"\\Seen"})


def _with_partial(item: FetchItem, data: bytes, *, binary: bool = False) -> bytes:
    """``binary``: decoded content, sent as a ``literal8`` (RFC 3516), as Dovecot does."""
    label = item.label
    if item.partial is not None:
        offset, length = item.partial
        data = data[offset : offset + length] if length is not None else data[offset:]
        label += f"<{offset}>"
    return label.encode() + b" " + (fx.literal8(data) if binary else fx.literal(data))


def _whole(item: FetchItem, raw: bytes) -> bytes:
    """BODY[] / BODY.PEEK[] / RFC822: the whole message, no MIME parsing needed."""
    if item.name == "RFC822":
        return b"RFC822 " + fx.literal(raw)
    return _with_partial(item, raw)


class _Silent(Exception):
    """The handler already sent its tagged answer (STARTTLS)."""


def _b64(text: str) -> bytes | None:
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _flags(tokens: list[p.Token]) -> frozenset[str]:
    out = set()
    for tok in tokens:
        word = p.as_atom(tok)
        if word.startswith("\\"):
            flag = canonical(word)
            if flag not in SYSTEM_FLAGS:
                raise Bad(f"unknown system flag {word}")
            out.add(flag)
        elif is_keyword(word):
            out.add(word)
        else:
            raise Bad(f"invalid keyword {word}")
    return frozenset(out)


def _matches(pattern: str, name: str) -> bool:
    regex = "".join(".*" if c == "*" else "[^.]*" if c == "%" else re.escape(c) for c in pattern)
    if re.fullmatch(regex, name):
        return True
    return name == "INBOX" and re.fullmatch(regex, name, re.I) is not None


@dataclass(frozen=True)
class FetchItem:
    name: str  # UID, FLAGS, ..., or BODY[] for sections
    section: fx.Section | None = None
    partial: tuple[int, int | None] | None = None
    sets_seen: bool = False
    label: str = ""
    path: tuple[int, ...] = ()  # BINARY[path] / BINARY.SIZE[path]


_SECTION = re.compile(r"^(BODY|BODY\.PEEK|BINARY\.PEEK|BINARY)\[(.*)\](?:<(\d+)(?:\.(\d+))?>)?$",
                      re.S | re.I)  # fmt: skip
_BINARY_SIZE = re.compile(r"^BINARY\.SIZE\[(.*)\]$", re.S | re.I)
_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
_SIMPLE = {"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY",
           "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ"}  # fmt: skip


def _fetch_items(token: p.Token, uid: bool) -> list[FetchItem]:
    if isinstance(token, p.Atom) and token.upper() in _MACROS:
        words: list[str] = list(_MACROS[token.upper()])
    elif isinstance(token, list):
        words = [p.as_atom(t) for t in token]
    else:
        words = [p.as_atom(token)]
    if not words:
        raise Bad("empty FETCH item list")
    items: list[FetchItem] = []
    if uid and not any(w.upper() == "UID" for w in words):
        items.append(FetchItem("UID"))
    for word in words:
        upper = word.upper()
        if upper in _SIMPLE:
            items.append(FetchItem(upper, sets_seen=upper in ("RFC822", "RFC822.TEXT")))
            continue
        sized = _BINARY_SIZE.match(word)
        if sized is not None:
            path = fx.parse_binary_section(sized.group(1))
            items.append(FetchItem("BINARY.SIZE", path=path,
                                   label=f"BINARY.SIZE[{sized.group(1)}]"))  # fmt: skip
            continue
        found = _SECTION.match(word)
        if found is None:
            raise Bad(f"unknown FETCH item {word}")
        kind, spec, offset, length = found.groups()
        kind = kind.upper()
        partial = None
        if offset is not None:
            partial = (int(offset), int(length) if length is not None else None)
        if kind.startswith("BINARY"):
            path = fx.parse_binary_section(spec)
            items.append(FetchItem("BINARY[]", None, partial, sets_seen=kind == "BINARY",
                                   label=f"BINARY[{spec}]", path=path))  # fmt: skip
            continue
        section = fx.parse_section(spec)
        label = "BODY[" + _label_spec(section) + "]"
        items.append(FetchItem("BODY[]", section, partial, sets_seen=kind == "BODY", label=label))
    return items


def _label_spec(section: fx.Section) -> str:
    path = ".".join(str(i) for i in section.path)
    text = section.text
    if section.fields:
        text += " (" + " ".join(f.upper() for f in section.fields) + ")"
    if path and text:
        return f"{path}.{text}"
    return path or text


COMMANDS: dict[State, dict[str, Handler]] = {}
_ANY: dict[str, Handler] = {
    "CAPABILITY": ImapSession.capability,
    "NOOP": ImapSession.noop,
    "LOGOUT": ImapSession.logout,
    "ID": ImapSession.id_,
}
_AUTH: dict[str, Handler] = {
    **_ANY,
    "SELECT": ImapSession.select,
    "EXAMINE": ImapSession.examine,
    "CREATE": ImapSession.create,
    "DELETE": ImapSession.delete,
    "RENAME": ImapSession.rename,
    "SUBSCRIBE": ImapSession.subscribe,
    "UNSUBSCRIBE": ImapSession.unsubscribe,
    "LIST": ImapSession.list_,
    "LSUB": ImapSession.lsub,
    "STATUS": ImapSession.status,
    "APPEND": ImapSession.append,
    "NAMESPACE": ImapSession.namespace,
    "ENABLE": ImapSession.enable,
    "IDLE": ImapSession.idle,
    "GETQUOTAROOT": ImapSession.getquotaroot,
    "GETQUOTA": ImapSession.getquota,
}
COMMANDS[State.NOT_AUTHENTICATED] = {
    **_ANY,
    "STARTTLS": ImapSession.starttls,
    "LOGIN": ImapSession.login,
    "AUTHENTICATE": ImapSession.authenticate,
}
COMMANDS[State.AUTHENTICATED] = _AUTH
COMMANDS[State.SELECTED] = {
    **_AUTH,
    "CHECK": ImapSession.check,
    "CLOSE": ImapSession.close,
    "UNSELECT": ImapSession.unselect,
    "EXPUNGE": ImapSession.expunge,
    "UID EXPUNGE": ImapSession.uid_expunge,
    "SEARCH": ImapSession.search,
    "UID SEARCH": ImapSession.uid_search,
    "FETCH": ImapSession.fetch,
    "UID FETCH": ImapSession.uid_fetch,
    "STORE": ImapSession.store,
    "UID STORE": ImapSession.uid_store,
    "COPY": ImapSession.copy,
    "UID COPY": ImapSession.uid_copy,
    "MOVE": ImapSession.move,
    "UID MOVE": ImapSession.uid_move,
}
COMMANDS[State.LOGOUT] = {}
