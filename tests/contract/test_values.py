"""Contract: awkward values round-trip exactly; lookups with metacharacters find nothing extra;
IDN domains; timestamps."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from idsvc.directory.base import (
    AccountChanges,
    AccountLookup,
    AliasLookup,
    Directory,
    DomainChanges,
    DomainLookup,
    Provisioning,
)
from idsvc.model import Address, Domain, canonical_domain
from tests.contract.support import account, add_domains, alias

# local parts that are valid dot-atoms but are metacharacters in LDAP filters, DNs or SQL
ODD_LOCALS = [
    "o'brien",
    "a*b",
    "x+y=z",
    "a%b_c",
    "{curly}",
    "#!$&",
    "pipe|bar",
    "slash/path",
    "~tilde",
    "`tick`",
    "^caret",
    "q?r",
    "d.o.t",
    "-",
]
# texts with every LDAP/SQL/CSV metacharacter, quotes and non-ASCII
ODD_TEXTS = [
    '*()\\,+"<>;=',
    "O'Brien; DROP TABLE accounts; --",
    "#leading hash",
    " padded ",
    "a\\2a\\28\\29",
    "%_%",
    "Zoë Ünïcødé 日本語 😀",
    "cn=admin,dc=example,dc=org",
    "*)(uid=*",
]
HASHES = [
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
    "{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuuN4f5rHhY4vQyVx2W/1y3h5b2zS7n2a",
    "{SHA512-CRYPT}$6$rounds=5000$salt$hash/with+slash=",
    "{PLAIN}pa ss*word(with)\\stuff",
]


def test_backend_implements_every_capability(directory: Directory) -> None:
    for capability in (AccountLookup, DomainLookup, AliasLookup, Provisioning):
        assert isinstance(directory, capability)


async def test_ping(directory: Directory) -> None:
    await directory.ping()


@pytest.mark.parametrize("local", ODD_LOCALS)
async def test_odd_local_parts_round_trip(directory: Directory, local: str) -> None:
    await add_domains(directory, "example.org")
    decoy = await directory.add_account(account("decoy@example.org"))
    added = await directory.add_account(account(f"{local}@example.org"))
    assert str(added.address) == f"{local}@example.org"
    assert await directory.find_account(Address.parse(f"{local}@example.org")) == added
    listed = await directory.list_accounts("example.org", prefix=local)
    assert listed.items == [added]
    source = await directory.add_alias(
        alias(f"{local}.list@example.org", f"{local}@remote.example")
    )
    found = await directory.find_alias(f"{local}.list@example.org")
    assert found == source
    assert found.destinations == (f"{local}@remote.example",)
    assert await directory.find_account(decoy.address) == decoy


async def test_metacharacter_lookups_match_nothing_else(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    await directory.add_account(account("admin@example.org"))
    await directory.add_alias(alias("info@example.org", "admin@example.org"))
    for local in ("*", "a*", "%", "_____", "admin'--", "admin*", "*admin", "adm?n"):
        assert await directory.find_account(Address.parse(f"{local}@example.org")) is None
        assert await directory.find_alias(f"{local}@example.org") is None
    for name in ("*", "%", "example.*", "*.org", "example.or_"):
        assert await directory.find_domain(name) is None
    assert (await directory.list_accounts(prefix="*")).items == []
    assert (await directory.list_domains(prefix="%")).items == []


@pytest.mark.parametrize("text", ODD_TEXTS)
async def test_odd_texts_round_trip(directory: Directory, text: str) -> None:
    added = await directory.add_domain(Domain(name="example.org", description=text))
    assert (await directory.find_domain("example.org")) == added
    assert added.description == text
    user = await directory.add_account(account("user@example.org", display_name=text))
    found = await directory.find_account(user.address)
    assert found is not None
    assert found.display_name == text
    changed = await directory.update_domain("example.org", DomainChanges(description=text + "!"))
    assert changed.description == text + "!"
    again = await directory.update_account(user.address, AccountChanges(display_name="x" + text))
    assert (await directory.find_account(user.address)) == again


@pytest.mark.parametrize("stored", HASHES)
async def test_password_hashes_round_trip(directory: Directory, stored: str) -> None:
    await add_domains(directory, "example.org")
    added = await directory.add_account(account("user@example.org", password_hash=stored))
    found = await directory.find_account(added.address)
    assert found is not None
    assert found.password_hash == stored
    other = HASHES[(HASHES.index(stored) + 1) % len(HASHES)]
    await directory.update_account(added.address, AccountChanges(password_hash=other))
    found = await directory.find_account(added.address)
    assert found is not None
    assert found.password_hash == other


async def test_idn_domains(directory: Directory) -> None:
    buecher = canonical_domain("bücher.example")
    tokyo = canonical_domain("例え.テスト")
    assert buecher == "xn--bcher-kva.example"
    added = await directory.add_domain(Domain(name=buecher, alias_domains=(tokyo,)))
    assert await directory.find_domain(buecher) == added
    assert await directory.find_domain(tokyo) == added
    user = await directory.add_account(account("user@bücher.example"))
    assert str(user.address) == "user@xn--bcher-kva.example"
    assert await directory.find_account(Address.parse("USER@bücher.EXAMPLE")) == user
    catchall = await directory.add_alias(alias(f"@{buecher}", f"user@{tokyo}"))
    assert await directory.find_alias(f"@{buecher}") == catchall
    assert [d.name for d in (await directory.list_domains(prefix="xn--")).items] == [buecher]


async def test_timestamps_are_utc_seconds_and_updated_moves(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    added = await directory.add_account(account("user@example.org"))
    assert added.created.utcoffset() == timedelta(0)
    assert added.created.microsecond == 0
    assert added.created <= added.updated
    await asyncio.sleep(1.1)
    updated = await directory.update_account(added.address, AccountChanges(quota=1))
    assert updated.created == added.created
    assert updated.updated > added.created
    found = await directory.find_account(added.address)
    assert found is not None
    assert (found.created, found.updated) == (added.created, updated.updated)
