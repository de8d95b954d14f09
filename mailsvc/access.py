"""Logging a POP3/IMAP user in and opening their mail, shared by both front ends.

:class:`MailAccess` relays SASL to idsvc's Dovecot auth-client socket (service ``pop3`` or
``imap``), then asks socketmap for the user's Maildir (``mailbox`` map) and quota (``quota``
map) and opens an :class:`~mailsvc.mailbox.account.Account` on the shared folder registry.

Outcomes (:class:`LoginResult`): ``ok`` with an account; ``failed`` (definite: wrong password,
unknown user, disabled — never distinguished); ``unavailable`` (idsvc, socketmap or the store
gave no definite answer: the front ends answer ``[UNAVAILABLE]`` / ``[SYS/TEMP]``, never "wrong
password"); ``aborted`` (the client cancelled); ``no_mechanism``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from mailsvc.clients import Unavailable
from mailsvc.clients.dovecot_auth import DovecotAuthClient, MechanismUnavailable, Respond
from mailsvc.clients.socketmap import SocketmapClient
from mailsvc.mailbox.account import Account, FolderRegistry
from mailsvc.maildir import MaildirStore, Quota, StoreError

log = logging.getLogger("mailsvc.access")
T = TypeVar("T")


class Result(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    UNAVAILABLE = "unavailable"
    ABORTED = "aborted"
    NO_MECHANISM = "no_mechanism"


@dataclass
class LoginResult:
    result: Result
    user: str | None = None
    account: Account | None = None


@dataclass(frozen=True)
class Peer:
    local_ip: str | None
    remote_ip: str | None
    secured: bool


def plain_response(user: str, password: str) -> bytes:
    """The SASL PLAIN message for a LOGIN/USER+PASS pair."""
    return b"\0" + user.encode() + b"\0" + password.encode()


class MailAccess:
    def __init__(
        self,
        auth: DovecotAuthClient,
        maps: SocketmapClient,
        store: MaildirStore,
        executor: ThreadPoolExecutor,
        registry: FolderRegistry | None = None,
        *,
        max_user_ip: int = 10,
    ) -> None:
        self.auth = auth
        self.maps = maps
        self.store = store
        self.executor = executor
        self.registry = registry or FolderRegistry(fsync=store.fsync)
        self.max_user_ip = max_user_ip
        self._sessions: Counter[tuple[str, str]] = Counter()

    def claim(self, user: str, ip: str | None) -> bool:
        """Count one more logged-in session of ``user`` from ``ip``; False over the limit."""
        key = (user, ip or "")
        if self._sessions[key] >= self.max_user_ip:
            return False
        self._sessions[key] += 1
        return True

    def release(self, user: str, ip: str | None) -> None:
        key = (user, ip or "")
        self._sessions[key] -= 1
        if self._sessions[key] <= 0:
            del self._sessions[key]

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the store's worker threads."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    async def login(
        self,
        mechanism: str,
        peer: Peer,
        *,
        respond: Respond,
        initial: bytes | None = None,
    ) -> LoginResult:
        try:
            outcome = await self.auth.authenticate(
                mechanism,
                respond=respond,
                initial=initial,
                local_ip=peer.local_ip,
                remote_ip=peer.remote_ip,
                secured=peer.secured,
            )
        except Unavailable as exc:
            log.warning("auth service unavailable: %s", exc)
            return LoginResult(Result.UNAVAILABLE)
        except MechanismUnavailable:
            return LoginResult(Result.NO_MECHANISM)
        if outcome.aborted:
            return LoginResult(Result.ABORTED)
        if outcome.user is None:
            log.info("%s: authentication failed", peer.remote_ip)
            return LoginResult(Result.FAILED)
        return await self.open(outcome.user)

    async def open(self, user: str) -> LoginResult:
        """The account of an authenticated ``user``."""
        try:
            path = await self.maps.lookup("mailbox", user)
            raw_quota = await self.maps.lookup("quota", user) if path else None
        except Unavailable as exc:
            log.warning("mailbox lookup for %s unavailable: %s", user, exc)
            return LoginResult(Result.UNAVAILABLE, user)
        if path is None:
            log.warning("%s authenticated but has no mailbox", user)
            return LoginResult(Result.UNAVAILABLE, user)
        try:
            quota = Quota(bytes=max(int(raw_quota), 0)) if raw_quota else Quota()
        except ValueError:
            quota = Quota()
        try:
            account = Account(self.store, self.registry, path.strip(), quota)
            await self.run(account.prepare)
        except (StoreError, OSError) as exc:
            log.error("cannot open the mailbox of %s: %s", user, exc)
            return LoginResult(Result.UNAVAILABLE, user)
        log.info("%s logged in", user)
        return LoginResult(Result.OK, user, account)
