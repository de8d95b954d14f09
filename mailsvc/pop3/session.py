"""One POP3 session: an explicit state machine (RFC 1939 §3) with one command table per state.

=============== ==========================================================================
AUTHORIZATION   CAPA, STLS, USER, PASS, AUTH (PLAIN/LOGIN, RFC 5034 initial response), QUIT
TRANSACTION     STAT, LIST, UIDL, TOP, RETR, DELE, RSET, NOOP, CAPA, QUIT
UPDATE          entered by QUIT from TRANSACTION only: the DELE'd messages are expunged then
=============== ==========================================================================

A dropped connection never reaches UPDATE, so it deletes nothing. The maildir is locked for the
whole TRANSACTION state (``flock`` on ``mailsvc-pop3.lock`` in the Maildir: a second POP3
session, in this or another mailsvc process, gets ``-ERR [IN-USE]``). Cleartext USER/PASS/AUTH
are refused before STLS unless the listener allows them (``[AUTH]``); a temporary fault of idsvc
or the store is ``-ERR [SYS/TEMP]``, never a password error. Three bad commands before login, or
ten after, end the session. UIDLs are the IMAP UIDs with UIDVALIDITY (Dovecot's default format).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailsvc.access import LoginResult, MailAccess, Peer, Result, plain_response
from mailsvc.mailbox.account import Account
from mailsvc.mailbox.folder import Folder
from mailsvc.maildir import StoreError
from mailsvc.pop3 import protocol as p
from mailsvc.stream import Closed, LineTooLong, Stream

log = logging.getLogger("mailsvc.pop3")
LOCK_FILE = "mailsvc-pop3.lock"


class State(enum.Enum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"
    DONE = "done"


@dataclass(frozen=True)
class Pop3Options:
    hostname: str = "localhost"
    allow_plaintext: bool = False  # USER/PASS/AUTH without TLS
    max_bad_preauth: int = 3
    max_bad: int = 10
    timeout: float = 600.0  # RFC 1939 §3: at least 10 minutes


Handler = Callable[["Pop3Session", p.Command], Awaitable[None]]


def _lock(account: Account) -> int | None:
    """The session lock's descriptor, ``None`` when another session holds it."""
    with account.root.open_dir() as box:
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=box)  # fmt: skip
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Pop3Session:
    def __init__(self, stream: Stream, access: MailAccess, options: Pop3Options) -> None:
        self.stream = stream
        self.access = access
        self.options = options
        self.state = State.AUTHORIZATION
        self.user_name: str | None = None
        self.account: Account | None = None
        self.folder: Folder | None = None
        self.uidvalidity = 0
        self.uids: list[int] = []
        self.sizes: list[int] = []
        self.deleted: set[int] = set()  # message numbers, 1-based
        self.lock_fd: int | None = None
        self.claimed: str | None = None  # the user counted against the user+IP limit
        self.box_fd: int | None = None  # the INBOX directory, open for the session
        self.bad = 0

    # --- plumbing ---------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        await self.stream.write(data)

    @property
    def plaintext_ok(self) -> bool:
        return self.stream.secured or self.options.allow_plaintext

    async def run(self) -> None:
        try:
            await self.send(p.ok(f"{self.options.hostname} POP3 ready"))
            while self.state not in (State.DONE, State.UPDATE):
                try:
                    line = await self.stream.readline(p.MAX_SASL_LINE)
                except LineTooLong:
                    await self.send(p.err("Line too long"))
                    return
                await self.dispatch(line)
        except Closed:
            pass
        finally:
            await self.release()

    async def dispatch(self, line: bytes) -> None:
        try:
            command = p.parse(line)
        except p.BadCommand as exc:
            await self.bad_command(str(exc))
            return
        table = COMMANDS[self.state]
        handler = table.get(command.name)
        if handler is None:
            await self.bad_command("Unknown command" if command.name not in ALL else
                                   "Command not valid in this state")  # fmt: skip
            return
        await handler(self, command)

    async def bad_command(self, text: str) -> None:
        self.bad += 1
        limit = self.options.max_bad_preauth if self.state is State.AUTHORIZATION else \
            self.options.max_bad  # fmt: skip
        if self.bad >= limit:
            await self.send(p.err("Too many bad commands, closing"))
            self.state = State.DONE
            return
        await self.send(p.err(text))

    async def release(self) -> None:
        if self.box_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.box_fd)
            self.box_fd = None
        if self.claimed is not None:
            self.access.release(self.claimed, self.stream.remote_ip)
            self.claimed = None
        if self.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)
            self.lock_fd = None

    # --- AUTHORIZATION ---------------------------------------------------------------------

    async def capa(self, command: p.Command) -> None:
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            if self.stream.tls is not None and not self.stream.secured:
                caps.append("STLS")
            if self.plaintext_ok:
                caps += ["USER", "SASL PLAIN LOGIN"]
        caps.append("IMPLEMENTATION mailsvc")
        await self.send(p.multiline(p.ok("Capability list follows"), caps))

    async def stls(self, command: p.Command) -> None:
        if self.stream.tls is None or self.stream.secured:
            await self.bad_command("STLS not available")
            return
        await self.send(p.ok("Begin TLS negotiation"))
        await self.stream.start_tls()  # drops pipelined plaintext
        self.user_name = None

    async def user(self, command: p.Command) -> None:
        if not self.plaintext_ok:
            await self.send(p.err("Plaintext authentication disallowed without TLS", "AUTH"))
            return
        if len(command.args) != 1:
            await self.bad_command("USER needs one argument")
            return
        self.user_name = command.args[0]
        await self.send(p.ok())

    async def pass_(self, command: p.Command) -> None:
        if not self.plaintext_ok:
            await self.send(p.err("Plaintext authentication disallowed without TLS", "AUTH"))
            return
        if self.user_name is None or len(command.args) != 1:
            await self.bad_command("USER first")
            return
        initial = plain_response(self.user_name, command.args[0])
        self.user_name = None

        async def no_challenge(_: bytes) -> bytes | None:
            return None

        await self.finish_login(await self.access.login("PLAIN", self.peer(), respond=no_challenge,
                                                        initial=initial))  # fmt: skip

    def peer(self) -> Peer:
        return Peer(self.stream.local_ip, self.stream.remote_ip, self.stream.secured)

    async def auth(self, command: p.Command) -> None:
        if not command.args:
            await self.send(p.multiline(p.ok(), ["PLAIN", "LOGIN"]))
            return
        if not self.plaintext_ok:
            await self.send(p.err("Plaintext authentication disallowed without TLS", "AUTH"))
            return
        mechanism = command.args[0].upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            await self.bad_command("Unsupported mechanism")
            return
        initial: bytes | None = None
        if len(command.args) == 2:
            initial = self.decode(command.args[1])
            if initial is None:
                await self.bad_command("Invalid base64")
                return

        async def respond(challenge: bytes) -> bytes | None:
            await self.send(b"+ " + base64.b64encode(challenge) + b"\r\n")
            line = await self.stream.readline(p.MAX_SASL_LINE)
            if line == b"*":
                return None
            answer = self.decode(line.decode("ascii", "replace"))
            return answer if answer is not None else None

        result = await self.access.login(mechanism, self.peer(), respond=respond, initial=initial)
        if result.result is Result.ABORTED:
            await self.send(p.err("Authentication aborted"))
            return
        await self.finish_login(result)

    @staticmethod
    def decode(text: str) -> bytes | None:
        if text == "=":
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None

    async def finish_login(self, result: LoginResult) -> None:
        if result.result is Result.UNAVAILABLE:
            await self.send(p.err("Temporary authentication failure, try again later", "SYS/TEMP"))
            return
        if result.result is not Result.OK or result.account is None:
            await self.bad_command_auth()
            return
        account = result.account
        assert result.user is not None
        if not self.access.claim(result.user, self.stream.remote_ip):
            await self.send(p.err("Maximum number of connections from user+IP exceeded",
                                  "SYS/TEMP"))  # fmt: skip
            return
        self.claimed = result.user
        try:
            lock = await self.access.run(_lock, account)
        except (StoreError, OSError) as exc:
            log.error("pop3 lock for %s: %s", result.user, exc)
            await self.release()
            await self.send(p.err("Mailbox unavailable, try again later", "SYS/TEMP"))
            return
        if lock is None:
            await self.release()
            await self.send(p.err("Mailbox is locked by another POP3 session", "IN-USE"))
            return
        self.lock_fd = lock
        try:
            folder = account.folder("INBOX")
            await self.access.run(folder.sync)
            state = folder.state()
            sizes = await self.access.run(lambda: [folder.vsize(u) for u in state.uids])
        except (StoreError, OSError) as exc:
            log.error("pop3 mailbox of %s: %s", result.user, exc)
            await self.release()
            await self.send(p.err("Mailbox unavailable, try again later", "SYS/TEMP"))
            return
        self.account, self.folder = account, folder
        try:
            self.box_fd = await self.access.run(folder.open_fd)  # one walk for the session
        except (StoreError, OSError):
            self.box_fd = None
        self.uidvalidity, self.uids, self.sizes = state.uidvalidity, state.uids, sizes
        self.state = State.TRANSACTION
        self.bad = 0
        await self.send(p.ok(f"Logged in, {len(self.uids)} messages"))

    async def bad_command_auth(self) -> None:
        self.bad += 1
        if self.bad >= self.options.max_bad_preauth:
            await self.send(p.err("Authentication failed, closing", "AUTH"))
            self.state = State.DONE
            return
        await self.send(p.err("Authentication failed", "AUTH"))

    async def quit(self, command: p.Command) -> None:
        if self.state is State.TRANSACTION:
            self.state = State.UPDATE
            await self.update()
            return
        self.state = State.DONE
        await self.send(p.ok("Bye"))

    # --- TRANSACTION ----------------------------------------------------------------------

    def message(self, text: str) -> int | None:
        number = p.number(text)
        if number is None or not 1 <= number <= len(self.uids) or number in self.deleted:
            return None
        return number

    async def stat(self, command: p.Command) -> None:
        live = [s for i, s in enumerate(self.sizes, 1) if i not in self.deleted]
        await self.send(p.ok(f"{len(live)} {sum(live)}"))

    async def list_(self, command: p.Command) -> None:
        await self.listing(command, lambda i: str(self.sizes[i - 1]))

    async def uidl(self, command: p.Command) -> None:
        await self.listing(command, lambda i: p.uidl(self.uids[i - 1], self.uidvalidity))

    async def listing(self, command: p.Command, value: Callable[[int], str]) -> None:
        if command.args:
            number = self.message(command.args[0])
            if number is None:
                await self.bad_command("No such message")
                return
            await self.send(p.ok(f"{number} {value(number)}"))
            return
        lines = [f"{i} {value(i)}" for i in range(1, len(self.uids) + 1) if i not in self.deleted]
        await self.send(p.multiline(p.ok(), lines))

    async def retr(self, command: p.Command) -> None:
        number = self.message(command.args[0]) if len(command.args) == 1 else None
        await self.send_message(number, None)

    async def top(self, command: p.Command) -> None:
        if len(command.args) != 2:
            await self.bad_command("TOP needs a message and a line count")
            return
        count = p.number(command.args[1])
        number = self.message(command.args[0])
        if count is None:
            await self.bad_command("Invalid line count")
            return
        await self.send_message(number, count)

    async def send_message(self, number: int | None, lines: int | None) -> None:
        if number is None or self.folder is None:
            await self.bad_command("No such message")
            return
        folder, uid = self.folder, self.uids[number - 1]
        try:
            raw = await self.access.run(folder.read, uid, box=self.box_fd)
        except FileNotFoundError:
            await self.send(p.err("Message was deleted by another session"))
            return
        except (StoreError, OSError) as exc:
            log.error("pop3 read: %s", exc)
            await self.send(p.err("Cannot read the message", "SYS/TEMP"))
            return
        header = p.ok(f"{self.sizes[number - 1]} octets" if lines is None else "")
        await self.send(header + p.message_lines(raw, lines))

    async def dele(self, command: p.Command) -> None:
        number = self.message(command.args[0]) if len(command.args) == 1 else None
        if number is None:
            await self.bad_command("No such message")
            return
        self.deleted.add(number)
        await self.send(p.ok("Marked for deletion"))

    async def rset(self, command: p.Command) -> None:
        self.deleted.clear()
        await self.send(p.ok())

    async def noop(self, command: p.Command) -> None:
        await self.send(p.ok())

    # --- UPDATE ---------------------------------------------------------------------------

    async def update(self) -> None:
        folder, account = self.folder, self.account
        assert folder is not None
        assert account is not None
        uids = [self.uids[i - 1] for i in sorted(self.deleted)]
        try:
            if uids:
                await self.access.run(folder.expunge, uids, account.quota)
        except (StoreError, OSError) as exc:
            log.error("pop3 update: %s", exc)
            await self.send(p.err("Some deleted messages were not removed", "SYS/TEMP"))
            return
        finally:
            await self.release()
        await self.send(p.ok(f"Logging out, {len(uids)} messages deleted"))


COMMANDS: dict[State, dict[str, Handler]] = {
    State.AUTHORIZATION: {
        "CAPA": Pop3Session.capa, "STLS": Pop3Session.stls, "USER": Pop3Session.user,
        "PASS": Pop3Session.pass_, "AUTH": Pop3Session.auth, "QUIT": Pop3Session.quit,
    },
    State.TRANSACTION: {
        "CAPA": Pop3Session.capa, "STAT": Pop3Session.stat, "LIST": Pop3Session.list_,
        "UIDL": Pop3Session.uidl, "RETR": Pop3Session.retr, "TOP": Pop3Session.top,
        "DELE": Pop3Session.dele, "RSET": Pop3Session.rset, "NOOP": Pop3Session.noop,
        "QUIT": Pop3Session.quit,
    },
    State.UPDATE: {},
    State.DONE: {},
}  # fmt: skip
ALL = {name for table in COMMANDS.values() for name in table}
