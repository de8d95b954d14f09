"""Embedded store under concurrency: one winner per key, across tasks and across store objects."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from idsvc.config import EmbeddedSettings
from idsvc.directory.sqlite import SqliteDirectory
from idsvc.errors import AlreadyExists
from idsvc.model import Account, Address, Alias, Domain


@pytest.fixture
async def pair(tmp_path: Path) -> tuple[SqliteDirectory, SqliteDirectory]:
    """Two independent store objects on one file (as two idsvc processes would have)."""
    conf = EmbeddedSettings(path=tmp_path / "idsvc.db", busy_timeout=5.0, workers=4)
    first = await SqliteDirectory.open(conf)
    second = await SqliteDirectory.open(conf)
    await first.add_domain(Domain(name="example.org"))
    yield first, second  # type: ignore[misc]
    await first.close()
    await second.close()


def user(local: str) -> Account:
    return Account(Address.parse(f"{local}@example.org"), "{PLAIN}x")


async def test_same_address_added_concurrently_has_one_winner(
    pair: tuple[SqliteDirectory, SqliteDirectory],
) -> None:
    first, second = pair
    for round_ in range(20):
        racers = [
            first.add_account(user(f"race{round_}")),
            second.add_account(user(f"race{round_}")),
        ]
        results = await asyncio.gather(*racers, return_exceptions=True)
        assert sum(isinstance(r, Account) for r in results) == 1, results
        assert sum(isinstance(r, AlreadyExists) for r in results) == 1, results
    assert (await first.list_accounts()).total == 20


async def test_account_and_alias_racing_for_one_address(
    pair: tuple[SqliteDirectory, SqliteDirectory],
) -> None:
    first, second = pair
    for round_ in range(20):
        address = f"both{round_}@example.org"
        results = await asyncio.gather(
            first.add_account(user(f"both{round_}")),
            second.add_alias(Alias(address, ("x@example.net",))),
            return_exceptions=True,
        )
        assert sum(isinstance(r, AlreadyExists) for r in results) == 1, results
        account = await first.find_account(Address.parse(address))
        alias = await first.find_alias(address)
        assert (account is None) != (alias is None)


async def test_alias_domain_claimed_concurrently_has_one_winner(
    pair: tuple[SqliteDirectory, SqliteDirectory],
) -> None:
    first, second = pair
    results = await asyncio.gather(
        *(
            store.add_domain(Domain(name=f"owner{i}.example", alias_domains=("shared.example",)))
            for i, store in enumerate((first, second, first, second))
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Domain)]
    assert len(winners) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if not isinstance(r, Domain))
    assert await second.find_domain("shared.example") == winners[0]
    assert (await first.list_domains()).total == 2


async def test_readers_and_writers_interleave(
    pair: tuple[SqliteDirectory, SqliteDirectory],
) -> None:
    first, second = pair
    await first.add_account(user("reader"))

    async def write(i: int) -> None:
        await first.add_account(user(f"w{i}"))

    async def read() -> None:
        assert await second.find_account(Address.parse("reader@example.org")) is not None

    await asyncio.gather(*(write(i) for i in range(100)), *(read() for _ in range(300)))
    assert (await second.list_accounts()).total == 101
