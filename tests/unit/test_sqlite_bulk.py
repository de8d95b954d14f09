"""Embedded store: ``bulk_add_accounts`` — batches are transactions, errors roll a batch back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from idsvc.config import EmbeddedSettings
from idsvc.directory.sqlite import SqliteDirectory
from idsvc.errors import AlreadyExists, InvalidInput, NotFound
from idsvc.model import Account, Address, Alias, Domain, Service

IMPORTED = datetime(2020, 2, 29, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> SqliteDirectory:
    directory = await SqliteDirectory.open(EmbeddedSettings(path=tmp_path / "idsvc.db"))
    for name in ("a.example", "b.example"):
        await directory.add_domain(Domain(name=name))
    yield directory  # type: ignore[misc]
    await directory.close()


def users(n: int, domain: str = "a.example", start: int = 0) -> Iterator[Account]:
    for i in range(start, start + n):
        yield Account(
            Address.parse(f"u{i:06d}@{domain}"),
            f"{{PLAIN}}pw{i}",
            display_name=f"User {i}",
            quota=i,
            services=frozenset({Service.IMAP}) if i % 2 else frozenset(Service),
            created=IMPORTED,
            updated=IMPORTED,
            revision=3,
        )


async def test_bulk_adds_everything_in_batches(store: SqliteDirectory) -> None:
    added = await store.bulk_add_accounts(users(25_000), batch=10_000)
    assert added == 25_000
    page = await store.list_accounts("a.example", limit=1)
    assert page.total == 25_000
    found = await store.find_account(Address.parse("u012345@a.example"))
    assert found is not None
    assert (found.password_hash, found.display_name, found.quota) == (
        "{PLAIN}pw12345",
        "User 12345",
        12345,
    )
    assert found.services == frozenset({Service.IMAP})
    # an import keeps the timestamps and revision it was given
    assert (found.created, found.updated, found.revision) == (IMPORTED, IMPORTED, 3)


async def test_bulk_of_nothing(store: SqliteDirectory) -> None:
    assert await store.bulk_add_accounts([]) == 0


async def test_missing_domain_rolls_back_its_batch_only(store: SqliteDirectory) -> None:
    def mixed() -> Iterator[Account]:
        yield from users(10)
        yield from users(5, start=10)
        yield Account(Address.parse("x@missing.example"), None)
        yield from users(4, start=15)

    with pytest.raises(NotFound, match=r"missing\.example"):
        await store.bulk_add_accounts(mixed(), batch=10)
    page = await store.list_accounts()
    assert page.total == 10
    assert [str(a.address) for a in page.items] == [f"u{i:06d}@a.example" for i in range(10)]


async def test_duplicates_are_refused(store: SqliteDirectory) -> None:
    await store.add_account(Account(Address.parse("u000003@a.example"), None))
    with pytest.raises(AlreadyExists):
        await store.bulk_add_accounts(users(10), batch=100)
    with pytest.raises(AlreadyExists):
        await store.bulk_add_accounts([*users(2, start=50), *users(2, start=50)])
    assert (await store.list_accounts()).total == 1


async def test_alias_sources_are_protected(store: SqliteDirectory) -> None:
    await store.add_alias(Alias("u000002@b.example", ("x@a.example",)))
    with pytest.raises(AlreadyExists):
        await store.bulk_add_accounts(users(5, domain="b.example"))
    assert (await store.list_accounts()).total == 0


async def test_bad_values_are_refused(store: SqliteDirectory) -> None:
    bad = Account(Address.parse("bad@a.example"), None, quota=-1)
    with pytest.raises(InvalidInput):
        await store.bulk_add_accounts([*users(3), bad])
    with pytest.raises(InvalidInput):
        await store.bulk_add_accounts(users(3), batch=0)
    assert (await store.list_accounts()).total == 0


async def test_a_failing_iterable_keeps_earlier_batches(store: SqliteDirectory) -> None:
    def broken() -> Iterator[Account]:
        yield from users(15)
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        await store.bulk_add_accounts(broken(), batch=10)
    assert (await store.list_accounts()).total == 10
