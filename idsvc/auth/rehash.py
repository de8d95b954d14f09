"""Rehash on login: after a successful verify, store the password in the configured scheme.

What it does: :meth:`Rehasher.consider` is called by the engine with an account whose password
was just verified. When the stored hash ``needs_rehash`` (weaker scheme or parameters), a
background task hashes the password (in the engine's hashing pool) and writes it with
``update_account(..., if_revision=account.revision)``, so an administrative change made meanwhile
wins. At most ``limit`` rehashes run at once, one per account; more are simply skipped (the next
login tries again).

What it does not do: delay or change the authentication result, or retry.

How it fails: a stale revision or a vanished account (``Conflict`` / ``NotFound``) is logged at
INFO and skipped; any other error is logged with its traceback. ``close()`` waits (bounded) for
running writes and cancels what is left.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Protocol

from idsvc.directory.base import AccountChanges, Provisioning
from idsvc.errors import Conflict, NotFound, PasswordError
from idsvc.model import Account

log = logging.getLogger(__name__)

MAX_REHASH_TASKS = 64
CLOSE_GRACE = 5.0  # seconds close() waits for running writes


class RehashHasher(Protocol):
    def needs_rehash(self, stored: str) -> bool: ...

    def hash(self, password: str, scheme: str | None = None) -> str: ...


class Rehasher:
    """Background rehash writes, bounded in number (see the module docstring)."""

    def __init__(
        self,
        writer: Provisioning,
        hasher: RehashHasher,
        executor: Executor,
        *,
        limit: int = MAX_REHASH_TASKS,
    ) -> None:
        self._writer = writer
        self._hasher = hasher
        self._executor = executor
        self._limit = limit
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def consider(self, account: Account, password: str) -> None:
        """Start a rehash of ``account`` if its hash needs one (never raises)."""
        stored = account.password_hash
        if self._closed or stored is None:
            return
        user = str(account.address)
        if user in self._tasks or len(self._tasks) >= self._limit:
            return
        try:
            if not self._hasher.needs_rehash(stored):
                return
        except PasswordError:
            return
        task = asyncio.get_running_loop().create_task(self._rehash(account, password))
        self._tasks[user] = task
        task.add_done_callback(lambda _t: self._tasks.pop(user, None))

    async def _rehash(self, account: Account, password: str) -> None:
        user = str(account.address)
        try:
            loop = asyncio.get_running_loop()
            new_hash = await loop.run_in_executor(self._executor, self._hasher.hash, password)
            await self._writer.update_account(
                account.address,
                AccountChanges(password_hash=new_hash),
                if_revision=account.revision,
            )
            log.info("rehashed the stored password of %s", user)
        except (Conflict, NotFound):
            log.info("rehash of %s skipped: the account changed meanwhile", user)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("rehash of %s failed (authentication unaffected)", user)

    async def close(self) -> None:
        """Start no more; wait up to ``CLOSE_GRACE`` s for running writes, cancel the rest."""
        self._closed = True
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=CLOSE_GRACE)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
