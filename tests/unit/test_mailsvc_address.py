"""The envelope parser every relay decision uses (mailsvc.address): a table of address tricks
that must be refused, the normal forms, and hypothesis properties: whatever it accepts is a plain
``local@domain`` whose domain is exactly what the relay check looked at."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mailsvc.address import BadAddress, Mailbox, canonical_domain, parse_envelope

OURS = "example.org"

TRICKS = [
    "@relay.example:victim@remote.example",  # source route
    "@ours.example,@x.example:victim@remote.example",
    "victim%remote.example@example.org",  # percent hack
    "remote.example!victim@example.org",  # bang path
    "victim@remote.example@example.org",  # two @
    '"victim@remote.example"@example.org',  # quoted local part
    '"victim"@example.org',
    "vic\\@tim@example.org",
    "victim@[192.0.2.1]",  # address literals
    "victim@[IPv6:2001:db8::1]",
    "victim@192.0.2.1",  # bare IP
    "victim@example.org..",
    "victim@.example.org",
    "victim@example..org",
    "victim@-example.org",
    "victim@example-.org",
    "victim@localhost",  # not fully qualified
    "victim@exam ple.org",
    "victim@ex\u0430mple.org",  # Cyrillic a
    "victim@\uff45xample.org",  # fullwidth e
    "victim@\u212aelvin.org",  # Kelvin sign
    "v\u0131ctim@example.org",  # dotless i
    "victim@xn--80ak6aa92e.com..",
    "victim@xn--zz.org",  # broken A-label
    ".victim@example.org",
    "victim.@example.org",
    "vic..tim@example.org",
    "@example.org",
    "victim@",
    "victim",
    "",
    "a" * 65 + "@example.org",
    "victim@" + "a" * 250 + ".org",
    "victim@example.org\r\nRCPT TO:<x@remote.example>",
    "victim@example.org\x00",
    "victim <x>@example.org",
]


@pytest.mark.parametrize("text", TRICKS)
def test_tricks_are_refused(text: str) -> None:
    with pytest.raises(BadAddress):
        parse_envelope(text)


@pytest.mark.parametrize(
    ("text", "mailbox"),
    [
        ("alice@example.org", Mailbox("alice", OURS)),
        ("Alice@Example.ORG", Mailbox("alice", OURS)),
        ("alice@example.org.", Mailbox("alice", OURS)),  # one trailing dot: the same domain
        ("alice+tag@example.org", Mailbox("alice+tag", OURS)),
        ("o'brien@example.org", Mailbox("o'brien", OURS)),
        ("a.b-c_d@sub.example.org", Mailbox("a.b-c_d", "sub.example.org")),
        ("x@xn--mnchen-3ya.de", Mailbox("x", "xn--mnchen-3ya.de")),
    ],
)
def test_accepted_forms(text: str, mailbox: Mailbox) -> None:
    assert parse_envelope(text) == mailbox


def test_unicode_domain_from_configuration_becomes_a_label() -> None:
    assert canonical_domain("münchen.de") == "xn--mnchen-3ya.de"
    with pytest.raises(BadAddress):
        canonical_domain("\uff4dünchen.de")


_chars = st.sampled_from(string.ascii_letters + string.digits + '@%!:."\\[]<>()+-_ ,;\u0131\u212a')


@given(st.text(_chars, max_size=40))
def test_whatever_is_accepted_is_a_plain_address(text: str) -> None:
    try:
        mailbox = parse_envelope(text)
    except BadAddress:
        return
    rendered = str(mailbox)
    assert rendered.count("@") == 1
    for bad in '%!:"\\[]<> ,;()':
        assert bad not in rendered
    assert rendered.isascii()
    # the domain the relay check sees is the domain the address is delivered to
    assert rendered.rpartition("@")[2] == mailbox.domain
    assert parse_envelope(rendered) == mailbox  # idempotent


@given(st.text(max_size=30), st.text(max_size=30))
def test_a_hosted_domain_is_never_reached_by_tricks(local: str, tail: str) -> None:
    """Appending anything to a remote address never yields a mailbox in our domain unless the
    parsed domain really is ours and the local part holds no routing characters."""
    text = f"{local}@remote.example{tail}"
    try:
        mailbox = parse_envelope(text)
    except BadAddress:
        return
    if mailbox.domain == OURS:
        assert "@" not in mailbox.local
        assert "%" not in mailbox.local
        assert "!" not in mailbox.local


@given(st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,2}", fullmatch=True))
def test_plain_locals_roundtrip(local: str) -> None:
    assume(not local.isdigit())
    assert parse_envelope(f"{local}@{OURS}") == Mailbox(local, OURS)
