"""LdapDirectory against the shared real slapd: referrals, size limits, duplicates, binds,
injection strings, StartTLS, listing order and the revision compare-and-swap.

Fault injection (kill, SIGSTOP, failover) lives in test_ldap_faults.py with servers of its own.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
ALICE = Address.parse("alice@example.org")


async def _open(slapd: SlapdServer, **overrides: Any) -> tuple[LdapDirectory, str]:
    base = slapd.new_subtree(f"b-{secrets.token_hex(4)}")
    return await LdapDirectory.open(slapd.settings(base, **overrides)), base


@asynccontextmanager
async def _opened(slapd: SlapdServer, base: str, **overrides: Any) -> AsyncIterator[LdapDirectory]:
    """An LdapDirectory on ``base`` (``LdapSettings`` overrides), closed at the end."""
    directory = await LdapDirectory.open(slapd.settings(base, **overrides))
    try:
        yield directory
    finally:
        await directory.close()


@pytest.fixture
async def seeded(slapd: SlapdServer) -> AsyncIterator[tuple[LdapDirectory, str]]:
    """A directory with example.org, alice (an {SSHA} hash of PASSWORD) and an alias."""
    directory, base = await _open(slapd)
    await directory.add_domain(Domain(name="example.org"))
    await directory.add_account(Account(ALICE, ssha(PASSWORD), display_name="Alice"))
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
        await directory.find_account(ALICE)
    with pytest.raises(AmbiguousEntry):
        await directory.bind_check(Account(ALICE, None), PASSWORD)
    with pytest.raises(AmbiguousEntry):  # writes refuse to guess too
        await directory.update_account(ALICE, AccountChanges(enabled=False))


async def test_size_limit_on_a_point_query_is_ambiguous(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str]
) -> None:
    directory, base = seeded
    # three matches: the point query asks for at most two, so the server answers
    # sizeLimitExceeded (4) instead of a result list
    _duplicate(slapd, base, "alice@example.org", "copy1")
    _duplicate(slapd, base, "alice@example.org", "copy2")
    with pytest.raises(AmbiguousEntry):
        await directory.find_account(ALICE)


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
        await directory.find_account(ALICE)
    with pytest.raises(TemporaryFailure, match="referral"):
        await directory.find_alias("nobody@example.org")
    with pytest.raises(TemporaryFailure, match="referral"):
        await directory.list_accounts("example.org")


async def test_referral_result_for_a_foreign_base(slapd: SlapdServer) -> None:
    # slapd answers a base outside its naming contexts with its default referral
    async with _opened(slapd, "o=elsewhere,dc=example,dc=com") as directory:
        with pytest.raises(TemporaryFailure, match="referral"):
            await directory.ping()
        with pytest.raises(TemporaryFailure, match="referral"):
            await directory.find_account(ALICE)


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
    assert await directory.find_account(ALICE) is not None


async def test_bind_check(seeded: tuple[LdapDirectory, str]) -> None:
    directory, _ = seeded
    alice = await directory.find_account(ALICE)
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
    alice = Account(ALICE, None)
    for _ in range(3):
        assert await directory.bind_check(alice, "") is BindResult.INVALID_CREDENTIALS
    # an unauthenticated bind (DN + empty password) would "succeed" at the protocol level;
    # we answer before any LDAP traffic, so no binder connection exists yet
    assert directory._binder._conns == set()


async def test_auth_method_bind_hides_the_hash(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str]
) -> None:
    _, base = seeded
    async with _opened(slapd, base, auth_method="bind") as directory:
        alice = await directory.find_account(ALICE)
        assert alice is not None
        assert alice.password_hash is None
        assert await directory.bind_check(alice, PASSWORD) is BindResult.OK
        assert await directory.bind_check(alice, "nope") is BindResult.INVALID_CREDENTIALS


@pytest.mark.parametrize(
    ("uri_attr", "starttls"),
    [("localhost_uri", True), ("uri", True), ("ldaps_uri", False)],
    ids=["starttls-localhost", "starttls-127.0.0.1", "ldaps"],  # the certificate names both
)
async def test_tls_with_the_test_ca(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str], uri_attr: str, starttls: bool
) -> None:
    _, base = seeded
    assert slapd.ca_file is not None
    uris = (getattr(slapd, uri_attr),)
    async with _opened(slapd, base, uris=uris, starttls=starttls, ca_file=slapd.ca_file) as tls:
        alice = await tls.find_account(ALICE)
        assert alice is not None
        assert alice.password_hash is not None
        assert await tls.bind_check(alice, PASSWORD) is BindResult.OK


async def test_ldaps_refuses_an_unverified_certificate(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str]
) -> None:
    _, base = seeded
    # no ca_file: the system store does not know the test CA
    async with _opened(slapd, base, uris=(slapd.ldaps_uri,)) as directory:
        with pytest.raises(TemporaryFailure):
            await directory.find_account(ALICE)


async def test_starttls_refuses_an_unverified_certificate(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str], tmp_path: Path
) -> None:
    _, base = seeded
    other_ca, _ = make_ca(tmp_path / "other", "somebody else's CA")
    starttls: dict[str, Any] = {"uris": (slapd.localhost_uri,), "starttls": True}
    async with _opened(slapd, base, ca_file=other_ca, **starttls) as directory:
        with pytest.raises(TemporaryFailure):
            await directory.find_account(ALICE)
        with pytest.raises(TemporaryFailure):
            await directory.bind_check(Account(ALICE, None), PASSWORD)
    # verify_tls = false is the explicit, documented opt-out
    async with _opened(slapd, base, ca_file=other_ca, verify_tls=False, **starttls) as insecure:
        assert await insecure.find_account(ALICE) is not None


async def test_wrong_service_password_is_temporary(
    slapd: SlapdServer, seeded: tuple[LdapDirectory, str]
) -> None:
    _, base = seeded
    async with _opened(slapd, base, bind_password="wrong") as directory:
        with pytest.raises(TemporaryFailure, match="reader bind refused"):
            await directory.find_account(ALICE)


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
