"""The one canonicalisation (idsvc.model): table-driven valid and invalid forms, look-alikes that
must never fold onto an ASCII account, idempotence under hypothesis, recipient extensions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.errors import InvalidAddress, InvalidDomain, InvalidInput
from idsvc.model import (
    Address,
    Secret,
    canonical_address,
    canonical_alias_source,
    canonical_domain,
)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("Bob@Example.ORG", "bob@example.org"),
        ("bob@example.org.", "bob@example.org"),  # the DNS root dot
        ("o'neil@example.org", "o'neil@example.org"),
        ("a*b+tag@example.org", "a*b+tag@example.org"),
        ("first.last@sub.example.org", "first.last@sub.example.org"),
        ("bob@bücher.de", "bob@xn--bcher-kva.de"),  # U-label stored as its A-label
        ("bob@XN--BCHER-KVA.de", "bob@xn--bcher-kva.de"),
        ("bob@examp\u0131e.org", "bob@xn--exampe-t9a.org"),  # dotless i: another domain
    ],
)
def test_valid_forms(raw: str, canonical: str) -> None:
    assert canonical_address(raw) == canonical
    assert canonical_address(canonical) == canonical


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("", InvalidAddress),
        ("bob", InvalidAddress),  # no domain and no default
        ("\u212aelvin@example.org", InvalidAddress),  # Kelvin sign would lower() to "k"
        ("\uff42ob@example.org", InvalidAddress),  # fullwidth b
        ("bob@\uff45xample.org", InvalidDomain),  # fullwidth e (IDNA2008: disallowed)
        ("bob@\u212aexample.org", InvalidDomain),  # not NFC
        ("bob@BÜCHER.de", InvalidDomain),  # upper-case U-label refused, not mapped
        ("bo b@example.org", InvalidAddress),
        ("bob\x00@example.org", InvalidAddress),
        ("bob\r\n@example.org", InvalidAddress),
        ("bob@exa\x00mple.org", InvalidDomain),
        ('"bob"@example.org', InvalidAddress),  # quoted local parts are not accounts
        (".bob@example.org", InvalidAddress),
        ("bo..b@example.org", InvalidAddress),
        ("a@b@example.org", InvalidAddress),
        ("bob@[192.0.2.1]", InvalidDomain),
        ("bob@example..org", InvalidDomain),
        ("bob@-example.org", InvalidDomain),
        ("bob@example.123", InvalidDomain),
        ("bob@ab--cd.org", InvalidDomain),  # reserved form that is not an A-label
        ("bob@xn--zz.org", InvalidDomain),  # an A-label that does not decode
        ("x" * 65 + "@example.org", InvalidAddress),
        ("bob@" + "a" * 64 + ".org", InvalidDomain),
        ("bob@" + ("a" * 60 + ".") * 5 + "org", InvalidDomain),
    ],
)
def test_invalid_forms(raw: str, error: type[InvalidInput]) -> None:
    with pytest.raises(error):
        canonical_address(raw)


def test_default_domain_and_catch_all() -> None:
    assert str(Address.parse("Bob", default_domain="Example.ORG")) == "bob@example.org"
    assert canonical_alias_source("@Example.ORG") == "@example.org"
    assert canonical_alias_source("Info@Example.ORG") == "info@example.org"
    assert canonical_domain("Example.ORG.") == "example.org"


@given(st.text(max_size=80))
def test_canonicalisation_is_idempotent_and_ascii(text: str) -> None:
    try:
        once = canonical_address(text)
    except InvalidInput:
        return
    assert canonical_address(once) == once
    assert once.isascii()
    assert once == once.lower()


@pytest.mark.parametrize(
    ("address", "delimiters", "base"),
    [
        ("bob+tag@example.org", "+", "bob@example.org"),
        ("bob-tag@example.org", "+-", "bob@example.org"),
        ("bob+a+b@example.org", "+", "bob@example.org"),  # the first delimiter splits
        ("+bob@example.org", "+", "+bob@example.org"),  # a leading delimiter is not a split
        ("bob@example.org", "+", "bob@example.org"),
        ("bob+tag@example.org", "", "bob+tag@example.org"),  # delimiter handling off
    ],
)
def test_recipient_extension(address: str, delimiters: str, base: str) -> None:
    assert str(Address.parse(address).without_extension(delimiters)) == base


def test_secret_never_shows_itself() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret} {[secret]}"
    assert secret.reveal() == "hunter2"
