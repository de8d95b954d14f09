"""Contract: domains — create, read, update, delete (with and without cascade)."""

from __future__ import annotations

import pytest

from idsvc.directory.base import Directory, DomainChanges
from idsvc.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from idsvc.model import Address, Domain
from tests.contract.support import Window, account, add_domains, alias


async def test_add_domain_returns_what_find_reads(directory: Directory) -> None:
    window = Window()
    added = await directory.add_domain(
        Domain(name="example.org", enabled=False, default_quota=5_000_000, description="Main")
    )
    window.close()
    assert added.name == "example.org"
    assert added.enabled is False
    assert added.default_quota == 5_000_000
    assert added.description == "Main"
    assert added.alias_domains == ()
    assert added.revision == 1
    assert window.holds(added.created)
    assert window.holds(added.updated)
    assert await directory.find_domain("example.org") == added


async def test_add_sets_revision_and_timestamps_itself(directory: Directory) -> None:
    stale = Domain(name="example.org", revision=7)
    added = await directory.add_domain(stale)
    assert added.revision == 1
    assert (await directory.find_domain("example.org")) == added


async def test_find_missing_domain_is_none(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    assert await directory.find_domain("example.net") is None
    assert await directory.find_domain("org") is None
    assert await directory.find_domain("sub.example.org") is None


async def test_add_existing_domain_already_exists(directory: Directory) -> None:
    await directory.add_domain(Domain(name="example.org", description="first"))
    with pytest.raises(AlreadyExists):
        await directory.add_domain(Domain(name="example.org", description="second"))
    found = await directory.find_domain("example.org")
    assert found is not None
    assert found.description == "first"


async def test_negative_default_quota_is_refused(directory: Directory) -> None:
    with pytest.raises(InvalidInput):
        await directory.add_domain(Domain(name="example.org", default_quota=-1))
    assert await directory.find_domain("example.org") is None


async def test_update_domain_changes_given_fields_only(directory: Directory) -> None:
    added = await directory.add_domain(
        Domain(name="example.org", default_quota=10, description="before")
    )
    window = Window()
    updated = await directory.update_domain("example.org", DomainChanges(enabled=False))
    window.close()
    assert updated.enabled is False
    assert updated.default_quota == 10
    assert updated.description == "before"
    assert updated.revision == 2
    assert updated.created == added.created
    assert window.holds(updated.updated)
    assert await directory.find_domain("example.org") == updated

    again = await directory.update_domain(
        "example.org", DomainChanges(default_quota=0, description="", enabled=True)
    )
    assert (again.enabled, again.default_quota, again.description) == (True, 0, "")
    assert again.revision == 3
    assert await directory.find_domain("example.org") == again


async def test_update_missing_domain_not_found(directory: Directory) -> None:
    with pytest.raises(NotFound):
        await directory.update_domain("example.org", DomainChanges(enabled=False))


async def test_delete_empty_domain(directory: Directory) -> None:
    await add_domains(directory, "example.org", "example.net")
    await directory.delete_domain("example.org")
    assert await directory.find_domain("example.org") is None
    assert await directory.find_domain("example.net") is not None
    with pytest.raises(NotFound):
        await directory.delete_domain("example.org")


async def test_delete_missing_domain_not_found(directory: Directory) -> None:
    with pytest.raises(NotFound):
        await directory.delete_domain("example.org", cascade=True)


async def test_delete_domain_with_account_needs_cascade(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    user = await directory.add_account(account("user@example.org"))
    with pytest.raises(Conflict):
        await directory.delete_domain("example.org")
    assert await directory.find_domain("example.org") is not None
    assert await directory.find_account(user.address) == user


async def test_delete_domain_with_alias_needs_cascade(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    catchall = await directory.add_alias(alias("@example.org", "x@example.net"))
    with pytest.raises(Conflict):
        await directory.delete_domain("example.org", cascade=False)
    assert await directory.find_alias("@example.org") == catchall


async def test_delete_domain_cascade_removes_its_content_only(directory: Directory) -> None:
    await add_domains(directory, "example.org", "example.net")
    await directory.update_domain("example.org", DomainChanges(alias_domains=("example.com",)))
    await directory.add_account(account("a@example.org"))
    await directory.add_account(account("b@example.org"))
    await directory.add_alias(alias("info@example.org", "a@example.org", "c@example.net"))
    await directory.add_alias(alias("@example.org", "a@example.org"))
    other = await directory.add_account(account("a@example.net"))
    other_alias = await directory.add_alias(alias("info@example.net", "a@example.org"))

    await directory.delete_domain("example.org", cascade=True)

    assert await directory.find_domain("example.org") is None
    assert await directory.find_domain("example.com") is None
    assert await directory.find_account(Address.parse("a@example.org")) is None
    assert await directory.find_account(Address.parse("b@example.org")) is None
    assert await directory.find_alias("info@example.org") is None
    assert await directory.find_alias("@example.org") is None
    assert await directory.find_account(other.address) == other
    assert await directory.find_alias("info@example.net") == other_alias
    assert (await directory.list_accounts()).total == 1
    with pytest.raises(NotFound):
        await directory.list_accounts("example.org")
    # the name and its former alias domain are free again
    again = await directory.add_domain(Domain(name="example.org", alias_domains=("example.com",)))
    assert again.revision == 1
    assert (await directory.list_accounts("example.org")).items == []


async def test_delete_with_cascade_of_empty_domain(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    await directory.delete_domain("example.org", cascade=True)
    assert await directory.find_domain("example.org") is None
