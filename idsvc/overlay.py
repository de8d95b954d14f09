"""The local overlay: what idsvc keeps about an account beside its directory — app passwords.

An **app password** is a per-device password that idsvc generates, shows once and stores only as
a keyed hash. It belongs to one account (its *subject*: the directory's stable id, e.g. AD's
``objectGUID`` or ``entryUUID``, or the canonical address for our own schema, whose accounts are
never renamed), may be limited to some services (an SMTP-only password for a scanner) and to
source networks, may expire, and can be revoked at once. It works on top of any directory,
including a read-only one, because it lives here, not there.

The secret is 20 characters of the RFC 4648 base32 alphabet (100 random bits), shown as five
groups of four (``abcd-efgh-…``); spaces, dashes and case are ignored when it is typed. Because it
has full entropy, a fast keyed hash is enough: ``HMAC-SHA256(pepper, secret)`` with a per-store
random pepper; a stolen database yields nothing usable. A password of that shape is looked up by
its digest with one indexed query; any other password never touches this store.

Storage: one SQLite file (WAL), one connection per process on one worker thread (several idsvc
workers read the same file). Last-use times are kept in memory and written in batches (every
``FLUSH_EVERY`` seconds and on close), never one write per login.

How it fails: SQLite errors become ``TemporaryFailure`` (the auth core answers a temporary
failure, never a wrong password); an unknown id is ``NotFound``; invalid names, services,
networks or too many passwords for one account are ``InvalidInput``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from idsvc.auth.app_password import AppCheck, AppPassword
from idsvc.errors import ConfigError, InvalidInput, NotFound, TemporaryFailure
from idsvc.model import Service

log = logging.getLogger(__name__)

T = TypeVar("T")

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base32, lower case
SECRET_LENGTH = 20  # characters: 100 random bits
MAX_PER_ACCOUNT = 50
MAX_NAME = 64
MAX_NETWORKS = 16
MAX_PENDING_TOUCHES = 10_000
FLUSH_EVERY = 10.0  # seconds between batched last-use writes

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS app_passwords (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    services TEXT NOT NULL,
    networks TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT,
    revoked TEXT,
    last_used TEXT,
    last_ip TEXT
);
CREATE INDEX IF NOT EXISTS app_passwords_subject ON app_passwords(subject);
"""
_SELECT = (
    "SELECT id, subject, owner, name, services, networks, created, expires, revoked, last_used, "
    "last_ip FROM app_passwords WHERE "
)


def generate_secret() -> str:
    """A new secret, grouped for display: ``abcd-efgh-ijkl-mnop-qrst``."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, SECRET_LENGTH, 4))


def normalise(presented: str) -> str | None:
    """The secret a typed password stands for, or None when it cannot be an app password."""
    if len(presented) > 3 * SECRET_LENGTH:
        return None
    text = presented.replace("-", "").replace(" ", "").lower()
    if len(text) != SECRET_LENGTH or not all(c in ALPHABET for c in text):
        return None
    return text


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise InvalidInput(f"an app password name is 1-{MAX_NAME} printable characters")
    return name


def check_networks(networks: Iterable[str]) -> tuple[str, ...]:
    out = []
    for text in networks:
        try:
            out.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError as exc:
            raise InvalidInput(f"not a network: {text!r}") from exc
    if len(out) > MAX_NETWORKS:
        raise InvalidInput(f"at most {MAX_NETWORKS} networks")
    return tuple(sorted(set(out)))


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _from_row(row: Sequence[Any]) -> AppPassword:
    services = frozenset(Service(s) for s in row[4].split(",") if s)
    created = _dt(row[6])
    assert created is not None
    return AppPassword(
        id=row[0], subject=row[1], owner=row[2], name=row[3], services=services,
        networks=tuple(n for n in row[5].split(",") if n), created=created,
        expires=_dt(row[7]), revoked=_dt(row[8]), last_used=_dt(row[9]), last_ip=row[10],
    )  # fmt: skip


class OverlayStore:
    """App passwords in one SQLite file; every call runs on the store's one worker thread."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor, path: Path) -> None:
        self._conn = conn
        self._executor = executor
        self.path = path
        self._pepper = b""
        self._touches: dict[str, tuple[str, str | None]] = {}  # id -> (time, ip), unflushed
        self._flusher: asyncio.TimerHandle | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, busy_timeout: float = 5.0) -> OverlayStore:
        """Open (create) the overlay file, mode 0600 in a 0700 directory when created."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idsvc-overlay")

        def connect() -> sqlite3.Connection:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=busy_timeout, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_DDL)
            path.chmod(0o600)
            return conn

        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except (sqlite3.Error, OSError) as exc:
            executor.shutdown(wait=False)
            raise ConfigError(f"cannot open overlay database {path}: {exc}") from exc
        store = cls(conn, executor, path)
        try:
            store._pepper = await store._run(store._init_pepper)
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        if self._closed:
            return
        if self._flusher is not None:
            self._flusher.cancel()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._flush_touches)
            await loop.run_in_executor(self._executor, self._conn.close)
        finally:
            self._closed = True
            self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise TemporaryFailure("overlay store is closed")

        def guarded() -> T:
            try:
                return fn()
            except sqlite3.Error as exc:
                raise TemporaryFailure(f"overlay database: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, guarded)

    def _init_pepper(self) -> bytes:
        with self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('pepper', ?)",
                (secrets.token_bytes(32),),
            )
        row = self._conn.execute("SELECT value FROM meta WHERE key='pepper'").fetchone()
        return bytes(row[0])

    def _digest(self, secret: str) -> bytes:
        return hmac.new(self._pepper, secret.encode("ascii"), hashlib.sha256).digest()

    # -- the auth core's question --------------------------------------------------------------

    async def check(
        self, subject: str, presented: str, service: Service | None, remote_ip: str | None
    ) -> tuple[AppCheck, AppPassword | None]:
        """Is ``presented`` one of ``subject``'s app passwords, usable here and now?"""
        secret = normalise(presented)
        if secret is None:
            return AppCheck.NO_MATCH, None
        digest = self._digest(secret)

        def find() -> AppPassword | None:
            row = self._conn.execute(_SELECT + "digest = ?", (digest,)).fetchone()
            return None if row is None else _from_row(row)

        found = await self._run(find)
        if found is None or not hmac.compare_digest(found.subject, subject):
            return AppCheck.NO_MATCH, None
        if not found.usable(service, remote_ip, _now()):
            return AppCheck.REFUSED, found
        self._touch(found.id, remote_ip)
        return AppCheck.OK, found

    def _touch(self, app_id: str, remote_ip: str | None) -> None:
        if len(self._touches) >= MAX_PENDING_TOUCHES and app_id not in self._touches:
            return  # bounded: a flood of distinct ids loses last-use times, never memory
        self._touches[app_id] = (_ts(_now()) or "", remote_ip)
        if self._flusher is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._flusher = loop.call_later(FLUSH_EVERY, self._schedule_flush)

    def _schedule_flush(self) -> None:
        self._flusher = None
        if not self._closed:
            asyncio.get_running_loop().run_in_executor(self._executor, self._flush_touches)

    def _flush_touches(self) -> None:
        touches, self._touches = self._touches, {}
        if not touches:
            return
        try:
            with self._conn:
                self._conn.executemany(
                    "UPDATE app_passwords SET last_used = ?, last_ip = ? WHERE id = ?",
                    [(when, ip, app_id) for app_id, (when, ip) in touches.items()],
                )
        except sqlite3.Error as exc:  # last-use times are informational: log, never fail
            log.warning("could not record app password use: %s", exc)

    # -- management (provisioning) ---------------------------------------------------------------

    async def create(
        self,
        subject: str,
        owner: str,
        name: str,
        *,
        services: Iterable[Service] = (),
        networks: Iterable[str] = (),
        expires: datetime | None = None,
    ) -> tuple[AppPassword, str]:
        """A new app password; returns it and its secret (shown once, never stored)."""
        name = check_name(name)
        nets = check_networks(networks)
        wanted = frozenset(services)
        if expires is not None and expires.tzinfo is None:
            raise InvalidInput("expires must carry a time zone")
        secret = generate_secret()
        app = AppPassword(
            id=secrets.token_hex(8), subject=subject, owner=owner, name=name,
            services=wanted, networks=nets, created=_now(), expires=expires,
        )  # fmt: skip
        digest = self._digest(normalise(secret) or "")

        def insert() -> None:
            with self._conn:
                (count,) = self._conn.execute(
                    "SELECT COUNT(*) FROM app_passwords WHERE subject = ? AND revoked IS NULL",
                    (subject,),
                ).fetchone()
                if count >= MAX_PER_ACCOUNT:
                    raise InvalidInput(f"at most {MAX_PER_ACCOUNT} app passwords per account")
                self._conn.execute(
                    "INSERT INTO app_passwords(id, subject, owner, name, digest, services, "
                    "networks, created, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (app.id, subject, owner, name, digest,
                     ",".join(sorted(s.value for s in wanted)), ",".join(nets),
                     _ts(app.created), _ts(expires)),
                )  # fmt: skip

        await self._run(insert)
        return app, secret

    async def list_for(self, subject: str) -> list[AppPassword]:
        def select() -> list[AppPassword]:
            self._flush_touches()
            rows = self._conn.execute(
                _SELECT + "subject = ? ORDER BY created, id",
                (subject,),
            ).fetchall()
            return [_from_row(r) for r in rows]

        return await self._run(select)

    async def revoke(self, subject: str, app_id: str) -> AppPassword:
        """Revoke one (idempotent); NotFound when ``subject`` has no such app password."""

        def update() -> AppPassword:
            with self._conn:
                self._conn.execute(
                    "UPDATE app_passwords SET revoked = ? "
                    "WHERE id = ? AND subject = ? AND revoked IS NULL",
                    (_ts(_now()), app_id, subject),
                )
            row = self._conn.execute(
                _SELECT + "id = ? AND subject = ?",
                (app_id, subject),
            ).fetchone()
            if row is None:
                raise NotFound(f"no app password {app_id!r} for this account")
            return _from_row(row)

        return await self._run(update)
