"""Contract: aliases — multi-destination, catch-all ``@domain``, collisions, updates, NotFound."""

from __future__ import annotations

import pytest

from idsvc.directory.base import AliasChanges, Directory
from idsvc.errors import AlreadyExists, InvalidInput, NotFound
from idsvc.model import Domain
from tests.contract.support import Window, account, add_domains, alias


@pytest.fixture
async def domain(directory: Directory) -> Domain:
    return await directory.add_domain(Domain(name="example.org"))


async def test_add_alias_with_several_destinations(directory: Directory, domain: Domain) -> None:
    window = Window()
    added = await directory.add_alias(
        alias("team@example.org", "b@example.org", "a@example.org", "x@remote.example")
    )
    window.close()
    assert added.source == "team@example.org"
    assert sorted(added.destinations) == ["a@example.org", "b@example.org", "x@remote.example"]
    assert added.enabled is True
    assert added.revision == 1
    assert window.holds(added.created)
    assert window.holds(added.updated)
    found = await directory.find_alias("team@example.org")
    assert found is not None
    assert sorted(found.destinations) == sorted(added.destinations)
    assert (found.enabled, found.created, found.updated, found.revision) == (
        added.enabled,
        added.created,
        added.updated,
        added.revision,
    )


async def test_destinations_are_a_set(directory: Directory, domain: Domain) -> None:
    added = await directory.add_alias(
        alias("team@example.org", "a@example.org", "a@example.org", "b@example.org")
    )
    assert sorted(added.destinations) == ["a@example.org", "b@example.org"]
    found = await directory.find_alias("team@example.org")
    assert found is not None
    assert sorted(found.destinations) == ["a@example.org", "b@example.org"]


async def test_disabled_alias_round_trips(directory: Directory, domain: Domain) -> None:
    await directory.add_alias(alias("off@example.org", "a@example.org", enabled=False))
    found = await directory.find_alias("off@example.org")
    assert found is not None
    assert found.enabled is False


async def test_catchall_alias(directory: Directory, domain: Domain) -> None:
    added = await directory.add_alias(alias("@example.org", "postmaster@example.org"))
    assert added.is_catchall
    assert added.domain == "example.org"
    found = await directory.find_alias("@example.org")
    assert found is not None
    assert found.source == "@example.org"
    assert found.destinations == ("postmaster@example.org",)
    # find_alias is exact: the catch-all is not returned for a specific address
    assert await directory.find_alias("anyone@example.org") is None
    with pytest.raises(AlreadyExists):
        await directory.add_alias(alias("@example.org", "other@example.org"))


async def test_alias_needs_its_domain(directory: Directory) -> None:
    with pytest.raises(NotFound):
        await directory.add_alias(alias("info@example.org", "a@example.net"))
    with pytest.raises(NotFound):
        await directory.add_alias(alias("@example.org", "a@example.net"))
    await directory.add_domain(Domain(name="example.net", alias_domains=("example.com",)))
    with pytest.raises(NotFound):
        await directory.add_alias(alias("info@example.com", "a@example.net"))
    assert await directory.find_alias("info@example.org") is None
    assert await directory.find_alias("@example.org") is None


async def test_add_existing_alias_already_exists(directory: Directory, domain: Domain) -> None:
    first = await directory.add_alias(alias("info@example.org", "a@example.org"))
    with pytest.raises(AlreadyExists):
        await directory.add_alias(alias("info@example.org", "b@example.org"))
    assert await directory.find_alias("info@example.org") == first


async def test_alias_cannot_take_an_account_address(directory: Directory, domain: Domain) -> None:
    user = await directory.add_account(account("user@example.org"))
    with pytest.raises(AlreadyExists):
        await directory.add_alias(alias("user@example.org", "other@example.net"))
    assert await directory.find_alias("user@example.org") is None
    assert await directory.find_account(user.address) == user


async def test_alias_needs_a_destination(directory: Directory, domain: Domain) -> None:
    with pytest.raises(InvalidInput):
        await directory.add_alias(alias("empty@example.org"))
    assert await directory.find_alias("empty@example.org") is None
    added = await directory.add_alias(alias("info@example.org", "a@example.org"))
    with pytest.raises(InvalidInput):
        await directory.update_alias("info@example.org", AliasChanges(destinations=()))
    assert await directory.find_alias("info@example.org") == added


async def test_update_alias(directory: Directory, domain: Domain) -> None:
    added = await directory.add_alias(alias("info@example.org", "a@example.org"))
    window = Window()
    updated = await directory.update_alias(
        "info@example.org",
        AliasChanges(destinations=("c@example.org", "b@remote.example"), enabled=False),
    )
    window.close()
    assert sorted(updated.destinations) == ["b@remote.example", "c@example.org"]
    assert updated.enabled is False
    assert updated.revision == 2
    assert updated.created == added.created
    assert window.holds(updated.updated)
    found = await directory.find_alias("info@example.org")
    assert found is not None
    assert sorted(found.destinations) == ["b@remote.example", "c@example.org"]
    assert (found.enabled, found.revision, found.updated) == (False, 2, updated.updated)


async def test_update_alias_partial(directory: Directory, domain: Domain) -> None:
    await directory.add_alias(alias("info@example.org", "a@example.org", "b@example.org"))
    updated = await directory.update_alias("info@example.org", AliasChanges(enabled=False))
    assert sorted(updated.destinations) == ["a@example.org", "b@example.org"]
    again = await directory.update_alias(
        "info@example.org", AliasChanges(destinations=("z@example.org",))
    )
    assert again.enabled is False
    assert again.destinations == ("z@example.org",)
    assert again.revision == 3


async def test_update_missing_alias_not_found(directory: Directory, domain: Domain) -> None:
    with pytest.raises(NotFound):
        await directory.update_alias("ghost@example.org", AliasChanges(enabled=False))
    with pytest.raises(NotFound):
        await directory.update_alias("@example.org", AliasChanges(enabled=False))


async def test_delete_alias(directory: Directory, domain: Domain) -> None:
    keep = await directory.add_alias(alias("keep@example.org", "a@example.org"))
    await directory.add_alias(alias("gone@example.org", "a@example.org"))
    await directory.add_alias(alias("@example.org", "a@example.org"))
    await directory.delete_alias("gone@example.org")
    await directory.delete_alias("@example.org")
    assert await directory.find_alias("gone@example.org") is None
    assert await directory.find_alias("@example.org") is None
    assert await directory.find_alias("keep@example.org") == keep
    with pytest.raises(NotFound):
        await directory.delete_alias("gone@example.org")
    # the freed source can become an account
    await directory.add_account(account("gone@example.org"))


async def test_delete_missing_alias_not_found(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    with pytest.raises(NotFound):
        await directory.delete_alias("ghost@example.org")
    with pytest.raises(NotFound):
        await directory.delete_alias("@nowhere.example")
