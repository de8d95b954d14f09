"""LdapDirectory against the shared real slapd: referrals, size limits, duplicates, binds,
injection strings, StartTLS, listing order and the revision compare-and-swap.

Fault injection (kill, SIGSTOP, failover) lives in test_ldap_faults.py with servers of its own.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from idsvc.directory.base import AccountChanges, BindResult
from idsvc.directory.ldap import LdapDirectory
from idsvc.errors import AmbiguousEntry, ConfigError, InvalidInput, TemporaryFailure
from idsvc.model import Account, Address, Alias, Domain
from tests.fixtures.slapd import SlapdServer, make_ca, ssha

pytestmark = pytest.mark.slapd

PASSWORD = "correct horse battery staple"


async def _open(slapd: SlapdServer, **overrides: Any) -> tuple[LdapDirectory, str]:
    base = slapd.new_subtree(f"b-{secrets.token_hex(4)}")
    return await LdapDirectory.open(slapd.settings(base, **overrides)), base


@pytest.fixture
async def seeded(slapd: SlapdServer) -> AsyncIterator[tuple[LdapDirectory, str]]:
    """A directory with example.org, alice (an {SSHA} hash of PASSWORD) and an alias."""
    directory, base = await _open(slapd)
    await directory.add_domain(Domain(name="example.org"))
    await directory.add_account(
        Account(Address.parse("alice@example.org"), ssha(PASSWORD), display_name="Alice")
    )
    await directory.add_alias(Alias("info@example.org", ("alice@example.org",)))
    try:
        yield directory, base
    finally:
        await directory.close()


def _duplicate(slapd: SlapdServer, base: str, address: str, where: str) -> None:
    """A second entry with the same idsvcAddress, below ``where`` inside the domain."""
    slapd.add(
        f"cn={where},idsvcDomainName=example.org,ou=domains,{base}",
        {"objectClass": ["organizationalRole"], "cn": [where]},
    )
    slapd.add(
        f"cn={address},cn={where},idsvcDomainName=example.org,ou=domains,{base}",
        {"objectClass": ["idsvcAccount"], "cn": [address], "idsvcAddress": [address]},
    )


async def test_two_entries_for_one_login_are_ambiguous(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str]
) -> None:
    directory, base = seeded
    _duplicate(slapd, base, "alice@example.org", "copy1")
    with pytest.raises(AmbiguousEntry):
        await directory.find_account(Address.parse("alice@example.org"))
    with pytest.raises(AmbiguousEntry):
        await directory.bind_check(Account(Address.parse("alice@example.org"), None), PASSWORD)
    with pytest.raises(AmbiguousEntry):  # writes refuse to guess too
        await directory.update_account(
            Address.parse("alice@example.org"), AccountChanges(enabled=False)
        )


async def test_size_limit_on_a_point_query_is_ambiguous(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str]
) -> None:
    directory, base = seeded
    # three matches: the point query asks for at most two, so the server answers
    # sizeLimitExceeded (4) instead of a result list
    _duplicate(slapd, base, "alice@example.org", "copy1")
    _duplicate(slapd, base, "alice@example.org", "copy2")
    with pytest.raises(AmbiguousEntry):
        await directory.find_account(Address.parse("alice@example.org"))


async def test_domain_listed_twice_is_ambiguous(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str]
) -> None:
    directory, base = seeded
    slapd.add(
        f"idsvcDomainName=other.example,ou=domains,{base}",
        {
            "objectClass": ["idsvcDomain"],
            "idsvcDomainName": ["other.example"],
            "idsvcAliasDomain": ["example.org"],
        },
    )
    with pytest.raises(AmbiguousEntry):
        await directory.find_domain("example.org")


async def test_referral_entry_is_never_followed(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str]
) -> None:
    directory, base = seeded
    slapd.add(
        f"cn=elsewhere,idsvcDomainName=example.org,ou=domains,{base}",
        {
            "objectClass": ["referral", "extensibleObject"],
            "cn": ["elsewhere"],
            "ref": ["ldap://127.0.0.1:9/dc=elsewhere"],
        },
        manage_dsa_it=True,
    )
    # a continuation reference in the subtree: we cannot know what lies behind it
    with pytest.raises(TemporaryFailure, match="referral"):
        await directory.find_account(Address.parse("alice@example.org"))
    with pytest.raises(TemporaryFailure, match="referral"):
        await directory.find_alias("nobody@example.org")
    with pytest.raises(TemporaryFailure, match="referral"):
        await directory.list_accounts("example.org")


async def test_referral_result_for_a_foreign_base(slapd: SlapdServer) -> None:
    # slapd answers a base outside its naming contexts with its default referral
    directory = await LdapDirectory.open(slapd.settings("o=elsewhere,dc=example,dc=com"))
    try:
        with pytest.raises(TemporaryFailure, match="referral"):
            await directory.ping()
        with pytest.raises(TemporaryFailure, match="referral"):
            await directory.find_account(Address.parse("alice@example.org"))
    finally:
        await directory.close()


INJECTIONS = ["*", "*)(uid=*", "*)(|(cn=*", "\\", "x\x00y", ",cn=admin", "alice@example.org)("]


@pytest.mark.parametrize("evil", INJECTIONS)
async def test_injection_strings_find_nothing(evil: str, seeded: tuple[LdapDirectory, str]) -> None:
    directory, _ = seeded
    # Address() bypasses canonicalisation on purpose: escaping must hold on its own
    assert await directory.find_account(Address(evil, "example.org")) is None
    assert await directory.find_account(Address("alice", evil)) is None
    assert await directory.find_alias(evil) is None
    assert await directory.find_alias(f"{evil}@example.org") is None
    assert await directory.find_domain(evil) is None
    result = await directory.bind_check(Account(Address(evil, "example.org"), None), PASSWORD)
    assert result is BindResult.INVALID_CREDENTIALS
    if "\x00" in evil:  # refused like in every backend
        with pytest.raises(InvalidInput):
            await directory.list_accounts(prefix=evil)
    else:
        page = await directory.list_accounts(prefix=evil)
        assert (page.items, page.total) == ([], 0)
    # and the real entry is still found, so the queries did run
    assert await directory.find_account(Address.parse("alice@example.org")) is not None


async def test_bind_check(seeded: tuple[LdapDirectory, str]) -> None:
    directory, _ = seeded
    alice = await directory.find_account(Address.parse("alice@example.org"))
    assert alice is not None
    assert await directory.bind_check(alice, PASSWORD) is BindResult.OK
    assert await directory.bind_check(alice, PASSWORD + "x") is BindResult.INVALID_CREDENTIALS
    assert await directory.bind_check(alice, "") is BindResult.INVALID_CREDENTIALS
    assert await directory.bind_check(alice, "\x00") is BindResult.INVALID_CREDENTIALS
    assert await directory.bind_check(alice, PASSWORD + "\x00") is BindResult.INVALID_CREDENTIALS
    ghost = Account(Address.parse("ghost@example.org"), None)
    assert await directory.bind_check(ghost, PASSWORD) is BindResult.INVALID_CREDENTIALS
    # lookups never run as the user: alice may not read her own hash, the reader may
    again = await directory.find_account(alice.address)
    assert again is not None
    assert again.password_hash == alice.password_hash


async def test_empty_password_never_reaches_a_bind(seeded: tuple[LdapDirectory, str]) -> None:
    directory, _ = seeded
    alice = Account(Address.parse("alice@example.org"), None)
    for _ in range(3):
        assert await directory.bind_check(alice, "") is BindResult.INVALID_CREDENTIALS
    # an unauthenticated bind (DN + empty password) would "succeed" at the protocol level;
    # we answer before any LDAP traffic, so no binder connection exists yet
    assert directory._binder._conns == set()


async def test_auth_method_bind_hides_the_hash(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str]
) -> None:
    _, base = seeded
    directory = await LdapDirectory.open(slapd.settings(base, auth_method="bind"))
    try:
        alice = await directory.find_account(Address.parse("alice@example.org"))
        assert alice is not None
        assert alice.password_hash is None
        assert await directory.bind_check(alice, PASSWORD) is BindResult.OK
        assert await directory.bind_check(alice, "nope") is BindResult.INVALID_CREDENTIALS
    finally:
        await directory.close()


async def test_starttls_with_the_test_ca(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str]
) -> None:
    _, base = seeded
    assert slapd.ca_file is not None
    for uri in (slapd.localhost_uri, slapd.uri):  # the certificate names both
        directory = await LdapDirectory.open(
            slapd.settings(base, uris=(uri,), starttls=True, ca_file=slapd.ca_file)
        )
        try:
            alice = await directory.find_account(Address.parse("alice@example.org"))
            assert alice is not None
            assert alice.password_hash is not None
            assert await directory.bind_check(alice, PASSWORD) is BindResult.OK
        finally:
            await directory.close()


async def test_ldaps_with_the_test_ca(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str]
) -> None:
    _, base = seeded
    directory = await LdapDirectory.open(
        slapd.settings(base, uris=(slapd.ldaps_uri,), ca_file=slapd.ca_file)
    )
    try:
        alice = await directory.find_account(Address.parse("alice@example.org"))
        assert alice is not None
        assert await directory.bind_check(alice, PASSWORD) is BindResult.OK
    finally:
        await directory.close()


async def test_ldaps_refuses_an_unverified_certificate(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str]
) -> None:
    _, base = seeded
    # no ca_file: the system store does not know the test CA
    directory = await LdapDirectory.open(slapd.settings(base, uris=(slapd.ldaps_uri,)))
    try:
        with pytest.raises(TemporaryFailure):
            await directory.find_account(Address.parse("alice@example.org"))
    finally:
        await directory.close()


async def test_starttls_refuses_an_unverified_certificate(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str], tmp_path: Path
) -> None:
    _, base = seeded
    other_ca, _ = make_ca(tmp_path / "other", "somebody else's CA")
    directory = await LdapDirectory.open(
        slapd.settings(base, uris=(slapd.localhost_uri,), starttls=True, ca_file=other_ca)
    )
    try:
        with pytest.raises(TemporaryFailure):
            await directory.find_account(Address.parse("alice@example.org"))
        with pytest.raises(TemporaryFailure):
            await directory.bind_check(Account(Address.parse("alice@example.org"), None), PASSWORD)
    finally:
        await directory.close()
    # verify_tls = false is the explicit, documented opt-out
    insecure = await LdapDirectory.open(
        slapd.settings(
            base, uris=(slapd.localhost_uri,), starttls=True, ca_file=other_ca, verify_tls=False
        )
    )
    try:
        assert await insecure.find_account(Address.parse("alice@example.org")) is not None
    finally:
        await insecure.close()


async def test_wrong_service_password_is_temporary(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str]
) -> None:
    _, base = seeded
    directory = await LdapDirectory.open(slapd.settings(base, bind_password="wrong"))
    try:
        with pytest.raises(TemporaryFailure, match="reader bind refused"):
            await directory.find_account(Address.parse("alice@example.org"))
    finally:
        await directory.close()


async def test_listing_order_matches_the_server_ordering_rule(
    ldap_directory: LdapDirectory,
) -> None:
    await ldap_directory.add_domain(Domain(name="example.org"))
    locals_ = ["a_b", "aab", "a{b", "a~", "a^", "a`", "a0", "a.b", "a-b", "zz", "a|", "a+b"]
    for local in locals_:
        await ldap_directory.add_account(Account(Address.parse(f"{local}@example.org"), None))
    seen: list[str] = []
    cursor = None
    for _ in range(len(locals_) + 2):
        page = await ldap_directory.list_accounts("example.org", cursor=cursor, limit=1)
        assert page.total == len(locals_)
        seen += [str(a.address) for a in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(f"{local}@example.org" for local in locals_)


async def test_listing_pages_through_many_server_pages(slapd: SlapdServer) -> None:
    directory, _ = await _open(slapd, page_size=7)
    try:
        await directory.add_domain(Domain(name="example.org"))
        for i in range(40):
            await directory.add_account(Account(Address.parse(f"u{i:02d}@example.org"), None))
        page = await directory.list_accounts(prefix="u1", limit=3)
        assert [str(a.address) for a in page.items] == [f"u1{i}@example.org" for i in range(3)]
        assert page.total == 10
        everything: list[str] = []
        cursor = None
        for _ in range(10):
            page = await directory.list_accounts(cursor=cursor, limit=9)
            everything += [a.address.local for a in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert everything == [f"u{i:02d}" for i in range(40)]
    finally:
        await directory.close()


async def test_bad_cursor_and_limit(ldap_directory: LdapDirectory) -> None:
    for cursor in ("", "!!!", "djE6", "x" * 5000):
        with pytest.raises(InvalidInput):
            await ldap_directory.list_domains(cursor=cursor)
    await ldap_directory.add_domain(Domain(name="a.example"))
    await ldap_directory.add_domain(Domain(name="b.example"))
    page = await ldap_directory.list_domains(limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidInput):  # a domain cursor is not an account cursor
        await ldap_directory.list_accounts(cursor=page.next_cursor)
    with pytest.raises(InvalidInput):
        await ldap_directory.list_domains(limit=0)


async def test_concurrent_updates_never_lose_a_revision(slapd: SlapdServer) -> None:
    first, base = await _open(slapd)
    second = await LdapDirectory.open(slapd.settings(base))
    try:
        await first.add_domain(Domain(name="example.org"))
        address = Address.parse("busy@example.org")
        await first.add_account(Account(address, None))

        async def bump(directory: LdapDirectory, n: int) -> None:
            for i in range(n):
                await directory.update_account(address, AccountChanges(quota=i))

        await asyncio.gather(bump(first, 10), bump(second, 10))
        final = await first.find_account(address)
        assert final is not None
        assert final.revision == 21
    finally:
        await first.close()
        await second.close()


async def test_invalid_base_dn_is_a_config_error(slapd: SlapdServer) -> None:
    with pytest.raises(ConfigError):
        await LdapDirectory.open(slapd.settings("not a dn"))


async def test_closed_directory_fails_temporarily(ldap_directory: LdapDirectory) -> None:
    await ldap_directory.close()
    with pytest.raises(TemporaryFailure):
        await ldap_directory.find_domain("example.org")
    await ldap_directory.close()  # idempotent


async def test_service_dn_without_password_is_a_config_error(slapd: SlapdServer) -> None:
    # a DN with an empty password would be an unauthenticated bind (RFC 4513 §5.1.2)
    with pytest.raises(ConfigError, match="bind_dn"):
        await LdapDirectory.open(slapd.settings("o=x,dc=idsvc,dc=test", bind_password=""))
    with pytest.raises(ConfigError, match="writer_dn"):
        await LdapDirectory.open(slapd.settings("o=x,dc=idsvc,dc=test", writer_password=""))
