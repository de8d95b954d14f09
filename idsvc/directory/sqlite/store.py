"""``SqliteDirectory``: the embedded store, a full read-write ``Directory`` in one SQLite file.

What it does: every ``Directory`` method of ``idsvc.directory.base`` with its documented semantics.
Lookups are one indexed statement each (``find_domain`` resolves alias domains in the same
statement). Writes run in one ``BEGIN IMMEDIATE`` transaction that checks, then changes: a failed
write leaves nothing behind. Every write sets ``updated`` and bumps ``revision``; ``if_revision``
is compared inside that transaction, so compare-and-swap is atomic. Listings are ordered by key
(code point order), resume strictly after the key inside the opaque cursor (so deleting or adding
entries between pages never repeats or skips the others), hold at most ``min(limit, MAX_PAGE)``
items, and carry ``total`` (all entries matching domain and prefix, regardless of the cursor).

Rules it keeps: a domain name and an alias-domain name share one namespace (``AlreadyExists``);
a domain cannot be its own alias domain (``InvalidInput``); an account address and an alias source
share one namespace (``AlreadyExists``); accounts and aliases need an existing real domain
(``NotFound`` otherwise; an alias domain holds no objects of its own); a domain with accounts or
aliases is deleted only with ``cascade=True`` (``Conflict`` otherwise); ``add_*`` sets ``created``,
``updated`` and ``revision=1`` itself. ``bulk_add_accounts`` is the exception made for imports: it
keeps the timestamps and revision of the given accounts.

What it does not: canonicalise (values must arrive canonical and are refused otherwise), verify
passwords, or cache.

How it fails: ``InvalidInput`` for bad arguments, ``NotFound``/``AlreadyExists``/``Conflict`` as
above, ``TemporaryFailure`` for a locked database, I/O errors, a full disk or an overload,
``DirectoryError`` for a corrupt file or a closed store.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TypeVar

from idsvc.config import EmbeddedSettings
from idsvc.directory.base import AccountChanges, AliasChanges, DomainChanges
from idsvc.directory.sqlite import codec
from idsvc.directory.sqlite import queries as q
from idsvc.directory.sqlite.codec import Row
from idsvc.directory.sqlite.runner import Mode, Runner
from idsvc.directory.sqlite.schema import initialise, prepare_file
from idsvc.errors import (
    Conflict,
    DirectoryError,
    InvalidInput,
    NotFound,
    TemporaryFailure,
)
from idsvc.model import Account, Address, Alias, Domain, Page, utcnow

T = TypeVar("T")


class SqliteDirectory:
    """The embedded store. Build it with :meth:`open`; :meth:`close` it when done."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    @property
    def path(self) -> str:
        return str(self._runner.path)

    @classmethod
    async def open(cls, settings: EmbeddedSettings) -> SqliteDirectory:
        """Create (0700 directory, 0600 file) or open the store, WAL on, schema migrated."""
        path = settings.path.expanduser()
        runner = Runner(path, settings.busy_timeout, settings.workers)
        try:
            await runner.call(lambda: prepare_file(path))
            await runner.run(lambda conn: initialise(conn, path), "plain")
        except TemporaryFailure:
            await runner.close()
            raise
        except DirectoryError as exc:
            await runner.close()
            if str(path) in str(exc):
                raise
            raise DirectoryError(f"cannot open embedded store {path}: {exc}") from exc
        except BaseException:
            await runner.close()
            raise
        return cls(runner)

    async def ping(self) -> None:
        if self._runner.closed:
            raise TemporaryFailure("the embedded store is closed")
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone(), "plain")

    async def close(self) -> None:
        await self._runner.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T], mode: Mode) -> T:
        return await self._runner.run(fn, mode)

    # -- lookups ------------------------------------------------------------------------------

    async def find_domain(self, name: str) -> Domain | None:
        def query(conn: sqlite3.Connection) -> Domain | None:
            row = conn.execute(q.SQL_FIND_DOMAIN, {"name": name}).fetchone()
            return None if row is None else codec.domain_of(row)

        return await self._run(query, "plain")

    async def find_account(self, address: Address) -> Account | None:
        key = str(address)

        def query(conn: sqlite3.Connection) -> Account | None:
            row = conn.execute(q.SQL_FIND_ACCOUNT, (key,)).fetchone()
            return None if row is None else codec.account_of(row)

        return await self._run(query, "plain")

    async def find_alias(self, source: str) -> Alias | None:
        def query(conn: sqlite3.Connection) -> Alias | None:
            row = conn.execute(q.SQL_FIND_ALIAS, (source,)).fetchone()
            return None if row is None else codec.alias_of(row)

        return await self._run(query, "plain")

    # -- domains ------------------------------------------------------------------------------

    async def add_domain(self, domain: Domain) -> Domain:
        name = codec.check_domain_name(domain.name)
        aliases = codec.check_alias_domains(name, domain.alias_domains)
        codec.check_quota(domain.default_quota, "default quota")
        codec.check_text(domain.description, "description")

        def write(conn: sqlite3.Connection) -> Domain:
            q.name_free(conn, name, "domain")
            now = utcnow()
            cur = conn.execute(
                "INSERT INTO domains (name, enabled, default_quota, description, created, updated,"
                " revision) VALUES (?, ?, ?, ?, ?, ?, 1)",
                (
                    name,
                    int(domain.enabled),
                    domain.default_quota,
                    domain.description,
                    codec.seconds(now),
                    codec.seconds(now),
                ),
            )
            q.set_alias_domains(conn, q.rowid(cur), aliases)
            return replace(domain, alias_domains=aliases, created=now, updated=now, revision=1)

        return await self._run(write, "write")

    async def update_domain(
        self, name: str, changes: DomainChanges, *, if_revision: int | None = None
    ) -> Domain:
        aliases = None
        if changes.alias_domains is not None:
            aliases = codec.check_alias_domains(name, changes.alias_domains)
        if changes.default_quota is not None:
            codec.check_quota(changes.default_quota, "default quota")
        if changes.description is not None:
            codec.check_text(changes.description, "description")

        def write(conn: sqlite3.Connection) -> Domain:
            row = conn.execute(q.SQL_DOMAIN_FOR_UPDATE, (name,)).fetchone()
            if row is None:
                raise NotFound(f"domain {name} does not exist")
            domain_id, old = row[0], codec.domain_of(row[1:])
            q.check_revision(f"domain {name}", old.revision, if_revision)
            new = replace(
                old,
                enabled=q.pick(changes.enabled, old.enabled),
                default_quota=q.pick(changes.default_quota, old.default_quota),
                description=q.pick(changes.description, old.description),
                alias_domains=q.pick(aliases, old.alias_domains),
                updated=utcnow(),
                revision=old.revision + 1,
            )
            if aliases is not None and aliases != old.alias_domains:
                conn.execute("DELETE FROM alias_domains WHERE domain_id = ?", (domain_id,))
                for alias in aliases:
                    q.name_free(conn, alias, "alias domain")
                q.set_alias_domains(conn, domain_id, aliases)
            conn.execute(
                "UPDATE domains SET enabled = ?, default_quota = ?, description = ?, updated = ?,"
                " revision = ? WHERE id = ?",
                (
                    int(new.enabled),
                    new.default_quota,
                    new.description,
                    codec.seconds(new.updated),
                    new.revision,
                    domain_id,
                ),
            )
            return new

        return await self._run(write, "write")

    async def delete_domain(self, name: str, *, cascade: bool = False) -> None:
        def write(conn: sqlite3.Connection) -> None:
            domain_id = q.domain_id(conn, name)
            if cascade:
                conn.execute("DELETE FROM aliases WHERE domain_id = ?", (domain_id,))
                conn.execute("DELETE FROM accounts WHERE domain_id = ?", (domain_id,))
            elif conn.execute(
                "SELECT EXISTS (SELECT 1 FROM accounts WHERE domain_id = :id)"
                " OR EXISTS (SELECT 1 FROM aliases WHERE domain_id = :id)",
                {"id": domain_id},
            ).fetchone()[0]:
                raise Conflict(f"domain {name} still has accounts or aliases (use cascade)")
            conn.execute("DELETE FROM domains WHERE id = ?", (domain_id,))

        await self._run(write, "write")

    async def list_domains(
        self, *, prefix: str = "", cursor: str | None = None, limit: int = 100
    ) -> Page[Domain]:
        return await self._list(q.DOMAIN_LIST, codec.domain_of, None, prefix, cursor, limit)

    # -- accounts -----------------------------------------------------------------------------

    async def add_account(self, account: Account) -> Account:
        key = codec.check_address(account.address)
        q.check_account(account)

        def write(conn: sqlite3.Connection) -> Account:
            domain_id = q.domain_id(conn, account.address.domain)
            q.address_free(conn, key)
            now = utcnow()
            stored = replace(account, created=now, updated=now, revision=1)
            conn.execute(q.SQL_INSERT_ACCOUNT, codec.account_row(stored, domain_id))
            return stored

        return await self._run(write, "write")

    async def bulk_add_accounts(self, accounts: Iterable[Account], batch: int = 10_000) -> int:
        """Insert many accounts quickly; returns how many were added.

        Each batch of ``batch`` accounts is one transaction (one ``executemany``). On an error the
        failing batch is rolled back, earlier batches stay committed, and the error is raised
        (``NotFound`` for a missing domain, ``AlreadyExists`` for a taken address). Accounts keep
        their own ``created``/``updated``/``revision``. Addresses are trusted to be canonical
        (``Address.parse``); quotas, texts and services are checked as in ``add_account``.
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidInput("batch must be a positive integer")
        added = 0
        iterator = iter(accounts)
        chunk = list(itertools.islice(iterator, batch))
        while chunk:
            # the next chunk is taken from the iterable while the worker inserts this one
            task = asyncio.ensure_future(
                self._run(functools.partial(q.insert_accounts, accounts=chunk), "write")
            )
            try:
                chunk = list(itertools.islice(iterator, batch))
            except BaseException:
                await asyncio.gather(task, return_exceptions=True)
                raise
            added += await task
        return added

    async def update_account(
        self, address: Address, changes: AccountChanges, *, if_revision: int | None = None
    ) -> Account:
        key = str(address)
        codec.check_hash(changes.password_hash)
        if changes.display_name is not None:
            codec.check_text(changes.display_name, "display name")
        if changes.quota is not None:
            codec.check_quota(changes.quota)
        services = None if changes.services is None else codec.check_services(changes.services)

        def write(conn: sqlite3.Connection) -> Account:
            row = conn.execute(q.SQL_FIND_ACCOUNT, (key,)).fetchone()
            if row is None:
                raise NotFound(f"account {key} does not exist")
            old = codec.account_of(row)
            q.check_revision(f"account {key}", old.revision, if_revision)
            new = replace(
                old,
                password_hash=q.pick(changes.password_hash, old.password_hash),
                display_name=q.pick(changes.display_name, old.display_name),
                enabled=q.pick(changes.enabled, old.enabled),
                quota=q.pick(changes.quota, old.quota),
                services=q.pick(services, old.services),
                updated=utcnow(),
                revision=old.revision + 1,
            )
            conn.execute(
                "UPDATE accounts SET password_hash = ?, display_name = ?, enabled = ?, quota = ?,"
                " services = ?, updated = ?, revision = ? WHERE address = ?",
                (
                    new.password_hash,
                    new.display_name,
                    int(new.enabled),
                    new.quota,
                    codec.services_text(new.services),
                    codec.seconds(new.updated),
                    new.revision,
                    key,
                ),
            )
            return new

        return await self._run(write, "write")

    async def delete_account(self, address: Address) -> None:
        key = str(address)

        def write(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM accounts WHERE address = ?", (key,)).rowcount == 0:
                raise NotFound(f"account {key} does not exist")

        await self._run(write, "write")

    async def list_accounts(
        self,
        domain: str | None = None,
        *,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Account]:
        return await self._list(q.ACCOUNT_LIST, codec.account_of, domain, prefix, cursor, limit)

    # -- aliases ------------------------------------------------------------------------------

    async def add_alias(self, alias: Alias) -> Alias:
        source = codec.check_source(alias.source)
        destinations = codec.check_destinations(alias.destinations)

        def write(conn: sqlite3.Connection) -> Alias:
            domain_id = q.domain_id(conn, alias.domain)
            q.address_free(conn, source)
            now = utcnow()
            stored = replace(alias, destinations=destinations, created=now, updated=now, revision=1)
            conn.execute(
                "INSERT INTO aliases (source, domain_id, destinations, enabled, created, updated,"
                " revision) VALUES (?, ?, ?, ?, ?, ?, 1)",
                (
                    source,
                    domain_id,
                    codec.destinations_text(destinations),
                    int(alias.enabled),
                    codec.seconds(now),
                    codec.seconds(now),
                ),
            )
            return stored

        return await self._run(write, "write")

    async def update_alias(
        self, source: str, changes: AliasChanges, *, if_revision: int | None = None
    ) -> Alias:
        destinations = None
        if changes.destinations is not None:
            destinations = codec.check_destinations(changes.destinations)

        def write(conn: sqlite3.Connection) -> Alias:
            row = conn.execute(q.SQL_FIND_ALIAS, (source,)).fetchone()
            if row is None:
                raise NotFound(f"alias {source} does not exist")
            old = codec.alias_of(row)
            q.check_revision(f"alias {source}", old.revision, if_revision)
            new = replace(
                old,
                destinations=q.pick(destinations, old.destinations),
                enabled=q.pick(changes.enabled, old.enabled),
                updated=utcnow(),
                revision=old.revision + 1,
            )
            conn.execute(
                "UPDATE aliases SET destinations = ?, enabled = ?, updated = ?, revision = ?"
                " WHERE source = ?",
                (
                    codec.destinations_text(new.destinations),
                    int(new.enabled),
                    codec.seconds(new.updated),
                    new.revision,
                    source,
                ),
            )
            return new

        return await self._run(write, "write")

    async def delete_alias(self, source: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM aliases WHERE source = ?", (source,)).rowcount == 0:
                raise NotFound(f"alias {source} does not exist")

        await self._run(write, "write")

    async def list_aliases(
        self,
        domain: str | None = None,
        *,
        prefix: str = "",
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Alias]:
        return await self._list(q.ALIAS_LIST, codec.alias_of, domain, prefix, cursor, limit)

    # -- listings -----------------------------------------------------------------------------

    async def _list(
        self,
        spec: tuple[str, str, str, str],
        convert: Callable[[Row], T],
        domain: str | None,
        prefix: str,
        cursor: str | None,
        limit: int,
    ) -> Page[T]:
        size = codec.page_limit(limit)
        after = codec.decode_cursor(spec[3], cursor)
        codec.prefix_range(prefix)  # refuse a bad prefix before going to a thread
        page = functools.partial(
            q.list_page,
            spec=spec,
            convert=convert,
            domain=domain,
            prefix=prefix,
            after=after,
            size=size,
        )
        return await self._run(page, "snapshot")
