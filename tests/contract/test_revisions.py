"""Contract: revisions — every write bumps by one; ``if_revision`` is an atomic compare-and-swap."""

from __future__ import annotations

import asyncio

import pytest

from idsvc.directory.base import AccountChanges, AliasChanges, Directory, DomainChanges
from idsvc.errors import Conflict, NotFound
from idsvc.model import Address, Domain
from tests.contract.support import account, alias


@pytest.fixture
async def domain(directory: Directory) -> Domain:
    return await directory.add_domain(Domain(name="example.org"))


async def test_domain_compare_and_swap(directory: Directory, domain: Domain) -> None:
    second = await directory.update_domain(
        "example.org", DomainChanges(description="two"), if_revision=1
    )
    assert second.revision == 2
    with pytest.raises(Conflict):
        await directory.update_domain(
            "example.org", DomainChanges(description="stale"), if_revision=1
        )
    with pytest.raises(Conflict):
        await directory.update_domain(
            "example.org", DomainChanges(description="future"), if_revision=3
        )
    assert await directory.find_domain("example.org") == second
    third = await directory.update_domain(
        "example.org", DomainChanges(description="three"), if_revision=2
    )
    assert (third.revision, third.description) == (3, "three")


async def test_account_compare_and_swap(directory: Directory, domain: Domain) -> None:
    added = await directory.add_account(account("user@example.org"))
    second = await directory.update_account(added.address, AccountChanges(quota=1), if_revision=1)
    assert second.revision == 2
    with pytest.raises(Conflict):
        await directory.update_account(added.address, AccountChanges(quota=99), if_revision=1)
    assert await directory.find_account(added.address) == second
    third = await directory.update_account(added.address, AccountChanges(quota=3), if_revision=2)
    assert (third.revision, third.quota) == (3, 3)


async def test_alias_compare_and_swap(directory: Directory, domain: Domain) -> None:
    await directory.add_alias(alias("info@example.org", "a@example.org"))
    second = await directory.update_alias(
        "info@example.org", AliasChanges(enabled=False), if_revision=1
    )
    assert second.revision == 2
    with pytest.raises(Conflict):
        await directory.update_alias(
            "info@example.org", AliasChanges(destinations=("b@example.org",)), if_revision=1
        )
    found = await directory.find_alias("info@example.org")
    assert found is not None
    assert (found.revision, found.destinations, found.enabled) == (2, ("a@example.org",), False)


async def test_if_revision_on_missing_objects_is_not_found(
    directory: Directory, domain: Domain
) -> None:
    with pytest.raises(NotFound):
        await directory.update_domain("example.net", DomainChanges(enabled=False), if_revision=1)
    with pytest.raises(NotFound):
        await directory.update_account(
            Address.parse("ghost@example.org"), AccountChanges(enabled=False), if_revision=1
        )
    with pytest.raises(NotFound):
        await directory.update_alias(
            "ghost@example.org", AliasChanges(enabled=False), if_revision=1
        )


async def test_every_write_bumps_the_revision_by_one(directory: Directory, domain: Domain) -> None:
    added = await directory.add_account(account("user@example.org"))
    revisions = [added.revision]
    for changes in (
        AccountChanges(enabled=False),
        AccountChanges(),  # a write that changes nothing is still a write
        AccountChanges(display_name="x"),
        AccountChanges(password_hash="{PLAIN}y"),
    ):
        revisions.append((await directory.update_account(added.address, changes)).revision)
    assert revisions == [1, 2, 3, 4, 5]
    domain_rev = [
        (await directory.update_domain("example.org", DomainChanges())).revision,
        (await directory.update_domain("example.org", DomainChanges(enabled=True))).revision,
    ]
    assert domain_rev == [2, 3]


async def test_concurrent_compare_and_swap_lets_exactly_one_win(
    directory: Directory, domain: Domain
) -> None:
    added = await directory.add_account(account("user@example.org"))
    results = await asyncio.gather(
        *(
            directory.update_account(
                added.address, AccountChanges(display_name=f"writer {i}"), if_revision=1
            )
            for i in range(6)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, Conflict) for r in losers)
    found = await directory.find_account(added.address)
    assert found is not None
    assert found.revision == 2
    assert found.display_name == winners[0].display_name


async def test_concurrent_updates_without_condition_all_count(
    directory: Directory, domain: Domain
) -> None:
    added = await directory.add_account(account("user@example.org"))
    await asyncio.gather(
        *(directory.update_account(added.address, AccountChanges(quota=i)) for i in range(8))
    )
    found = await directory.find_account(added.address)
    assert found is not None
    assert found.revision == 9
