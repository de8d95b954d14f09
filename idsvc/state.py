"""Persistent state of the API process: admin tokens and the audit trail, in one SQLite file.

What it does:

* **Tokens.** A token reads ``idsvc_<id>_<secret>``: ``id`` is 16 hex digits (public, the name
  in logs and the audit trail), ``secret`` is 64 hex digits (256 random bits). Only
  ``HMAC-SHA256(pepper, id:secret)`` is stored; the pepper is 32 random bytes kept in the same
  file. A fast keyed hash is enough because the secret has full entropy (nothing to brute-force);
  a stolen database does not yield usable tokens. The plaintext is returned once, by
  :func:`create_token`, and never stored or logged. Revoked tokens stay (for the audit trail).
* **Audit.** :class:`PersistentAuditSink` is an :class:`idsvc.audit.AuditSink`: ``emit`` only
  queues (bounded, never blocks the event loop); a single worker thread writes queued events in
  one transaction. :meth:`StateStore.query_audit` filters by actor/action/target/domain/time and
  pages newest first with an opaque cursor. Events older than ``audit_retention_days`` are pruned
  when the store opens.

What it does not do: decide what a token may do (``idsvc.api.security`` does), or share the file
with the directory (the embedded directory keeps its own database).

How it fails: SQLite errors become ``TemporaryFailure`` (locked, disk full) or ``ConfigError``
(cannot open the file). Malformed input (token names, domains, cursors) raises ``InvalidInput``.
When the audit queue is full, events are dropped and counted in ``dropped`` (and logged), so a
stuck disk cannot stall authentication.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from idsvc.audit import AuditEvent, AuditSink, FanoutAuditSink, LogAuditSink, redact
from idsvc.config import Settings
from idsvc.errors import ConfigError, InvalidInput, NotFound, TemporaryFailure
from idsvc.model import Page, canonical_address, canonical_domain

log = logging.getLogger(__name__)

T = TypeVar("T")

TOKEN_PREFIX = "idsvc"  # noqa: S105 - the public prefix of a token, not a secret
TOKEN_RE = re.compile(r"idsvc_([0-9a-f]{16})_([0-9a-f]{64})")
TOKEN_ID_RE = re.compile(r"[0-9a-f]{16}")
MAX_TOKEN_TEXT = 128  # longer presented tokens are refused before any parsing
MAX_TOKEN_NAME = 64
MAX_TOKEN_DOMAINS = 100
MAX_AUDIT_QUEUE = 10_000
MAX_AUDIT_FIELD = 1024  # actor/target/action values are cut to this many characters
MAX_PAGE = 1000
_SCHEMA_VERSION = 1


class Scope(StrEnum):
    """What a token may do. ``domains`` narrows ``domain_admin`` (required) and ``read_only``."""

    ADMIN = "admin"  # everything, every domain
    DOMAIN_ADMIN = "domain_admin"  # read and write inside the named domains
    READ_ONLY = "read_only"  # read only: every domain when ``domains`` is empty, else those


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as stored, without its secret. ``owner`` is the mailbox of the person holding it
    (used by the rank rule: a domain admin cannot touch a mailbox whose tokens outrank it)."""

    id: str
    name: str
    scope: Scope
    domains: tuple[str, ...]
    owner: str | None
    created: datetime
    created_by: str
    revoked: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None

    @property
    def actor(self) -> str:
        """How this token appears as ``actor`` in the audit trail."""
        return f"token:{self.id}"


def token_view(info: TokenInfo) -> dict[str, Any]:
    """A token as plain JSON-ready data (the REST API's ``TokenOut`` and ``idsvc token --json``)."""
    return {
        "id": info.id,
        "name": info.name,
        "scope": info.scope.value,
        "domains": list(info.domains),
        "owner": info.owner,
        "created": info.created.isoformat(),
        "created_by": info.created_by,
        "revoked": None if info.revoked is None else info.revoked.isoformat(),
    }


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One persisted audit event; ``id`` grows with insertion order."""

    id: int
    time: datetime
    action: str
    outcome: str
    actor: str
    target: str
    remote: str | None
    service: str | None
    detail: dict[str, Any]


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> str:
    """Timestamps are stored as UTC ISO strings with milliseconds, which sort as text."""
    if value.tzinfo is None:
        raise InvalidInput("timestamps must carry a time zone")
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def _clip(value: str | None) -> str | None:
    return None if value is None else value[:MAX_AUDIT_FIELD]


def domain_of_target(target: str) -> str:
    """The domain an audit target belongs to (``a@b`` → ``b``, ``@b`` → ``b``, ``b`` → ``b``)."""
    return target.rpartition("@")[2].lower()


def check_token_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidInput("token name must not be empty")
    if len(name) > MAX_TOKEN_NAME:
        raise InvalidInput(f"token name longer than {MAX_TOKEN_NAME} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise InvalidInput("token name contains control characters")
    return name


def check_scope(scope: Scope | str, domains: Iterable[str]) -> tuple[Scope, tuple[str, ...]]:
    """Validate a scope and canonicalise its domains (sorted, unique)."""
    try:
        parsed = Scope(scope)
    except ValueError as exc:
        known = ", ".join(s.value for s in Scope)
        raise InvalidInput(f"unknown scope; use one of {known}") from exc
    names = tuple(sorted({canonical_domain(d) for d in domains}))
    if len(names) > MAX_TOKEN_DOMAINS:
        raise InvalidInput(f"a token names at most {MAX_TOKEN_DOMAINS} domains")
    if parsed is Scope.ADMIN and names:
        raise InvalidInput("an admin token is not limited to domains; use domain_admin")
    if parsed is Scope.DOMAIN_ADMIN and not names:
        raise InvalidInput("a domain_admin token needs at least one domain")
    return parsed, names


def parse_token(text: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed presented token, else None (no detail for attackers)."""
    if len(text) > MAX_TOKEN_TEXT:
        return None
    match = TOKEN_RE.fullmatch(text)
    return None if match is None else (match.group(1), match.group(2))


_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    hash BLOB NOT NULL,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    domains TEXT NOT NULL,
    owner TEXT,
    created TEXT NOT NULL,
    created_by TEXT NOT NULL,
    revoked TEXT
);
CREATE INDEX IF NOT EXISTS tokens_owner ON tokens(owner);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    actor TEXT NOT NULL,
    target TEXT NOT NULL,
    domain TEXT NOT NULL,
    remote TEXT,
    service TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit(time);
CREATE INDEX IF NOT EXISTS audit_actor ON audit(actor, id);
CREATE INDEX IF NOT EXISTS audit_action ON audit(action, id);
CREATE INDEX IF NOT EXISTS audit_target ON audit(target, id);
CREATE INDEX IF NOT EXISTS audit_domain ON audit(domain, id);
"""


def default_state_path(settings: Settings) -> Path:
    """``settings.api.state_path``, else ``state.db`` next to the embedded store's file."""
    if settings.api.state_path is not None:
        return settings.api.state_path
    return settings.directory.embedded.path.parent / "state.db"


class StateStore:
    """Tokens and audit records in SQLite (WAL). All SQL runs on one worker thread, which
    serialises writes and keeps reads after earlier audit writes (FIFO)."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor, path: Path) -> None:
        self._conn = conn
        self._executor = executor
        self.path = path
        self._pepper = b""
        self._closed = False
        self.audit_sink = PersistentAuditSink(self)

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, path: Path, *, busy_timeout: float = 5.0, audit_retention_days: int = 365
    ) -> StateStore:
        """Open (create) the state file; parent directory is created 0700 when missing."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idsvc-state")

        def connect() -> sqlite3.Connection:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=busy_timeout, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_DDL)
            return conn

        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, connect)
        except (sqlite3.Error, OSError) as exc:
            executor.shutdown(wait=False)
            raise ConfigError(f"cannot open state database {path}: {exc}") from exc
        store = cls(conn, executor, path)
        try:
            await store._run(lambda: path.chmod(0o600))
            store._pepper = await store._run(store._init_meta)
            if audit_retention_days > 0:
                cutoff = _ts(_now() - timedelta(days=audit_retention_days))
                await store._run(lambda: store._write("DELETE FROM audit WHERE time < ?", cutoff))
        except BaseException:
            await store.close()
            raise
        return store

    @classmethod
    async def open_for(cls, settings: Settings) -> StateStore:
        return await cls.open(
            default_state_path(settings),
            audit_retention_days=settings.api.audit_retention_days,
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._flush_audit)
            await loop.run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=True)

    # -- plumbing -------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise TemporaryFailure("state store is closed")

        def guarded() -> T:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                raise TemporaryFailure(f"state database: {exc}") from exc
            except sqlite3.Error as exc:
                raise TemporaryFailure(f"state database error: {type(exc).__name__}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, guarded)

    def _write(self, sql: str, *args: Any) -> int:
        with self._conn:
            return self._conn.execute(sql, args).rowcount

    def _init_meta(self) -> bytes:
        with self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('pepper', ?)",
                (secrets.token_bytes(32),),
            )
            self._conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)",
                (str(_SCHEMA_VERSION).encode(),),
            )
        row = self._conn.execute("SELECT value FROM meta WHERE key='pepper'").fetchone()
        return bytes(row[0])

    def _digest(self, token_id: str, secret: str) -> bytes:
        return hmac.new(self._pepper, f"{token_id}:{secret}".encode(), hashlib.sha256).digest()

    # -- tokens ---------------------------------------------------------------------------------

    async def token_count(self, *, active_only: bool = True) -> int:
        sql = (
            "SELECT count(*) FROM tokens WHERE revoked IS NULL"
            if active_only
            else "SELECT count(*) FROM tokens"
        )
        return int(await self._run(lambda: self._conn.execute(sql).fetchone()[0]))

    async def add_token(
        self,
        *,
        name: str,
        scope: Scope | str,
        domains: Iterable[str] = (),
        owner: str | None = None,
        created_by: str,
    ) -> tuple[TokenInfo, str]:
        """Create a token; returns its info and the plaintext (shown once, never stored)."""
        parsed, names = check_scope(scope, domains)
        info = TokenInfo(
            id=secrets.token_hex(8),
            name=check_token_name(name),
            scope=parsed,
            domains=names,
            owner=None if owner is None else canonical_address(owner),
            created=_now().replace(microsecond=0),
            created_by=created_by[:MAX_AUDIT_FIELD],
        )
        secret = secrets.token_hex(32)
        digest = self._digest(info.id, secret)
        await self._run(
            lambda: self._write(
                "INSERT INTO tokens(id, hash, name, scope, domains, owner, created, created_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                info.id,
                digest,
                info.name,
                info.scope.value,
                json.dumps(list(info.domains)),
                info.owner,
                _ts(info.created),
                info.created_by,
            )
        )
        return info, f"{TOKEN_PREFIX}_{info.id}_{secret}"

    async def verify_token(self, presented: str) -> TokenInfo | None:
        """The active token ``presented`` names, or None (malformed, unknown, wrong, revoked)."""
        parsed = parse_token(presented)
        if parsed is None:
            return None
        token_id, secret = parsed
        row = await self._run(
            lambda: self._conn.execute(_SELECT_HASH + " WHERE id = ?", (token_id,)).fetchone()
        )
        expected = self._digest(token_id, secret)
        if row is None:
            hmac.compare_digest(expected, expected)  # same work for unknown ids
            return None
        if not hmac.compare_digest(bytes(row[0]), expected):
            return None
        info = _token_from_row(row[1:])
        return info if info.active else None

    async def get_token(self, token_id: str) -> TokenInfo:
        if not TOKEN_ID_RE.fullmatch(token_id):
            raise NotFound("token does not exist")
        row = await self._run(
            lambda: self._conn.execute(_SELECT_TOKEN + " WHERE id = ?", (token_id,)).fetchone()
        )
        if row is None:
            raise NotFound("token does not exist")
        return _token_from_row(row)

    async def list_tokens(
        self,
        *,
        cursor: str | None = None,
        limit: int = 100,
        include_revoked: bool = True,
        where: Callable[[TokenInfo], bool] | None = None,
    ) -> Page[TokenInfo]:
        """Tokens ordered by id after ``cursor`` (an id). ``where`` filters in Python (the table
        is small: tokens are created by hand); the page is filled from further rows."""
        if cursor is not None and not TOKEN_ID_RE.fullmatch(cursor):
            raise InvalidInput("malformed cursor")
        limit = max(1, min(limit, MAX_PAGE))
        after = cursor or ""
        items: list[TokenInfo] = []
        while len(items) < limit:
            rows = await self._run(
                lambda after=after: self._conn.execute(  # type: ignore[misc]
                    _SELECT_TOKEN + " WHERE id > ? ORDER BY id LIMIT ?",
                    (after, MAX_PAGE),
                ).fetchall()
            )
            if not rows:
                return Page(items)
            for row in rows:
                info = _token_from_row(row)
                after = info.id
                if not include_revoked and not info.active:
                    continue
                if where is not None and not where(info):
                    continue
                items.append(info)
                if len(items) == limit:
                    break
        return Page(items, next_cursor=items[-1].id if items else None)

    async def tokens_of_owner(self, owner: str) -> list[TokenInfo]:
        """Active tokens whose owner is ``owner`` (canonical address)."""
        rows = await self._run(
            lambda: self._conn.execute(
                _SELECT_TOKEN + " WHERE owner = ? AND revoked IS NULL LIMIT 1000",
                (owner,),
            ).fetchall()
        )
        return [_token_from_row(r) for r in rows]

    async def revoke_token(self, token_id: str) -> TokenInfo:
        """Mark a token revoked (idempotent); NotFound when there is no such token."""
        info = await self.get_token(token_id)
        if info.revoked is None:
            when = _now().replace(microsecond=0)
            await self._run(
                lambda: self._write(
                    "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL",
                    _ts(when),
                    token_id,
                )
            )
        return await self.get_token(token_id)

    # -- audit ----------------------------------------------------------------------------------

    def _insert_audit(self, events: Sequence[AuditEvent]) -> None:
        rows = [
            (
                _ts(ev.time),
                _clip(ev.action) or "",
                _clip(ev.outcome) or "",
                _clip(ev.actor) or "",
                _clip(ev.target) or "",
                domain_of_target(_clip(ev.target) or ""),
                _clip(ev.remote),
                _clip(ev.service),
                json.dumps(redact(ev.detail), default=str)[:65536],
            )
            for ev in events
        ]
        with self._conn:
            self._conn.executemany(
                "INSERT INTO audit(time, action, outcome, actor, target, domain, remote, service,"
                " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def _flush_audit(self) -> None:
        events = self.audit_sink.drain()
        if not events:
            return
        try:
            self._insert_audit(events)
        except sqlite3.Error:
            log.exception("could not persist %d audit events", len(events))

    async def flush_audit(self) -> None:
        """Wait until every event emitted so far is written."""
        await self._run(self._flush_audit)

    def schedule_audit_flush(self) -> bool:
        """Queue a flush on the worker thread; False when the store is closed."""
        if self._closed:
            return False
        try:
            self._executor.submit(self._flush_audit)
        except RuntimeError:  # executor shut down
            return False
        return True

    async def query_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        domains: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[AuditRecord]:
        """Newest first. ``action`` ending in ``.*`` matches the prefix (``account.*``).
        ``domains`` (when given) keeps events whose target lies in one of those domains."""
        clauses: list[str] = []
        args: list[Any] = []
        if actor is not None:
            clauses.append("actor = ?")
            args.append(actor)
        if action is not None:
            if action.endswith(".*"):
                clauses.append("substr(action, 1, ?) = ?")
                args += [len(action) - 1, action[:-1]]
            else:
                clauses.append("action = ?")
                args.append(action)
        if target is not None:
            clauses.append("target = ?")
            args.append(target)
        if domains is not None:
            if not domains:
                return Page([])
            clauses.append(f"domain IN ({', '.join('?' * len(domains))})")
            args += list(domains)
        if since is not None:
            clauses.append("time >= ?")
            args.append(_ts(since))
        if until is not None:
            clauses.append("time < ?")
            args.append(_ts(until))
        if cursor is not None:
            if not cursor.isdigit() or len(cursor) > 19:
                raise InvalidInput("malformed cursor")
            clauses.append("id < ?")
            args.append(int(cursor))
        limit = max(1, min(limit, MAX_PAGE))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        # every clause above is a fixed string; values are bound parameters
        sql = _SELECT_AUDIT + where + " ORDER BY id DESC LIMIT ?"
        args.append(limit + 1)
        self._flush_audit_pending_first()
        rows = await self._run(lambda: self._conn.execute(sql, args).fetchall())
        items = [
            AuditRecord(
                id=r[0],
                time=datetime.fromisoformat(r[1]),
                action=r[2],
                outcome=r[3],
                actor=r[4],
                target=r[5],
                remote=r[6],
                service=r[7],
                detail=json.loads(r[8]),
            )
            for r in rows[:limit]
        ]
        more = len(rows) > limit
        return Page(items, next_cursor=str(items[-1].id) if more and items else None)

    def _flush_audit_pending_first(self) -> None:
        # the worker is FIFO: a flush queued now runs before the query that follows it
        if self.audit_sink.pending:
            self.schedule_audit_flush()


_SELECT_TOKEN = "SELECT id, name, scope, domains, owner, created, created_by, revoked FROM tokens"  # noqa: S105
_SELECT_HASH = (
    "SELECT hash, id, name, scope, domains, owner, created, created_by, revoked FROM tokens"
)
_SELECT_AUDIT = (
    "SELECT id, time, action, outcome, actor, target, remote, service, detail FROM audit"
)


def _token_from_row(row: Sequence[Any]) -> TokenInfo:
    return TokenInfo(
        id=row[0],
        name=row[1],
        scope=Scope(row[2]),
        domains=tuple(json.loads(row[3])),
        owner=row[4],
        created=datetime.fromisoformat(row[5]),
        created_by=row[6],
        revoked=None if row[7] is None else datetime.fromisoformat(row[7]),
    )


class PersistentAuditSink:
    """The AuditSink that persists into a :class:`StateStore`. ``emit`` appends to a bounded
    in-memory queue and schedules one flush; it never blocks and never raises."""

    def __init__(self, store: StateStore, *, max_queue: int = MAX_AUDIT_QUEUE) -> None:
        self._store = store
        self._queue: deque[AuditEvent] = deque()
        self._lock = threading.Lock()
        self._max = max_queue
        self._scheduled = False
        self.dropped = 0
        self.attached = False  # set by ``runtime_audit`` when a Runtime already fans out to us

    @property
    def pending(self) -> int:
        return len(self._queue)

    def emit(self, event: AuditEvent) -> None:
        with self._lock:
            if len(self._queue) >= self._max:
                self.dropped += 1
                if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                    log.warning("audit queue full: %d events dropped so far", self.dropped)
                return
            self._queue.append(event)
            if self._scheduled:
                return
            self._scheduled = True
        if not self._store.schedule_audit_flush():
            with self._lock:
                self._scheduled = False

    def drain(self) -> list[AuditEvent]:
        with self._lock:
            self._scheduled = False
            events = list(self._queue)
            self._queue.clear()
        return events


def runtime_audit(state: StateStore, log_sink: AuditSink | None = None) -> AuditSink:
    """The audit sink for ``build_runtime`` in the API process: log lines (``log_sink``,
    default every event) plus persistence.

    ``build_runtime(settings, audit=runtime_audit(state))`` makes authentications and every
    provisioning change land in the state store; ``create_app`` then does not add it again.
    """
    state.audit_sink.attached = True
    return FanoutAuditSink(log_sink or LogAuditSink(), state.audit_sink)


async def create_token(
    state: StateStore,
    *,
    name: str,
    scope: Scope | str,
    domains: Iterable[str] = (),
    owner: str | None = None,
    created_by: str = "cli",
    audit: AuditSink | None = None,
) -> tuple[TokenInfo, str]:
    """Create a token and audit the creation; returns ``(info, plaintext)`` (show it once).

    This is what ``idsvc token create`` and the API's bootstrap call. ``audit`` receives the
    ``token.create`` event (default: the store's own persistent sink). Raises ``InvalidInput``
    for a bad name, scope, domain or owner.
    """
    info, plaintext = await state.add_token(
        name=name, scope=scope, domains=domains, owner=owner, created_by=created_by
    )
    (audit or state.audit_sink).emit(
        AuditEvent(
            "token.create",
            "ok",
            actor=created_by,
            target=f"token:{info.id}",
            detail={"name": info.name, "scope": info.scope.value, "domains": list(info.domains)},
        )
    )
    return info, plaintext
