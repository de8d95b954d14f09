"""Contract: alias domains — resolution, one namespace with real domains, atomic changes."""

from __future__ import annotations

import pytest

from idsvc.directory.base import Directory, DomainChanges
from idsvc.directory.checks import MAX_ALIAS_DOMAINS
from idsvc.errors import AlreadyExists, InvalidInput, NotFound
from idsvc.model import Address, Domain
from tests.contract.support import account, add_domains


async def test_find_domain_resolves_alias_domains(directory: Directory) -> None:
    added = await directory.add_domain(
        Domain(name="example.org", alias_domains=("example.net", "example.com"))
    )
    assert added.alias_domains == ("example.com", "example.net")  # sorted
    assert await directory.find_domain("example.org") == added
    assert await directory.find_domain("example.net") == added
    assert await directory.find_domain("example.com") == added
    assert await directory.find_domain("example.info") is None


async def test_alias_domains_are_a_set(directory: Directory) -> None:
    added = await directory.add_domain(
        Domain(name="example.org", alias_domains=("b.example", "a.example", "b.example"))
    )
    assert added.alias_domains == ("a.example", "b.example")
    assert await directory.find_domain("example.org") == added


async def test_alias_domain_cannot_be_claimed_twice(directory: Directory) -> None:
    await directory.add_domain(Domain(name="example.org", alias_domains=("example.net",)))
    with pytest.raises(AlreadyExists):
        await directory.add_domain(Domain(name="example.com", alias_domains=("example.net",)))
    assert await directory.find_domain("example.com") is None
    await add_domains(directory, "example.info")
    with pytest.raises(AlreadyExists):
        await directory.update_domain("example.info", DomainChanges(alias_domains=("example.net",)))
    info = await directory.find_domain("example.info")
    assert info is not None
    assert info.alias_domains == ()
    assert info.revision == 1


async def test_domain_cannot_reuse_an_alias_domain_name(directory: Directory) -> None:
    await directory.add_domain(Domain(name="example.org", alias_domains=("example.net",)))
    with pytest.raises(AlreadyExists):
        await directory.add_domain(Domain(name="example.net"))
    found = await directory.find_domain("example.net")
    assert found is not None
    assert found.name == "example.org"


async def test_alias_domain_cannot_be_a_real_domain(directory: Directory) -> None:
    await add_domains(directory, "example.org", "example.net")
    with pytest.raises(AlreadyExists):
        await directory.update_domain("example.org", DomainChanges(alias_domains=("example.net",)))
    with pytest.raises(AlreadyExists):
        await directory.add_domain(Domain(name="example.com", alias_domains=("example.net",)))
    net = await directory.find_domain("example.net")
    assert net is not None
    assert net.name == "example.net"
    assert await directory.find_domain("example.com") is None


async def test_domain_cannot_alias_itself(directory: Directory) -> None:
    with pytest.raises(InvalidInput):
        await directory.add_domain(Domain(name="example.org", alias_domains=("example.org",)))
    await add_domains(directory, "example.org")
    with pytest.raises(InvalidInput):
        await directory.update_domain("example.org", DomainChanges(alias_domains=("example.org",)))


async def test_alias_domains_are_bounded(directory: Directory) -> None:
    too_many = tuple(f"d{i}.example" for i in range(MAX_ALIAS_DOMAINS + 1))
    with pytest.raises(InvalidInput):
        await directory.add_domain(Domain(name="example.org", alias_domains=too_many))
    assert await directory.find_domain("example.org") is None
    await add_domains(directory, "example.org")
    with pytest.raises(InvalidInput):
        await directory.update_domain("example.org", DomainChanges(alias_domains=too_many))
    found = await directory.find_domain("example.org")
    assert found is not None
    assert found.alias_domains == ()


async def test_failed_add_leaves_nothing(directory: Directory) -> None:
    await directory.add_domain(Domain(name="example.org", alias_domains=("taken.example",)))
    with pytest.raises(AlreadyExists):
        await directory.add_domain(
            Domain(name="example.net", alias_domains=("free.example", "taken.example"))
        )
    assert await directory.find_domain("example.net") is None
    assert await directory.find_domain("free.example") is None
    # and the names that were not taken can still be used
    ok = await directory.add_domain(Domain(name="example.net", alias_domains=("free.example",)))
    assert await directory.find_domain("free.example") == ok


async def test_update_replaces_alias_domains(directory: Directory) -> None:
    await directory.add_domain(Domain(name="example.org", alias_domains=("old.example",)))
    updated = await directory.update_domain(
        "example.org", DomainChanges(alias_domains=("new.example", "other.example"))
    )
    assert updated.alias_domains == ("new.example", "other.example")
    assert updated.revision == 2
    assert await directory.find_domain("old.example") is None
    assert await directory.find_domain("new.example") == updated
    # the released name is free for anyone
    freed = await directory.add_domain(Domain(name="old.example"))
    assert await directory.find_domain("old.example") == freed
    cleared = await directory.update_domain("example.org", DomainChanges(alias_domains=()))
    assert cleared.alias_domains == ()
    assert await directory.find_domain("new.example") is None


async def test_keeping_an_alias_domain_in_an_update_is_fine(directory: Directory) -> None:
    await directory.add_domain(Domain(name="example.org", alias_domains=("a.example",)))
    updated = await directory.update_domain(
        "example.org", DomainChanges(alias_domains=("a.example", "b.example"))
    )
    assert updated.alias_domains == ("a.example", "b.example")
    assert await directory.find_domain("a.example") == updated


async def test_alias_domains_are_not_listed_as_domains(directory: Directory) -> None:
    await directory.add_domain(Domain(name="example.org", alias_domains=("example.net",)))
    page = await directory.list_domains()
    assert [d.name for d in page.items] == ["example.org"]
    assert page.total == 1


async def test_alias_domain_holds_no_accounts_or_aliases(directory: Directory) -> None:
    await directory.add_domain(Domain(name="example.org", alias_domains=("example.net",)))
    with pytest.raises(NotFound):
        await directory.add_account(account("user@example.net"))
    assert await directory.find_account(Address.parse("user@example.net")) is None


async def test_alias_domain_is_not_an_object_of_its_own(directory: Directory) -> None:
    await directory.add_domain(Domain(name="example.org", alias_domains=("example.net",)))
    with pytest.raises(NotFound):
        await directory.update_domain("example.net", DomainChanges(enabled=False))
    with pytest.raises(NotFound):
        await directory.delete_domain("example.net")
    org = await directory.find_domain("example.org")
    assert org is not None
    assert org.enabled is True


async def test_deleting_a_domain_releases_its_alias_domains(directory: Directory) -> None:
    await directory.add_domain(Domain(name="example.org", alias_domains=("example.net",)))
    await directory.delete_domain("example.org")
    assert await directory.find_domain("example.net") is None
    net = await directory.add_domain(Domain(name="example.net"))
    assert await directory.find_domain("example.net") == net


async def test_failed_update_leaves_alias_domains_as_they_were(directory: Directory) -> None:
    await directory.add_domain(Domain(name="other.example", alias_domains=("taken.example",)))
    before = await directory.add_domain(Domain(name="example.org", alias_domains=("keep.example",)))
    with pytest.raises(AlreadyExists):
        await directory.update_domain(
            "example.org",
            DomainChanges(alias_domains=("new.example", "taken.example"), description="changed"),
        )
    assert await directory.find_domain("example.org") == before
    assert await directory.find_domain("keep.example") == before
    assert await directory.find_domain("new.example") is None
    taken = await directory.find_domain("taken.example")
    assert taken is not None
    assert taken.name == "other.example"
