"""idsvc.directory.checks: the write-side checks both backends share (canonical names, bounded
texts, quotas, services), and that both backends really use them."""

from __future__ import annotations

from typing import Any

import pytest

from idsvc.directory import checks, mapping
from idsvc.directory.sqlite import codec
from idsvc.errors import InvalidAddress, InvalidDomain, InvalidInput
from idsvc.model import ALL_SERVICES, Account, Address, Domain, Service


def test_domain_names_must_already_be_canonical() -> None:
    assert checks.check_domain_name("xn--bcher-kva.example") == "xn--bcher-kva.example"
    with pytest.raises(InvalidDomain, match="domain is not in canonical form"):
        checks.check_domain_name("Example.ORG")
    with pytest.raises(InvalidDomain, match=r"^alias domain: empty label in domain$"):
        checks.check_domain_name("a..b", "alias domain")
    with pytest.raises(InvalidDomain, match="must be a string"):
        checks.check_domain_name(42)  # type: ignore[arg-type]


def test_alias_domains_sorted_unique_bounded_and_not_self() -> None:
    assert checks.check_alias_domains("a.org", ["c.org", "b.org", "c.org"]) == ("b.org", "c.org")
    with pytest.raises(InvalidInput, match="own alias domain"):
        checks.check_alias_domains("a.org", ["a.org"])
    with pytest.raises(InvalidInput, match="sequence"):
        checks.check_alias_domains("a.org", "b.org")
    with pytest.raises(InvalidInput, match="at most 2 alias domains"):
        checks.check_alias_domains("a.org", ["b.org", "c.org", "d.org"], limit=2)


def test_address_and_source() -> None:
    assert checks.check_address(Address.parse("Bob@Example.org")) == "bob@example.org"
    with pytest.raises(InvalidAddress, match="not in canonical form"):
        checks.check_address(Address("Bob", "example.org"))
    with pytest.raises(InvalidAddress, match=r"must be an idsvc\.model\.Address"):
        checks.check_address("bob@example.org")  # type: ignore[arg-type]
    assert checks.check_source("@example.org") == "@example.org"
    for bad in ("@Example.org", "Bob@example.org", 7):
        with pytest.raises(InvalidAddress, match="alias source is not in canonical form"):
            checks.check_source(bad)  # type: ignore[arg-type]


def test_destinations() -> None:
    assert checks.check_destinations(["b@x.org", "a@x.org", "b@x.org"]) == ("a@x.org", "b@x.org")
    with pytest.raises(InvalidInput, match="at least one"):
        checks.check_destinations([])
    with pytest.raises(InvalidInput, match="sequence of addresses"):
        checks.check_destinations("a@x.org")
    with pytest.raises(InvalidInput, match="at most 1 destinations"):
        checks.check_destinations(["a@x.org", "b@x.org"], limit=1)
    for bad in (["A@x.org"], ["a@x.org", None]):
        with pytest.raises(InvalidAddress, match="destination is not in canonical form"):
            checks.check_destinations(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 2**63, True, 1.5, "5"])
def test_quota_range(bad: Any) -> None:
    with pytest.raises(InvalidInput, match="default quota must be an integer between 0 and"):
        checks.check_quota(bad, "default quota")


def test_quota_bounds_accepted() -> None:
    assert checks.check_quota(0) == 0
    assert checks.check_quota(2**63 - 1) == 2**63 - 1


def test_text_and_hash() -> None:
    assert checks.check_text("ok", "display name", 2) == "ok"
    with pytest.raises(InvalidInput, match="display name longer than 2 characters"):
        checks.check_text("abc", "display name", 2)
    with pytest.raises(InvalidInput, match="display name must not contain NUL"):
        checks.check_text("a\x00", "display name", 10)
    with pytest.raises(InvalidInput, match="display name must be a string"):
        checks.check_text(b"x", "display name", 10)  # type: ignore[arg-type]
    assert checks.check_hash(None, 10) is None
    with pytest.raises(InvalidInput, match="password hash longer than 3"):
        checks.check_hash("{X}abc", 3)


def test_services() -> None:
    assert checks.check_services(ALL_SERVICES) is ALL_SERVICES
    assert checks.check_services(["imap", Service.SMTP]) == {Service.IMAP, Service.SMTP}
    plain = checks.check_services(frozenset({"imap"}))  # type: ignore[arg-type]
    assert all(type(s) is Service for s in plain)  # plain strings become Service members
    with pytest.raises(InvalidInput, match="unknown service"):
        checks.check_services(["gopher"])  # type: ignore[list-item]


def test_backends_keep_their_text_limits() -> None:
    # the LDAP profile bounds texts at 1024 characters, the embedded store at 4096
    text = "x" * 2000
    assert codec.check_text(text, "description") == text
    with pytest.raises(InvalidInput, match="description longer than 1024 characters"):
        mapping.new_domain(Domain(name="example.org", description=text))
    with pytest.raises(InvalidInput, match="password hash longer than 4096"):
        codec.check_hash("x" * 4097)
    with pytest.raises(InvalidInput, match="password hash longer than 1024"):
        mapping.new_account(Account(Address.parse("a@example.org"), "x" * 1025))
    # and both refuse the same non-canonical values with the same message
    with pytest.raises(InvalidAddress, match="alias destination is not in canonical form"):
        codec.check_destinations(["A@example.org"])
    with pytest.raises(InvalidInput, match="quota must be an integer"):
        mapping.checked_account_changes(mapping.AccountChanges(quota=-1))


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "10"])
def test_page_limit_refuses_non_positive_or_non_integers(limit: Any) -> None:
    with pytest.raises(InvalidInput, match="limit must be a positive integer"):
        checks.check_page_limit(limit)


def test_page_limit_is_capped() -> None:
    assert checks.check_page_limit(7) == 7
    assert checks.check_page_limit(10**9) == checks.MAX_PAGE


@pytest.mark.parametrize(("prefix", "message"), [("x" * 255, "at most 254"), ("a\x00", "NUL")])
def test_prefix_is_bounded_and_without_nul(prefix: Any, message: str) -> None:
    assert checks.check_prefix("x" * 254) == "x" * 254
    with pytest.raises(InvalidInput, match=message):
        checks.check_prefix(prefix)
