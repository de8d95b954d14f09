"""Embedded store: opening, file modes, WAL and schema version, bad files, closing, input checks."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from idsvc.config import EmbeddedSettings
from idsvc.directory.base import AccountChanges, AliasChanges, DomainChanges
from idsvc.directory.sqlite import SqliteDirectory
from idsvc.directory.sqlite.schema import SCHEMA_VERSION
from idsvc.errors import (
    DirectoryError,
    InvalidAddress,
    InvalidDomain,
    InvalidInput,
    TemporaryFailure,
)
from idsvc.model import Account, Address, Alias, Domain


def settings(path: Path, **kw: object) -> EmbeddedSettings:
    return EmbeddedSettings(path=path, **kw)  # type: ignore[arg-type]


async def test_creates_private_directory_and_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state" / "idsvc.db"
    store = await SqliteDirectory.open(settings(path))
    try:
        await store.add_domain(Domain(name="example.org"))
    finally:
        await store.close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for extra in path.parent.glob("idsvc.db-*"):  # WAL and shared-memory files, if still there
        assert stat.S_IMODE(extra.stat().st_mode) == 0o600


async def test_existing_directory_mode_is_left_alone(tmp_path: Path) -> None:
    tmp_path.joinpath("shared").mkdir(mode=0o750)
    tmp_path.joinpath("shared").chmod(0o750)
    store = await SqliteDirectory.open(settings(tmp_path / "shared" / "idsvc.db"))
    await store.close()
    assert stat.S_IMODE(tmp_path.joinpath("shared").stat().st_mode) == 0o750


async def test_wal_schema_version_and_indexes(tmp_path: Path) -> None:
    path = tmp_path / "idsvc.db"
    store = await SqliteDirectory.open(settings(path))
    await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {
            row[0] for row in raw.execute("SELECT tbl_name FROM sqlite_schema WHERE type = 'index'")
        }
        assert {"domains", "accounts", "aliases", "alias_domains"} <= indexes
    raw.close()


async def test_reopen_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "idsvc.db"
    store = await SqliteDirectory.open(settings(path))
    domain = await store.add_domain(Domain(name="example.org", alias_domains=("example.net",)))
    user = await store.add_account(Account(Address.parse("u@example.org"), "{PLAIN}x"))
    await store.close()
    again = await SqliteDirectory.open(settings(path, workers=1))
    try:
        assert await again.find_domain("example.net") == domain
        assert await again.find_account(user.address) == user
    finally:
        await again.close()


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database at all, just text\n" * 10,
        b"\x00" * 4096,
        b"SQLite format 2\x00" + b"x" * 200,
        b"x",
    ],
)
async def test_non_sqlite_file_is_refused_clearly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "idsvc.db"
    path.write_bytes(content)
    with pytest.raises(DirectoryError, match="not an SQLite database") as info:
        await SqliteDirectory.open(settings(path))
    assert str(path) in str(info.value)
    assert path.read_bytes() == content  # nothing was written to it


async def test_corrupt_sqlite_file_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "idsvc.db"
    store = await SqliteDirectory.open(settings(path))
    await store.add_domain(Domain(name="example.org"))
    await store.close()
    with sqlite3.connect(path) as raw:  # fold the WAL into the main file first
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xa5" * (4096 - 100)  # the schema page after the 100-byte header
    path.write_bytes(bytes(data))
    with pytest.raises(DirectoryError, match="corrupt") as info:
        await SqliteDirectory.open(settings(path))
    assert not isinstance(info.value, TemporaryFailure)
    assert str(path) in str(info.value)


async def test_directory_at_the_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "idsvc.db").mkdir()
    with pytest.raises(DirectoryError, match="not a regular file"):
        await SqliteDirectory.open(settings(tmp_path / "idsvc.db"))


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "idsvc.db"
    store = await SqliteDirectory.open(settings(path))
    await store.close()
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(DirectoryError, match="newer than this idsvc"):
        await SqliteDirectory.open(settings(path))


async def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE t (x)")
    raw.close()
    with pytest.raises(DirectoryError, match="another program"):
        await SqliteDirectory.open(settings(path))


async def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    store = await SqliteDirectory.open(settings(tmp_path / "idsvc.db"))
    await store.ping()
    await store.close()
    await store.close()
    with pytest.raises(TemporaryFailure):
        await store.ping()
    with pytest.raises(DirectoryError, match="closed"):
        await store.find_domain("example.org")


async def test_non_canonical_values_are_refused(tmp_path: Path) -> None:
    store = await SqliteDirectory.open(settings(tmp_path / "idsvc.db"))
    try:
        with pytest.raises(InvalidDomain):
            await store.add_domain(Domain(name="Example.org"))
        with pytest.raises(InvalidDomain):
            await store.add_domain(Domain(name="example.org", alias_domains=("bücher.example",)))
        with pytest.raises(InvalidInput):
            await store.add_domain(Domain(name="example.org", alias_domains="example.net"))  # type: ignore[arg-type]
        await store.add_domain(Domain(name="example.org"))
        with pytest.raises(InvalidAddress):
            await store.add_account(Account(Address("User", "example.org"), None))
        with pytest.raises(InvalidAddress):
            await store.add_alias(Alias("Info@example.org", ("a@example.org",)))
        with pytest.raises(InvalidAddress):
            await store.add_alias(Alias("info@example.org", ("A@example.org",)))
        with pytest.raises(InvalidInput):
            await store.add_alias(Alias("info@example.org", "a@example.org"))  # type: ignore[arg-type]
        assert (await store.list_accounts()).total == 0
        assert (await store.list_aliases()).total == 0
    finally:
        await store.close()


async def test_bounded_texts(tmp_path: Path) -> None:
    store = await SqliteDirectory.open(settings(tmp_path / "idsvc.db"))
    try:
        with pytest.raises(InvalidInput, match="longer than"):
            await store.add_domain(Domain(name="example.org", description="x" * 5000))
        await store.add_domain(Domain(name="example.org"))
        user = Account(Address.parse("u@example.org"), "{PLAIN}x")
        with pytest.raises(InvalidInput, match="NUL"):
            await store.add_account(Account(user.address, "{PLAIN}x", display_name="a\x00b"))
        await store.add_account(user)
        with pytest.raises(InvalidInput, match="longer than"):
            await store.update_account(user.address, AccountChanges(password_hash="x" * 5000))
        with pytest.raises(InvalidInput):
            await store.update_domain("example.org", DomainChanges(default_quota=2**63))
        with pytest.raises(InvalidInput):
            await store.add_alias(
                Alias("l@example.org", tuple(f"m{i}@example.net" for i in range(1001)))
            )
        await store.add_alias(Alias("l@example.org", ("a@example.net",)))
        with pytest.raises(InvalidInput):
            await store.update_alias("l@example.org", AliasChanges(destinations=("bad",)))
        with pytest.raises(InvalidInput, match="prefix"):
            await store.list_accounts(prefix="x" * 300)
        with pytest.raises(InvalidInput, match="cursor"):
            await store.list_accounts(cursor="A" * 1000)
    finally:
        await store.close()


async def test_cursor_of_another_listing_is_refused(tmp_path: Path) -> None:
    store = await SqliteDirectory.open(settings(tmp_path / "idsvc.db"))
    try:
        for i in range(3):
            await store.add_domain(Domain(name=f"d{i}.example"))
        page = await store.list_domains(limit=1)
        assert page.next_cursor is not None
        with pytest.raises(InvalidInput, match="cursor"):
            await store.list_accounts(cursor=page.next_cursor)
        assert (await store.list_domains(cursor=page.next_cursor, limit=1)).items[
            0
        ].name == "d1.example"
    finally:
        await store.close()
