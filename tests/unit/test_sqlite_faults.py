"""Embedded store faults: a locked database, a full disk and overload fail *temporarily*, never
as "no such user", and leave nothing half-written; sqlite3 errors map onto the idsvc tree."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from idsvc.config import EmbeddedSettings
from idsvc.directory.sqlite import SqliteDirectory
from idsvc.directory.sqlite.errors import map_error
from idsvc.errors import AlreadyExists, Conflict, DirectoryError, TemporaryFailure
from idsvc.model import Account, Address, Domain

BUSY = 0.2


@pytest.fixture
async def store(tmp_path: Path) -> SqliteDirectory:
    directory = await SqliteDirectory.open(
        EmbeddedSettings(path=tmp_path / "idsvc.db", busy_timeout=BUSY, workers=1)
    )
    await directory.add_domain(Domain(name="example.org"))
    await directory.add_account(Account(Address.parse("user@example.org"), "{PLAIN}x"))
    yield directory  # type: ignore[misc]
    await directory.close()


def user(local: str) -> Account:
    return Account(Address.parse(f"{local}@example.org"), "{PLAIN}x")


async def test_write_lock_held_elsewhere_is_temporary(store: SqliteDirectory) -> None:
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(TemporaryFailure, match="locked"):
            await store.add_account(user("new"))
        assert BUSY * 0.9 <= time.monotonic() - started < BUSY + 2
        # WAL readers are not blocked by a writer
        assert await store.find_account(Address.parse("user@example.org")) is not None
        other.execute("ROLLBACK")
    finally:
        other.close()
    added = await store.add_account(user("new"))
    assert await store.find_account(added.address) == added


async def test_open_while_locked_elsewhere_is_temporary(tmp_path: Path) -> None:
    conf = EmbeddedSettings(path=tmp_path / "idsvc.db", busy_timeout=BUSY, workers=1)
    store = await SqliteDirectory.open(conf)
    await store.add_domain(Domain(name="example.org"))
    await store.close()
    other = sqlite3.connect(conf.path, isolation_level=None)
    try:
        other.execute("PRAGMA locking_mode = EXCLUSIVE")  # the lock outlives the transaction
        other.execute("BEGIN EXCLUSIVE")
        other.execute("UPDATE domains SET default_quota = 1")
        other.execute("COMMIT")
        with pytest.raises(TemporaryFailure, match="locked"):
            await SqliteDirectory.open(conf)
    finally:
        other.close()
    store = await SqliteDirectory.open(conf)
    try:
        found = await store.find_domain("example.org")
        assert found is not None
        assert found.default_quota == 1
    finally:
        await store.close()


async def test_disk_full_is_temporary_and_rolls_back(store: SqliteDirectory) -> None:
    # max_page_count makes SQLite report SQLITE_FULL exactly as a full disk would
    def cap(conn: sqlite3.Connection) -> int:
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        return pages

    await store._runner.run(cap, "plain")
    many = (user(f"bulk{i:05d}" + "x" * 40) for i in range(5000))
    with pytest.raises(TemporaryFailure, match="full"):
        await store.bulk_add_accounts(many, batch=5000)
    page = await store.list_accounts()
    assert [str(a.address) for a in page.items] == ["user@example.org"]
    assert page.total == 1


async def test_overload_fails_fast(store: SqliteDirectory) -> None:
    gate = threading.Event()
    blocker = asyncio.ensure_future(store._runner.run(lambda conn: gate.wait(10), "plain"))
    await asyncio.sleep(0)  # the blocker occupies the only worker thread
    limit = store._runner.max_pending
    lookups = [
        asyncio.ensure_future(store.find_account(Address.parse("user@example.org")))
        for _ in range(limit + 10)
    ]
    await asyncio.sleep(0)  # every lookup is now queued or refused
    gate.set()
    results = await asyncio.gather(*lookups, return_exceptions=True)
    assert await blocker is True
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 11  # the blocker took one of the `limit` places
    assert all(isinstance(f, TemporaryFailure) for f in failures)
    assert await store.find_account(Address.parse("user@example.org")) is not None


def real_error(script: str) -> sqlite3.Error:
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(script)
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("the script did not fail")


def test_error_mapping_of_real_sqlite_errors() -> None:
    unique = real_error(
        "CREATE TABLE t (x UNIQUE); INSERT INTO t VALUES (1); INSERT INTO t VALUES (1);"
    )
    assert isinstance(map_error(unique), AlreadyExists)
    check = real_error("CREATE TABLE t (x CHECK (x > 0)); INSERT INTO t VALUES (0);")
    assert isinstance(map_error(check), Conflict)
    trigger = real_error(
        "CREATE TABLE t (x); CREATE TRIGGER g BEFORE INSERT ON t "
        "BEGIN SELECT RAISE(ABORT, 'idsvc: taken'); END; INSERT INTO t VALUES (1);"
    )
    mapped = map_error(trigger)
    assert isinstance(mapped, AlreadyExists)
    assert str(mapped) == "taken"
    syntax = real_error("SELEKT 1;")
    assert type(map_error(syntax)) is DirectoryError


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (10 | (3 << 8), TemporaryFailure),  # SQLITE_IOERR_WRITE
        (13, TemporaryFailure),  # SQLITE_FULL
        (5 | (1 << 8), TemporaryFailure),  # SQLITE_BUSY_RECOVERY
        (14, TemporaryFailure),  # SQLITE_CANTOPEN
        (8, TemporaryFailure),  # SQLITE_READONLY
        (11, DirectoryError),  # SQLITE_CORRUPT
        (26, DirectoryError),  # SQLITE_NOTADB
    ],
)
def test_error_mapping_by_result_code(code: int, kind: type[DirectoryError]) -> None:
    # I/O errors cannot be provoked portably; the mapping is checked on the result code alone
    exc = sqlite3.OperationalError("message from sqlite")
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    mapped = map_error(exc)
    assert type(mapped) is kind
