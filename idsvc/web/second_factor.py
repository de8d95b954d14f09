"""The web login's second factor: TOTP (RFC 6238, 30-second steps, 6 digits, SHA-1 — what every
authenticator app speaks) and single-use recovery codes.

Storage: one SQLite file (``web.second_factor_path``, default ``web.db`` beside the state store),
keyed by the canonical mailbox address. The TOTP secret has to be readable to check a code, so
the file is created 0600; recovery codes are kept only as SHA-256 digests (they are random
80-bit values, so a fast digest is enough). A code is accepted in the current step or one step
either side (clock skew) and never twice: the last accepted step is stored, so a code seen over
someone's shoulder cannot be replayed.

Enrolment is two steps: a secret is generated and kept in the browser's server-side session
until the user proves the app has it by typing a valid code; only then is it stored.

How it fails: SQLite errors propagate as ``TemporaryFailure`` (the login answers "try later").
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pyotp

from idsvc.errors import TemporaryFailure

T = TypeVar("T")
RECOVERY_CODES = 10
STEP = 30
_SCHEMA = """
CREATE TABLE IF NOT EXISTS totp (
    user TEXT PRIMARY KEY, secret TEXT NOT NULL, enrolled INTEGER NOT NULL,
    last_step INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS recovery (
    user TEXT NOT NULL, digest BLOB NOT NULL, PRIMARY KEY (user, digest)
);
"""


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, user: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name=issuer)


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step (current ±1) whose code is ``code``, or None."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    step = int((time.time() if now is None else now) // STEP)
    found = None
    for candidate in (step - 1, step, step + 1):  # all three compared: same work either way
        if hmac.compare_digest(totp.at(candidate * STEP), code):
            found = candidate
    return found


def _digest(code: str) -> bytes:
    return hashlib.sha256(code.strip().lower().replace("-", "").encode()).digest()


class SecondFactors:
    """TOTP secrets and recovery codes (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    async def _run(self, fn: Callable[[], T]) -> T:
        def guarded() -> T:
            with self._lock:
                try:
                    return fn()
                except sqlite3.Error as exc:
                    raise TemporaryFailure(f"second factor store: {exc}") from exc

        return await asyncio.to_thread(guarded)

    async def enrolled(self, user: str) -> bool:
        row = await self._run(
            lambda: self._conn.execute("SELECT 1 FROM totp WHERE user = ?", (user,)).fetchone()
        )
        return row is not None

    async def enrol(self, user: str, secret: str, step: int) -> list[str]:
        """Store ``secret`` (already proven with the code of ``step``); new recovery codes."""
        codes = [
            "-".join(secrets.token_hex(5)[i : i + 5] for i in (0, 5)) for _ in range(RECOVERY_CODES)
        ]

        def write() -> None:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute(
                    "INSERT OR REPLACE INTO totp (user, secret, enrolled, last_step) "
                    "VALUES (?, ?, ?, ?)",
                    (user, secret, int(time.time()), step),
                )
                self._conn.execute("DELETE FROM recovery WHERE user = ?", (user,))
                self._conn.executemany(
                    "INSERT INTO recovery (user, digest) VALUES (?, ?)",
                    [(user, _digest(c)) for c in codes],
                )

        await self._run(write)
        return codes

    async def remove(self, user: str) -> None:
        def write() -> None:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute("DELETE FROM totp WHERE user = ?", (user,))
                self._conn.execute("DELETE FROM recovery WHERE user = ?", (user,))

        await self._run(write)

    async def recovery_left(self, user: str) -> int:
        row = await self._run(
            lambda: self._conn.execute(
                "SELECT count(*) FROM recovery WHERE user = ?", (user,)
            ).fetchone()
        )
        return int(row[0])

    async def verify(self, user: str, code: str) -> bool:
        """A current TOTP code not used before, or an unused recovery code (then spent)."""

        def check() -> bool:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                row = self._conn.execute(
                    "SELECT secret, last_step FROM totp WHERE user = ?", (user,)
                ).fetchone()
                if row is None:
                    return False
                step = matching_step(row[0], code)
                if step is not None:
                    if step <= row[1]:
                        return False  # replayed
                    self._conn.execute("UPDATE totp SET last_step = ? WHERE user = ?", (step, user))
                    return True
                spent = self._conn.execute(
                    "DELETE FROM recovery WHERE user = ? AND digest = ?", (user, _digest(code))
                )
                return spent.rowcount == 1

        return await self._run(check)
