"""The LDAP escaping choke point (idsvc.directory.filters), table-driven, plus the schema files.

Every row states the exact string a value becomes, so a change in escaping shows up here. The
round-trip checks parse the produced DNs back with python-ldap and get the original value.
"""

from __future__ import annotations

import re
from pathlib import Path

import ldap.dn
import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.directory import filters
from idsvc.directory.mapping import IDSVC, format_time, parse_time
from idsvc.errors import ConfigError, InvalidInput
from idsvc.model import Address

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
_CONTROLS = [chr(c) for c in (*range(0x20), 0x7F)]

EQ_CASES = [
    ("alice@example.org", "(mail=alice@example.org)"),
    ("*", r"(mail=\2a)"),
    ("*)(uid=*", r"(mail=\2a\29\28uid=\2a)"),
    ("a)(|(objectClass=*", r"(mail=a\29\28|\28objectClass=\2a)"),
    ("\\", r"(mail=\5c)"),
    ("x\x00y", r"(mail=x\00y)"),
    (",cn=admin", "(mail=,cn=admin)"),
    ("(", r"(mail=\28)"),
    ("é", "(mail=é)"),
    ("", "(mail=)"),
]


@pytest.mark.parametrize(("value", "expected"), EQ_CASES)
def test_eq_escapes(value: str, expected: str) -> None:
    assert filters.eq("mail", value) == expected


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", "(cn=*)"),
        ("al", "(cn=al*)"),
        ("a*", r"(cn=a\2a*)"),
        ("a)(", r"(cn=a\29\28*)"),
        ("\x00", r"(cn=\00*)"),
    ],
)
def test_startswith(prefix: str, expected: str) -> None:
    assert filters.startswith("cn", prefix) == expected


def test_endswith_and_after() -> None:
    assert filters.endswith("cn", "@x*") == r"(cn=*@x\2a)"
    assert filters.endswith("cn", "") == "(cn=*)"
    assert filters.after("k", "a)") == r"(&(k>=a\29)(!(k=a\29)))"
    assert filters.greater_or_equal("k", "*") == r"(k>=\2a)"


def test_combinators() -> None:
    a, b = filters.eq("a", "1"), filters.eq("b", "2")
    assert filters.and_(a) == a
    assert filters.and_(a, b) == "(&(a=1)(b=2))"
    assert filters.or_(a, b) == "(|(a=1)(b=2))"
    assert filters.not_(a) == "(!(a=1))"
    with pytest.raises(ValueError, match="at least one"):
        filters.and_()
    with pytest.raises(ValueError, match="at least one"):
        filters.or_()


@pytest.mark.parametrize(
    ("mask", "expected"),
    [(2, "(uac:1.2.840.113556.1.4.803:=2)"), (0, "(uac:1.2.840.113556.1.4.803:=0)")],
)
def test_bit_and(mask: int, expected: str) -> None:
    assert filters.bit_and("uac", mask) == expected


@pytest.mark.parametrize("mask", [-1, 1 << 32, True])
def test_bit_and_refuses(mask: int) -> None:
    with pytest.raises(InvalidInput):
        filters.bit_and("uac", mask)


@pytest.mark.parametrize(
    "name", ["", "1cn", "cn)", "c n", "cn=", "mail*", "a" * 200, "1.", "cn\x00", "(cn"]
)
def test_bad_attribute_names(name: str) -> None:
    with pytest.raises(ConfigError):
        filters.eq(name, "x")


@pytest.mark.parametrize("name", ["cn", "idsvcAddress", "x-y", "2.5.4.3", "userPassword"])
def test_good_attribute_names(name: str) -> None:
    assert filters.attribute(name) == name


def test_value_length_is_bounded() -> None:
    with pytest.raises(InvalidInput):
        filters.eq("cn", "x" * (filters.MAX_VALUE + 1))
    with pytest.raises(InvalidInput):
        filters.rdn("cn", "x" * (filters.MAX_VALUE + 1))


DN_CASES = [
    ("alice@example.org", "cn=alice@example.org"),
    (",cn=admin", r"cn=\,cn\=admin"),
    ("a+b", r"cn=a\+b"),
    ('q"<>;', r"cn=q\"\<\>\;"),
    ("\\", r"cn=\\"),
    (" lead", r"cn=\ lead"),
    ("trail ", r"cn=trail\ "),
    ("#hash", r"cn=\#hash"),
    ("@example.org", "cn=@example.org"),
]


@pytest.mark.parametrize(("value", "expected"), DN_CASES)
def test_rdn_escapes_and_round_trips(value: str, expected: str) -> None:
    rdn = filters.rdn("cn", value)
    assert rdn == expected
    dn = filters.child("cn", value, filters.DN("dc=example,dc=org"))
    parsed = ldap.dn.str2dn(dn)
    assert parsed[0][0][1] == value
    assert [p[0][:2] for p in parsed[1:]] == [("dc", "example"), ("dc", "org")]
    assert filters.rdn_value(dn) == value
    assert filters.parent(dn) == "dc=example,dc=org"


@pytest.mark.parametrize("value", ["", "nul\x00", "\n", "a\tb", "x\r", "\x7f", "\x01cn=admin"])
def test_rdn_value_refused(value: str) -> None:
    with pytest.raises(InvalidInput):
        filters.rdn("cn", value)


@pytest.mark.parametrize("text", ["", "cn", "cn=a,,", "=x", "cn=a,dc"])
def test_parse_dn_refuses(text: str) -> None:
    with pytest.raises(InvalidInput):
        filters.parse_dn(text)


def test_parse_dn_accepts() -> None:
    assert filters.parse_dn("o=t1,dc=idsvc,dc=test") == "o=t1,dc=idsvc,dc=test"


@given(st.text(max_size=80))
def test_any_value_stays_inside_its_assertion(value: str) -> None:
    built = filters.eq("cn", value)
    body = built[len("(cn=") : -1]
    # no unescaped filter metacharacter can survive: only the outer parentheses remain
    assert not re.search(r"[()*\x00]", body)
    assert body.count("\\") == len(re.findall(r"\\[0-9a-f]{2}", body))


@given(
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters=_CONTROLS),
        min_size=1,
        max_size=80,
    )
)
def test_any_value_round_trips_through_a_dn(value: str) -> None:
    dn = filters.child("cn", value, filters.DN("dc=x"))
    assert filters.rdn_value(dn) == value
    assert len(ldap.dn.str2dn(dn)) == 2


def test_profile_builds_escaped_filters_and_dns() -> None:
    evil = Address("*)(uid=*", "example.org")  # bypasses Address.parse on purpose
    assert IDSVC.account_filter(evil) == (
        r"(&(objectClass=idsvcAccount)(idsvcAddress=\2a\29\28uid=\2a@example.org))"
    )
    dn = IDSVC.account_dn(evil, filters.DN("dc=x"))
    assert ldap.dn.str2dn(dn)[0][0][1] == "*)(uid=*@example.org"
    assert IDSVC.alias_dn("@example.org", filters.DN("dc=x")) == (
        "cn=@example.org,idsvcDomainName=example.org,ou=domains,dc=x"
    )


def test_generalized_time_round_trip() -> None:
    moment = parse_time("20261126085436Z")
    assert format_time(moment) == b"20261126085436Z"
    assert parse_time("20261126085436.123Z") == moment
    for bad in ("20261126085436", "2026-11-26Z", "x" * 40 + "Z"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_time(bad)


def _definitions(text: str) -> list[str]:
    """Schema definitions as whitespace-normalised strings, from either file format."""
    found = re.findall(
        r"(?:^attributetype|^objectclass|^olcAttributeTypes:|^olcObjectClasses:)\s*(\(.*?)(?=^\S|\Z)",
        text,
        re.M | re.S,
    )
    return [" ".join(d.split()) for d in found]


def test_schema_files_agree() -> None:
    schema = _definitions((SCHEMAS / "idsvc.schema").read_text())
    ldif = _definitions((SCHEMAS / "idsvc.ldif").read_text())
    assert len(schema) == 15
    assert schema == ldif
    arc = "2.25.81349417493400819692312518794524618312."
    oids = [d.split()[1] for d in schema]
    assert all(o.startswith(arc) for o in oids)
    assert len(set(oids)) == len(oids)
