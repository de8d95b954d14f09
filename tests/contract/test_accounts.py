"""Contract: accounts — every field round-trips, updates, deletes, collisions, NotFound."""

from __future__ import annotations

import pytest

from idsvc.directory.base import AccountChanges, Directory
from idsvc.errors import AlreadyExists, InvalidInput, NotFound
from idsvc.model import ALL_SERVICES, Account, Address, Domain, Service
from tests.contract.support import PASSWORD_HASH, Window, account, add_domains, alias


@pytest.fixture
async def domain(directory: Directory) -> Domain:
    return await directory.add_domain(Domain(name="example.org"))


async def test_add_account_round_trips_every_field(directory: Directory, domain: Domain) -> None:
    window = Window()
    added = await directory.add_account(
        account(
            "Jane.Doe@Example.org",
            display_name="Jane Doe",
            enabled=False,
            quota=1_073_741_824,
            services=frozenset({Service.IMAP, Service.SUBMISSION}),
        )
    )
    window.close()
    assert added.address == Address("jane.doe", "example.org")
    assert added.password_hash == PASSWORD_HASH
    assert added.display_name == "Jane Doe"
    assert added.enabled is False
    assert added.quota == 1_073_741_824
    assert added.services == frozenset({Service.IMAP, Service.SUBMISSION})
    assert added.revision == 1
    assert window.holds(added.created)
    assert window.holds(added.updated)
    assert await directory.find_account(Address.parse("jane.doe@example.org")) == added


async def test_defaults_round_trip(directory: Directory, domain: Domain) -> None:
    added = await directory.add_account(account("plain@example.org"))
    found = await directory.find_account(added.address)
    assert found == added
    assert found.services == ALL_SERVICES
    assert (found.display_name, found.enabled, found.quota) == ("", True, 0)


async def test_account_without_a_stored_hash(directory: Directory, domain: Domain) -> None:
    added = await directory.add_account(account("bind@example.org", password_hash=None))
    assert added.password_hash is None
    assert await directory.find_account(added.address) == added


async def test_account_enabled_for_no_service(directory: Directory, domain: Domain) -> None:
    added = await directory.add_account(account("none@example.org", services=frozenset()))
    found = await directory.find_account(added.address)
    assert found is not None
    assert found.services == frozenset()


async def test_add_account_needs_its_domain(directory: Directory) -> None:
    with pytest.raises(NotFound):
        await directory.add_account(account("user@example.org"))
    await add_domains(directory, "example.net")
    with pytest.raises(NotFound):
        await directory.add_account(account("user@example.org"))
    assert await directory.find_account(Address.parse("user@example.org")) is None


async def test_add_existing_account_already_exists(directory: Directory, domain: Domain) -> None:
    first = await directory.add_account(account("user@example.org", display_name="first"))
    with pytest.raises(AlreadyExists):
        await directory.add_account(account("USER@example.org", display_name="second"))
    assert await directory.find_account(first.address) == first


async def test_account_cannot_take_an_alias_source(directory: Directory, domain: Domain) -> None:
    info = await directory.add_alias(alias("info@example.org", "boss@example.net"))
    with pytest.raises(AlreadyExists):
        await directory.add_account(account("info@example.org"))
    assert await directory.find_account(Address.parse("info@example.org")) is None
    assert await directory.find_alias("info@example.org") == info


async def test_negative_quota_is_refused(directory: Directory, domain: Domain) -> None:
    with pytest.raises(InvalidInput):
        await directory.add_account(account("user@example.org", quota=-1))
    assert await directory.find_account(Address.parse("user@example.org")) is None
    added = await directory.add_account(account("user@example.org"))
    with pytest.raises(InvalidInput):
        await directory.update_account(added.address, AccountChanges(quota=-5))
    assert await directory.find_account(added.address) == added


async def test_find_missing_account_is_none(directory: Directory, domain: Domain) -> None:
    await directory.add_account(account("user@example.org"))
    assert await directory.find_account(Address.parse("user@example.net")) is None
    assert await directory.find_account(Address.parse("use@example.org")) is None
    assert await directory.find_account(Address.parse("user2@example.org")) is None


async def test_find_account_is_exact_on_the_primary_address(directory: Directory) -> None:
    await directory.add_domain(Domain(name="example.org", alias_domains=("example.net",)))
    await directory.add_account(account("user@example.org"))
    # alias domains are resolved by the caller through find_domain, not by find_account
    assert await directory.find_account(Address.parse("user@example.net")) is None


async def test_update_account_fields(directory: Directory, domain: Domain) -> None:
    added = await directory.add_account(account("user@example.org", display_name="Old"))
    window = Window()
    updated = await directory.update_account(
        added.address,
        AccountChanges(
            password_hash="{PLAIN}new",
            display_name="New Name",
            enabled=False,
            quota=42,
            services=frozenset({Service.POP3}),
        ),
    )
    window.close()
    assert updated.password_hash == "{PLAIN}new"
    assert updated.display_name == "New Name"
    assert updated.enabled is False
    assert updated.quota == 42
    assert updated.services == frozenset({Service.POP3})
    assert updated.revision == 2
    assert updated.created == added.created
    assert window.holds(updated.updated)
    assert await directory.find_account(added.address) == updated


async def test_update_account_partial(directory: Directory, domain: Domain) -> None:
    added = await directory.add_account(
        account("user@example.org", display_name="Name", quota=7, enabled=False)
    )
    updated = await directory.update_account(added.address, AccountChanges(enabled=True))
    assert updated.enabled is True
    assert (updated.display_name, updated.quota, updated.password_hash) == (
        "Name",
        7,
        PASSWORD_HASH,
    )
    assert updated.services == added.services


async def test_update_account_clears_values(directory: Directory, domain: Domain) -> None:
    added = await directory.add_account(account("user@example.org", display_name="Name", quota=7))
    updated = await directory.update_account(
        added.address, AccountChanges(display_name="", quota=0, services=frozenset())
    )
    assert (updated.display_name, updated.quota, updated.services) == ("", 0, frozenset())
    assert await directory.find_account(added.address) == updated


async def test_update_missing_account_not_found(directory: Directory, domain: Domain) -> None:
    with pytest.raises(NotFound):
        await directory.update_account(
            Address.parse("ghost@example.org"), AccountChanges(enabled=False)
        )
    with pytest.raises(NotFound):
        await directory.update_account(
            Address.parse("ghost@nowhere.example"), AccountChanges(enabled=False)
        )


async def test_delete_account(directory: Directory, domain: Domain) -> None:
    keep = await directory.add_account(account("keep@example.org"))
    gone = await directory.add_account(account("gone@example.org"))
    await directory.delete_account(gone.address)
    assert await directory.find_account(gone.address) is None
    assert await directory.find_account(keep.address) == keep
    with pytest.raises(NotFound):
        await directory.delete_account(gone.address)
    again = await directory.add_account(account("gone@example.org"))
    assert again.revision == 1


async def test_delete_missing_account_not_found(directory: Directory, domain: Domain) -> None:
    with pytest.raises(NotFound):
        await directory.delete_account(Address.parse("ghost@example.org"))
    with pytest.raises(NotFound):
        await directory.delete_account(Address.parse("ghost@nowhere.example"))


async def test_deleting_an_alias_destination_account(directory: Directory, domain: Domain) -> None:
    user = await directory.add_account(account("user@example.org"))
    info = await directory.add_alias(alias("info@example.org", "user@example.org"))
    await directory.delete_account(user.address)
    # destinations are plain addresses (they may be remote): the alias is left as it was
    assert await directory.find_alias("info@example.org") == info


async def test_account_repr_hides_the_hash(directory: Directory, domain: Domain) -> None:
    added = await directory.add_account(account("user@example.org"))
    found = await directory.find_account(added.address)
    assert PASSWORD_HASH not in repr(found)
    assert isinstance(found, Account)
