"""The SCIM filter parser and evaluator (pure, table-driven)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idsvc.api.scim.filter import (
    MAX_DEPTH,
    MAX_FILTER,
    And,
    AttrPath,
    Compare,
    FilterError,
    Not,
    Or,
    Present,
    ValuePath,
    equalities,
    evaluate,
    parse,
)

ALICE: dict[str, Any] = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
    "id": "alice@example.org",
    "externalId": "Okta-01",
    "userName": "alice@example.org",
    "displayName": "Alice Liddell",
    "active": True,
    "name": {"givenName": "Alice", "familyName": "Liddell"},
    "emails": [
        {"value": "alice@work.example", "type": "work", "primary": True},
        {"value": "alice@home.example", "type": "home"},
    ],
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Mail"},
    "meta": {"created": "2026-01-02T03:04:05+00:00"},
}
CASE_EXACT = {"id", "externalid"}

PARSES = [
    ('userName eq "a"', Compare(AttrPath("userName"), "eq", "a")),
    ('USERNAME EQ "a"', Compare(AttrPath("USERNAME"), "eq", "a")),
    ("active eq true", Compare(AttrPath("active"), "eq", True)),
    ("active eq False", Compare(AttrPath("active"), "eq", False)),
    ("x eq null", Compare(AttrPath("x"), "eq", None)),
    ("n gt 5", Compare(AttrPath("n"), "gt", 5)),
    ("n le -1.5", Compare(AttrPath("n"), "le", -1.5)),
    ("title pr", Present(AttrPath("title"))),
    ('name.givenName sw "Al"', Compare(AttrPath("name", "givenName"), "sw", "Al")),
    (
        'urn:ietf:params:scim:schemas:core:2.0:User:userName eq "a"',
        Compare(
            AttrPath("userName", None, "urn:ietf:params:scim:schemas:core:2.0:User"), "eq", "a"
        ),
    ),
    (
        'a eq "1" or b eq "2" and c eq "3"',
        Or(
            Compare(AttrPath("a"), "eq", "1"),
            And(Compare(AttrPath("b"), "eq", "2"), Compare(AttrPath("c"), "eq", "3")),
        ),
    ),
    (
        '(a eq "1" or b eq "2") and c eq "3"',
        And(
            Or(Compare(AttrPath("a"), "eq", "1"), Compare(AttrPath("b"), "eq", "2")),
            Compare(AttrPath("c"), "eq", "3"),
        ),
    ),
    ('not (a eq "1")', Not(Compare(AttrPath("a"), "eq", "1"))),
    (
        'emails[type eq "work"]',
        ValuePath(AttrPath("emails"), Compare(AttrPath("type"), "eq", "work")),
    ),
    (
        'emails[type eq "work"].value eq "x"',
        ValuePath(
            AttrPath("emails"),
            And(Compare(AttrPath("type"), "eq", "work"), Compare(AttrPath("value"), "eq", "x")),
        ),
    ),
    ('a eq "q\\"uote\\u00e9"', Compare(AttrPath("a"), "eq", 'q"uote\u00e9')),
    (
        'meta.lastModified gt "2026-01-01T00:00:00Z"',
        Compare(AttrPath("meta", "lastModified"), "gt", "2026-01-01T00:00:00Z"),
    ),
]


@pytest.mark.parametrize(("text", "tree"), PARSES)
def test_parse(text: str, tree: object) -> None:
    assert parse(text) == tree


BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("userName", "ends early"),
    ("userName eq", "ends early"),
    ('userName is "a"', "unknown operator"),
    ('userName eq "a', "unexpected character"),
    ("userName eq bare", "expected a value"),
    ('userName eq "a" and', "ends early"),
    ('userName eq "a" "b"', "unexpected"),
    ('(userName eq "a"', "expected ')'"),
    ('userName eq "a")', "unexpected"),
    ('emails[type eq "work"', "expected ']'"),
    ('name.givenName[x eq "1"]', "sub-attribute"),
    ('1abc eq "x"', "invalid attribute path"),
    ('foo:bar eq "x"', "invalid attribute path"),
    ('a eq "x" ; drop', "unexpected character"),
    ('a eq "\x01"', "unexpected character"),
    ("x" * (MAX_FILTER + 1), "longer than"),
    ("(" * (MAX_DEPTH + 1) + 'a eq "1"' + ")" * (MAX_DEPTH + 1), "nested deeper"),
    (" and ".join(["a pr"] * 100), "tokens"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=re.escape(message)):
        parse(text)


EVALUATES = [
    ('userName eq "ALICE@example.org"', True),  # caseExact false
    ('externalId eq "okta-01"', False),  # caseExact true
    ('externalId eq "Okta-01"', True),
    ('id eq "ALICE@example.org"', False),
    ("active eq true", True),
    ('active eq "true"', False),  # types must agree
    ("active ne true", False),
    ('displayName co "lid"', True),
    ('displayName sw "alice"', True),
    ('displayName ew "LIDDELL"', True),
    ('displayName ne "bob"', True),
    ('nickName ne "bob"', True),  # absent: not equal
    ("nickName eq null", True),
    ("displayName eq null", False),
    ("nickName pr", False),
    ("name pr", True),
    ('name.givenName eq "alice"', True),
    ('name.familyName eq "alice"', False),
    ('emails eq "alice@home.example"', True),  # multi-valued: any element's value
    ('emails.value eq "alice@home.example"', True),
    ('emails.type eq "other"', False),
    ('emails[type eq "work"].value eq "alice@work.example"', True),
    ('emails[type eq "work"].value eq "alice@home.example"', False),
    ('emails[type eq "home" and value co "home"]', True),
    ("emails[primary eq true]", True),
    ('emails[type eq "other"]', False),
    ('urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "mail"', True),
    ('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "alice@example.org"', True),
    ('urn:example:other:2.0:User:userName eq "alice@example.org"', False),
    ('meta.created gt "2026-01-01"', True),
    ('meta.created lt "2026-01-01"', False),
    ('userName eq "x" or active eq true', True),
    ('userName eq "x" and active eq true', False),
    ('not (userName eq "x") and active eq true', True),
    ("displayName gt 5", False),  # string vs number: no order
]


@pytest.mark.parametrize(("text", "expected"), EVALUATES)
def test_evaluate(text: str, expected: bool) -> None:
    assert evaluate(parse(text), ALICE, CASE_EXACT) is expected


INDEXABLE = [
    ('userName eq "a"', [("username", "a")]),
    ('userName eq "a" and active eq true', [("username", "a"), ("active", True)]),
    ('userName eq "a" or userName eq "b"', []),  # an or cannot use one index
    ('externalId eq "e"', [("externalid", "e")]),
    ('emails[type eq "work"].value eq "x"', [("emails.type", "work"), ("emails.value", "x")]),
    ('emails.value eq "x"', [("emails.value", "x")]),
    ('not (userName eq "a")', []),
    ('userName sw "a"', []),
]


@pytest.mark.parametrize(("text", "expected"), INDEXABLE)
def test_equalities(text: str, expected: list[tuple[str, object]]) -> None:
    assert equalities(parse(text)) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        node = parse(text)
    except FilterError:
        return
    evaluate(node, ALICE, CASE_EXACT)  # whatever parses, evaluates without error
