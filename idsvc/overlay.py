"""The local overlay: what idsvc keeps beside a directory — app passwords, and (for read-only
directories) local aliases and quota overrides.

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

Local aliases and quota overrides let a site that may not write its corporate directory still
add a mail alias (``sales@`` → two people, a catch-all) or give one account a different quota:
``CorporateDirectory`` reads them here before (aliases) or over (quotas) what the directory says.

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
from idsvc.errors import (
    AlreadyExists,
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    TemporaryFailure,
)
from idsvc.model import Alias, Service

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
CREATE TABLE IF NOT EXISTS local_aliases (
    source TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    destinations TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    revision INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS local_aliases_domain ON local_aliases(domain, source);
CREATE TABLE IF NOT EXISTS quota_overrides (
    subject TEXT PRIMARY KEY,
    quota INTEGER NOT NULL,
    updated TEXT NOT NULL
);
"""
MAX_QUOTA_OVERRIDES = 100_000  # read at once by a read-only directory (see quota_overrides)
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

    @staticmethod
    def may_be_app_password(presented: str) -> bool:
        """Whether ``presented`` has the shape of an app password (no I/O): the auth engine
        awaits :meth:`check`, a read in a thread, only then."""
        return normalise(presented) is not None

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


# -- local aliases and quota overrides (read-only directories) ------------------------------------


def _alias_from_row(row: Sequence[Any]) -> Alias:
    created, updated = _dt(row[3]), _dt(row[4])
    assert created is not None
    assert updated is not None
    return Alias(
        source=row[0], destinations=tuple(d for d in row[1].split(",") if d),
        enabled=bool(row[2]), created=created, updated=updated, revision=row[5],
    )  # fmt: skip


_ALIAS_SELECT = (
    "SELECT source, destinations, enabled, created, updated, revision FROM local_aliases WHERE "
)


class LocalAliases:
    """The overlay's alias and quota-override tables (same file, same worker thread)."""

    def __init__(self, store: OverlayStore) -> None:
        self._store = store

    async def get(self, source: str) -> Alias | None:
        conn = self._store._conn

        def select() -> Alias | None:
            row = conn.execute(_ALIAS_SELECT + "source = ?", (source,)).fetchone()
            return None if row is None else _alias_from_row(row)

        return await self._store._run(select)

    async def add(self, alias: Alias, domain: str) -> Alias:
        conn = self._store._conn
        now = _now()
        stored = Alias(alias.source, alias.destinations, alias.enabled, now, now, 1)

        def insert() -> Alias:
            try:
                with conn:
                    conn.execute(
                        "INSERT INTO local_aliases(source, domain, destinations, enabled, created,"
                        " updated, revision) VALUES (?, ?, ?, ?, ?, ?, 1)",
                        (alias.source, domain, ",".join(alias.destinations), int(alias.enabled),
                         _ts(now), _ts(now)),
                    )  # fmt: skip
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(f"alias {alias.source} already exists") from exc
            return stored

        return await self._store._run(insert)

    async def update(
        self,
        source: str,
        *,
        destinations: tuple[str, ...] | None,
        enabled: bool | None,
        if_revision: int | None,
    ) -> Alias:
        conn = self._store._conn

        def write() -> Alias:
            with conn:
                row = conn.execute(_ALIAS_SELECT + "source = ?", (source,)).fetchone()
                if row is None:
                    raise NotFound(f"alias {source} does not exist")
                current = _alias_from_row(row)
                if if_revision is not None and if_revision != current.revision:
                    raise Conflict(f"stale revision {if_revision} (current {current.revision})")
                dests = current.destinations if destinations is None else destinations
                on = current.enabled if enabled is None else enabled
                conn.execute(
                    "UPDATE local_aliases SET destinations = ?, enabled = ?, updated = ?,"
                    " revision = revision + 1 WHERE source = ?",
                    (",".join(dests), int(on), _ts(_now()), source),
                )
                row = conn.execute(_ALIAS_SELECT + "source = ?", (source,)).fetchone()
            return _alias_from_row(row)

        return await self._store._run(write)

    async def delete(self, source: str) -> None:
        conn = self._store._conn

        def delete() -> None:
            with conn:
                if conn.execute("DELETE FROM local_aliases WHERE source = ?", (source,)).rowcount:
                    return
            raise NotFound(f"alias {source} does not exist")

        await self._store._run(delete)

    async def page(
        self, domain: str | None, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Alias], int]:
        """Up to ``limit + 1`` aliases after ``after`` (key order) and the number matching."""
        conn = self._store._conn
        args: list[Any] = [prefix, prefix + "\U0010ffff", domain, domain]

        def select() -> tuple[list[Alias], int]:
            (total,) = conn.execute(
                "SELECT COUNT(*) FROM local_aliases WHERE "
                "source >= ? AND source < ? AND (? IS NULL OR domain = ?)",
                args,
            ).fetchone()
            rows = conn.execute(
                _ALIAS_SELECT + "source >= ? AND source < ? AND (? IS NULL OR domain = ?) "
                "AND source > ? ORDER BY source LIMIT ?",
                [*args, after if after is not None else "", limit + 1],
            ).fetchall()
            return [_alias_from_row(r) for r in rows], total

        return await self._store._run(select)

    async def quota_overrides(self) -> dict[str, int]:
        """Every quota override (subject → bytes); at most ``MAX_QUOTA_OVERRIDES``."""
        conn = self._store._conn

        def select() -> dict[str, int]:
            rows = conn.execute(
                "SELECT subject, quota FROM quota_overrides LIMIT ?", (MAX_QUOTA_OVERRIDES,)
            ).fetchall()
            return {subject: int(quota) for subject, quota in rows}

        return await self._store._run(select)

    async def set_quota(self, subject: str, quota: int | None) -> None:
        """Override ``subject``'s quota (bytes, 0 = unlimited), or drop the override (None)."""
        conn = self._store._conn

        def write() -> None:
            with conn:
                if quota is None:
                    conn.execute("DELETE FROM quota_overrides WHERE subject = ?", (subject,))
                    return
                (count,) = conn.execute("SELECT COUNT(*) FROM quota_overrides").fetchone()
                exists = conn.execute(
                    "SELECT 1 FROM quota_overrides WHERE subject = ?", (subject,)
                ).fetchone()
                if exists is None and count >= MAX_QUOTA_OVERRIDES:
                    raise InvalidInput(f"at most {MAX_QUOTA_OVERRIDES} quota overrides")
                conn.execute(
                    "INSERT INTO quota_overrides(subject, quota, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT(subject) DO UPDATE SET quota = excluded.quota, "
                    "updated = excluded.updated",
                    (subject, quota, _ts(_now())),
                )

        await self._store._run(write)
