"""The web login's second factor: TOTP (RFC 6238, 30-second steps, 6 digits, SHA-1 — what every
authenticator app speaks) and single-use recovery codes.

Whose factor: an ``Owner`` made from the directory's ``Account`` — its ``subject`` (the stable id
app passwords are keyed by too: AD's objectGUID or entryUUID where the directory has one, else
the canonical address) plus a *generation*: for accounts without a stable id, the account's
creation time. So a renamed account (corporate directory, same stable id) keeps its factor, and
an account deleted and created again under the same address does not inherit its predecessor's:
``forget`` drops it when idsvc's provisioning deletes the account (``deletion_hooks``), and a
deletion made elsewhere shows as a different creation time (one-second resolution) at the next
login, when the old rows are dropped (logged). Read-only directories give an empty generation
(their creation attribute is not ours to trust; there the stable id decides).

Storage: one SQLite file (``web.second_factor_path``, default ``web.db`` beside the state store,
mode 0600, ``secure_delete`` on). The TOTP secret has to be readable to check a code, so it is
sealed with AES-256-GCM under a key kept in a separate file (``web.second_factor_key``, see
``idsvc.web.keyring``), the owner (subject and generation) as associated data: a row copied to
another account, or changed, does not open — that login is refused and logged, never let through
without the factor. Recovery codes are stored only as ``HMAC-SHA256(pepper, SHA-256(code))``;
the random pepper is itself sealed under the key, so the database alone does not allow an
offline search of the codes.

A code is accepted in the current step or one step either side (clock skew) and never twice: the
last accepted step is stored, so a code seen over someone's shoulder cannot be replayed.
Enrolment is two steps: a secret is generated and kept in the browser's server-side session
until the user proves the app has it by typing a valid code; only then is it stored.

Upgrades: plaintext rows of the first version (keyed by address) are sealed when the file is
opened (then the file is vacuumed, so the plaintext does not linger in free pages); such a row
is adopted by the account that owns the address at its next login. Rows sealed under a key that
is no longer the key file's first are re-sealed under the first when the file is opened.

How it fails: SQLite errors and an unusable key file where one is needed propagate as
``TemporaryFailure`` (the page answers "try later"); a sealed secret that does not open makes
``verify`` answer False (logged).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyotp

from idsvc.errors import TemporaryFailure
from idsvc.model import Account
from idsvc.web.keyring import KeyRing, SealError

T = TypeVar("T")
RECOVERY_CODES = 10
STEP = 30
log = logging.getLogger(__name__)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sealed_totp (
    subject TEXT PRIMARY KEY,
    generation TEXT,           -- NULL: migrated from version 1, adopted at the next login
    kid TEXT NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL,
    enrolled INTEGER NOT NULL, last_step INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS recovery_digest (
    subject TEXT NOT NULL, digest BLOB NOT NULL, PRIMARY KEY (subject, digest)
);
CREATE TABLE IF NOT EXISTS pepper (
    id INTEGER PRIMARY KEY CHECK (id = 1), kid TEXT NOT NULL, nonce BLOB NOT NULL,
    sealed BLOB NOT NULL
);
"""
_PEPPER_AAD = b"idsvc-web-recovery-pepper"


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose second factor (see the module docstring)."""

    subject: str
    address: str
    generation: str

    @classmethod
    def of(cls, account: Account, *, read_only: bool) -> Owner:
        stable = bool(account.uid) or read_only
        return cls(account.subject, str(account.address), "" if stable else _iso(account))


def _iso(account: Account) -> str:
    return account.created.isoformat()


def _aad(subject: str, generation: str | None) -> bytes:
    tail = b"legacy" if generation is None else b"g:" + generation.encode()
    return b"idsvc-web-totp\0" + subject.encode() + b"\0" + tail


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


def _plain_digest(code: str) -> bytes:
    """Version 1's (unkeyed) digest; version 2 keys it, so migrated rows keep working."""
    return hashlib.sha256(code.strip().lower().replace("-", "").encode()).digest()


def _keyed(pepper: bytes, plain_digest: bytes) -> bytes:
    return hmac.new(pepper, b"idsvc-web-recovery\0" + plain_digest, hashlib.sha256).digest()


class SecondFactors:
    """TOTP secrets and recovery codes (see the module docstring)."""

    def __init__(self, path: Path, key_path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._key_path = key_path
        self._ring: KeyRing | None = None
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA secure_delete = ON")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._upgrade()

    def close(self) -> None:
        self._conn.close()

    # -- keys -------------------------------------------------------------------------------------

    def _holds_sealed(self) -> bool:
        return any(
            self._conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()  # noqa: S608
            for table in ("sealed_totp", "pepper")
        )

    def _keys(self) -> KeyRing:
        """The key ring, loaded once; created on first use unless sealed data exists (then a
        missing key file is an error: a new key would not open the old rows)."""
        if self._ring is None:
            try:
                self._ring = KeyRing.load(self._key_path)
            except FileNotFoundError:
                if self._holds_sealed():
                    raise SealError(f"the key file {self._key_path} is missing") from None
                self._ring = KeyRing.create(self._key_path)
                log.info("created the web second-factor key file %s", self._key_path)
        return self._ring

    def _pepper(self, *, create: bool) -> bytes | None:
        row = self._conn.execute("SELECT kid, nonce, sealed FROM pepper").fetchone()
        if row is not None:
            return self._keys().open(row[0], row[1], row[2], _PEPPER_AAD)
        if not create:
            return None
        pepper = secrets.token_bytes(32)
        kid, nonce, sealed = self._keys().seal(pepper, _PEPPER_AAD)
        self._conn.execute(
            "INSERT INTO pepper (id, kid, nonce, sealed) VALUES (1, ?, ?, ?)", (kid, nonce, sealed)
        )
        return pepper

    # -- upgrades on open -------------------------------------------------------------------------

    def _upgrade(self) -> None:
        legacy = {r[1] for r in self._conn.execute("PRAGMA table_info(totp)")}
        if "secret" in legacy:
            self._migrate_plaintext()
        try:
            self._reseal()
        except SealError as exc:  # logins of enrolled users fail closed until it is fixed
            log.error("web second factors: %s", exc)

    def _migrate_plaintext(self) -> None:
        """Seal version 1's plaintext secrets, key its recovery digests, drop its tables and
        vacuum (with ``secure_delete`` the freed pages are zeroed, VACUUM rewrites the file)."""
        try:
            ring = self._keys()
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                pepper = self._pepper(create=True)
                assert pepper is not None
                rows = self._conn.execute(
                    "SELECT user, secret, enrolled, last_step FROM totp"
                ).fetchall()
                for user, secret, enrolled, last_step in rows:
                    kid, nonce, sealed = ring.seal(str(secret).encode(), _aad(user, None))
                    self._conn.execute(
                        "INSERT OR REPLACE INTO sealed_totp (subject, generation, kid, nonce, "
                        "sealed, enrolled, last_step) VALUES (?, NULL, ?, ?, ?, ?, ?)",
                        (user, kid, nonce, sealed, enrolled, last_step),
                    )
                has_recovery = self._conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'recovery'"
                ).fetchone()
                if has_recovery:
                    for user, digest in self._conn.execute("SELECT user, digest FROM recovery"):
                        self._conn.execute(
                            "INSERT OR IGNORE INTO recovery_digest (subject, digest) VALUES (?, ?)",
                            (user, _keyed(pepper, bytes(digest))),
                        )
                    self._conn.execute("DROP TABLE recovery")
                self._conn.execute("DROP TABLE totp")
        except SealError as exc:
            raise TemporaryFailure(f"second factor store: {exc}") from exc
        self._conn.execute("VACUUM")
        log.info("web second factors: sealed %d plaintext TOTP secret(s)", len(rows))

    def _reseal(self) -> None:
        """Re-seal rows (and the pepper) sealed under a key that is not the current one."""
        if not self._holds_sealed():
            return
        ring = self._keys()
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            row = self._conn.execute("SELECT kid, nonce, sealed FROM pepper").fetchone()
            if row is not None and row[0] != ring.current:
                kid, nonce, sealed = ring.seal(
                    ring.open(row[0], row[1], row[2], _PEPPER_AAD), _PEPPER_AAD
                )
                self._conn.execute(
                    "UPDATE pepper SET kid = ?, nonce = ?, sealed = ?", (kid, nonce, sealed)
                )
            old = self._conn.execute(
                "SELECT subject, generation, kid, nonce, sealed FROM sealed_totp WHERE kid != ?",
                (ring.current,),
            ).fetchall()
            for subject, generation, okid, ononce, osealed in old:
                aad = _aad(subject, generation)
                try:
                    plain = ring.open(okid, ononce, osealed, aad)
                except SealError as exc:
                    log.error("web second factor of %s: %s", subject, exc)
                    continue
                kid, nonce, sealed = ring.seal(plain, aad)
                self._conn.execute(
                    "UPDATE sealed_totp SET kid = ?, nonce = ?, sealed = ? WHERE subject = ?",
                    (kid, nonce, sealed, subject),
                )
        if old or (row is not None and row[0] != ring.current):
            log.info("web second factors: re-sealed under key %s", ring.current)

    # -- per owner --------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        def guarded() -> T:
            with self._lock:
                try:
                    return fn()
                except sqlite3.Error as exc:
                    raise TemporaryFailure(f"second factor store: {exc}") from exc
                except SealError as exc:
                    raise TemporaryFailure(f"second factor store: {exc}") from exc

        return await asyncio.to_thread(guarded)

    def _row(self, owner: Owner) -> tuple[str, str, bytes, bytes, int] | None:
        """``(subject, kid, nonce, sealed, last_step)`` of ``owner``'s TOTP row, after adopting
        a version-1 row of its address and dropping a predecessor's (call in a transaction)."""
        select = "SELECT subject, generation, kid, nonce, sealed, last_step FROM sealed_totp "
        row = self._conn.execute(select + "WHERE subject = ?", (owner.subject,)).fetchone()
        if row is None and owner.address != owner.subject:
            row = self._conn.execute(
                select + "WHERE subject = ? AND generation IS NULL", (owner.address,)
            ).fetchone()
        if row is None:
            return None
        subject, generation, kid, nonce, sealed, last_step = row
        if generation is None:
            return self._adopt(owner, subject, kid, nonce, sealed, last_step)
        if generation != owner.generation:
            self._conn.execute("DELETE FROM sealed_totp WHERE subject = ?", (subject,))
            self._conn.execute("DELETE FROM recovery_digest WHERE subject = ?", (subject,))
            log.warning(
                "web second factor of %s dropped: it belonged to an earlier account of that name",
                owner.address,
            )
            return None
        return subject, kid, nonce, sealed, last_step

    def _adopt(
        self, owner: Owner, subject: str, kid: str, nonce: bytes, sealed: bytes, last_step: int
    ) -> tuple[str, str, bytes, bytes, int]:
        ring = self._keys()
        try:
            plain = ring.open(kid, nonce, sealed, _aad(subject, None))
        except SealError as exc:  # leave it: the login stays refused until an admin acts
            log.error("web second factor of %s: %s", owner.address, exc)
            return subject, kid, nonce, sealed, last_step
        kid, nonce, sealed = ring.seal(plain, _aad(owner.subject, owner.generation))
        self._conn.execute(
            "UPDATE sealed_totp SET subject = ?, generation = ?, kid = ?, nonce = ?, sealed = ? "
            "WHERE subject = ?",
            (owner.subject, owner.generation, kid, nonce, sealed, subject),
        )
        self._conn.execute(
            "UPDATE recovery_digest SET subject = ? WHERE subject = ?", (owner.subject, subject)
        )
        return owner.subject, kid, nonce, sealed, last_step

    async def enrolled(self, owner: Owner) -> bool:
        def check() -> bool:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                return self._row(owner) is not None

        return await self._run(check)

    async def enrol(self, owner: Owner, secret: str, step: int) -> list[str]:
        """Store ``secret`` (already proven with the code of ``step``); new recovery codes."""
        codes = [
            "-".join(secrets.token_hex(5)[i : i + 5] for i in (0, 5)) for _ in range(RECOVERY_CODES)
        ]

        def write() -> None:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                pepper = self._pepper(create=True)
                assert pepper is not None
                kid, nonce, sealed = self._keys().seal(
                    secret.encode(), _aad(owner.subject, owner.generation)
                )
                self._drop(owner)
                self._conn.execute(
                    "INSERT INTO sealed_totp (subject, generation, kid, nonce, sealed, enrolled, "
                    "last_step) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (owner.subject, owner.generation, kid, nonce, sealed, int(time.time()), step),
                )
                self._conn.executemany(
                    "INSERT INTO recovery_digest (subject, digest) VALUES (?, ?)",
                    [(owner.subject, _keyed(pepper, _plain_digest(c))) for c in codes],
                )

        await self._run(write)
        return codes

    def _drop(self, owner: Owner) -> None:
        for subject in {owner.subject, owner.address}:
            if subject != owner.subject:  # the address: only a not yet adopted version-1 row
                gone = self._conn.execute(
                    "DELETE FROM sealed_totp WHERE subject = ? AND generation IS NULL", (subject,)
                ).rowcount
                if not gone:
                    continue
            else:
                self._conn.execute("DELETE FROM sealed_totp WHERE subject = ?", (subject,))
            self._conn.execute("DELETE FROM recovery_digest WHERE subject = ?", (subject,))

    async def remove(self, owner: Owner) -> None:
        def write() -> None:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._drop(owner)

        await self._run(write)

    async def forget(self, account: Account) -> None:
        """Drop the factor of a deleted account (``Provisioner.deletion_hooks``)."""

        def write() -> None:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute("DELETE FROM sealed_totp WHERE subject = ?", (account.subject,))
                self._conn.execute(
                    "DELETE FROM recovery_digest WHERE subject = ?", (account.subject,)
                )

        await self._run(write)

    async def recovery_left(self, owner: Owner) -> int:
        def count() -> int:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                found = self._row(owner)
                if found is None:
                    return 0
                row = self._conn.execute(
                    "SELECT count(*) FROM recovery_digest WHERE subject = ?", (found[0],)
                ).fetchone()
                return int(row[0])

        return await self._run(count)

    async def verify(self, owner: Owner, code: str) -> bool:
        """A current TOTP code not used before, or an unused recovery code (then spent). A
        sealed secret that does not open never matches (logged): the login is refused."""

        def check() -> bool:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                found = self._row(owner)
                if found is None:
                    return False
                subject, kid, nonce, sealed, last_step = found
                try:
                    secret = self._keys().open(
                        kid, nonce, sealed, _aad(owner.subject, owner.generation)
                    )
                except SealError as exc:
                    log.error("web second factor of %s refused: %s", owner.address, exc)
                    secret = b""
                step = matching_step(secret.decode(), code) if secret else None
                if step is not None:
                    if step <= last_step:
                        return False  # replayed
                    self._conn.execute(
                        "UPDATE sealed_totp SET last_step = ? WHERE subject = ?", (step, subject)
                    )
                    return True
                pepper = self._pepper(create=False)
                if pepper is None:
                    return False
                spent = self._conn.execute(
                    "DELETE FROM recovery_digest WHERE subject = ? AND digest = ?",
                    (subject, _keyed(pepper, _plain_digest(code))),
                )
                return spent.rowcount == 1

        return await self._run(check)
