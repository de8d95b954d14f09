"""The SCIM mapping table: what SCIM clients send that the directory model has no field for.

What it does: keeps, per user, the client's ``externalId`` and the SCIM-only attributes (name
components, contact e-mails, enterprise extension) as bounded JSON, with an index on
``externalId`` and on each e-mail value (for ``filter``); per group, its ``externalId`` and, for a
group that has no member yet (an alias needs at least one destination), the fact that it exists.
Each row carries its own revision (part of the SCIM ``version``) and the ``created`` time of the
directory object it belongs to: a row whose object was deleted and re-created elsewhere (CLI,
REST) no longer matches and is ignored, so stale data never attaches to a new account.

The file is ``scim.db`` next to the API state database (SQLite, WAL). Each call opens its own
connection in a worker thread and closes it: nothing to shut down, nothing shared between loops.

What it does not do: hold anything the directory holds (address, display name, enabled,
password), or authorise (the routes do).

How it fails: SQLite errors become ``TemporaryFailure``; a value over the size limit raises
``InvalidInput``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from idsvc.errors import InvalidInput, TemporaryFailure

T = TypeVar("T")
MAX_DATA = 16_384  # bytes of SCIM-only JSON per user
MAX_HITS = 1000

_DDL = """
CREATE TABLE IF NOT EXISTS scim_user (
    address TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    external_id TEXT,
    data TEXT NOT NULL,
    rev INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS scim_user_external ON scim_user(external_id);
CREATE TABLE IF NOT EXISTS scim_email (
    address TEXT NOT NULL REFERENCES scim_user(address) ON DELETE CASCADE,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scim_email_value ON scim_email(value);
CREATE INDEX IF NOT EXISTS scim_email_address ON scim_email(address);
CREATE TABLE IF NOT EXISTS scim_group (
    source TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    external_id TEXT,
    pending INTEGER NOT NULL,
    rev INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS scim_group_external ON scim_group(external_id);
"""


_SELECT_GROUP = "SELECT source, created, external_id, pending, rev FROM scim_group"


@dataclass(frozen=True, slots=True)
class UserRow:
    created: str
    external_id: str | None
    data: dict[str, Any]
    rev: int


@dataclass(frozen=True, slots=True)
class GroupRow:
    source: str
    created: str
    external_id: str | None
    pending: bool
    rev: int


@dataclass
class ScimStore:
    path: Path
    busy_timeout: float = 5.0
    _ready: bool = field(default=False, init=False)

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        conn.execute("PRAGMA foreign_keys=ON")
        if not self._ready:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_DDL)
            self.path.chmod(0o600)  # names and contact addresses: personal data
            self._ready = True
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            try:
                conn = self._connect()
                try:
                    # autocommit connection: one explicit transaction per call, taken with the
                    # write lock up front so read-then-write sequences (revision bumps) are atomic
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        result = fn(conn)
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                    return result
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                raise TemporaryFailure(f"SCIM mapping table: {type(exc).__name__}") from exc

        return await asyncio.to_thread(call)

    async def _keys(self, sql: str, value: str) -> list[str]:
        """The first column of ``sql`` run with ``(value, MAX_HITS)``: at most MAX_HITS keys."""
        return await self._run(lambda c: [r[0] for r in c.execute(sql, (value, MAX_HITS))])

    # -- users ----------------------------------------------------------------------------------

    async def get_user(self, address: str, created: str) -> UserRow | None:
        """The row of ``address`` if it belongs to the account created at ``created``."""

        def q(conn: sqlite3.Connection) -> UserRow | None:
            row = conn.execute(
                "SELECT created, external_id, data, rev FROM scim_user WHERE address = ?",
                (address,),
            ).fetchone()
            if row is None or row[0] != created:
                return None
            return UserRow(row[0], row[1], json.loads(row[2]), row[3])

        return await self._run(q)

    async def put_user(
        self,
        address: str,
        created: str,
        external_id: str | None,
        data: dict[str, Any],
        emails: Sequence[str],
    ) -> int:
        """Store the SCIM-only part of a user; returns the row's new revision."""
        blob = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if len(blob.encode()) > MAX_DATA:
            raise InvalidInput(f"SCIM attributes of one user exceed {MAX_DATA} bytes")

        def q(conn: sqlite3.Connection) -> int:
            old = conn.execute("SELECT rev FROM scim_user WHERE address = ?", (address,)).fetchone()
            rev = 1 if old is None else int(old[0]) + 1
            conn.execute(
                "INSERT INTO scim_user(address, created, external_id, data, rev)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(address) DO UPDATE SET"
                " created=excluded.created, external_id=excluded.external_id,"
                " data=excluded.data, rev=excluded.rev",
                (address, created, external_id, blob, rev),
            )
            conn.execute("DELETE FROM scim_email WHERE address = ?", (address,))
            conn.executemany(
                "INSERT INTO scim_email(address, value) VALUES (?, ?)",
                [(address, e.lower()) for e in dict.fromkeys(emails)],
            )
            return rev

        return await self._run(q)

    async def delete_user(self, address: str) -> None:
        await self._run(lambda c: c.execute("DELETE FROM scim_user WHERE address = ?", (address,)))

    async def users_by_external_id(self, external_id: str) -> list[str]:
        return await self._keys(
            "SELECT address FROM scim_user WHERE external_id = ? ORDER BY address LIMIT ?",
            external_id,
        )

    async def users_by_email(self, value: str) -> list[str]:
        return await self._keys(
            "SELECT DISTINCT address FROM scim_email WHERE value = ? ORDER BY address LIMIT ?",
            value.lower(),
        )

    # -- groups ---------------------------------------------------------------------------------

    async def get_group(self, source: str) -> GroupRow | None:
        def q(conn: sqlite3.Connection) -> GroupRow | None:
            row = conn.execute(
                _SELECT_GROUP + " WHERE source = ?",
                (source,),
            ).fetchone()
            return None if row is None else GroupRow(row[0], row[1], row[2], bool(row[3]), row[4])

        return await self._run(q)

    async def put_group(
        self, source: str, created: str, external_id: str | None, *, pending: bool
    ) -> int:
        def q(conn: sqlite3.Connection) -> int:
            old = conn.execute("SELECT rev FROM scim_group WHERE source = ?", (source,)).fetchone()
            rev = 1 if old is None else int(old[0]) + 1
            conn.execute(
                "INSERT INTO scim_group(source, created, external_id, pending, rev)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(source) DO UPDATE SET"
                " created=excluded.created, external_id=excluded.external_id,"
                " pending=excluded.pending, rev=excluded.rev",
                (source, created, external_id, int(pending), rev),
            )
            return rev

        return await self._run(q)

    async def delete_group(self, source: str) -> None:
        await self._run(lambda c: c.execute("DELETE FROM scim_group WHERE source = ?", (source,)))

    async def groups_by_external_id(self, external_id: str) -> list[str]:
        return await self._keys(
            "SELECT source FROM scim_group WHERE external_id = ? ORDER BY source LIMIT ?",
            external_id,
        )

    async def pending_groups(self, limit: int) -> list[GroupRow]:
        """Groups without members (no alias yet), ordered by source, at most ``limit``."""

        def q(conn: sqlite3.Connection) -> list[GroupRow]:
            rows = conn.execute(
                _SELECT_GROUP + " WHERE pending = 1 ORDER BY source LIMIT ?",
                (limit,),
            ).fetchall()
            return [GroupRow(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

        return await self._run(q)
