"""The SCIM PATCH applier (pure, table-driven), including Okta and Entra ID request shapes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from idsvc.api.scim.patch import PatchError, apply, parse_operations
from idsvc.api.scim.schemas import ENTERPRISE, GROUP, PATCH_OP, USER

BASE: dict[str, Any] = {
    "userName": "alice@example.org",
    "displayName": "Alice",
    "active": True,
    "name": {"givenName": "Alice", "familyName": "Liddell"},
    "emails": [{"value": "a@work.example", "type": "work"}],
}
GROUP_BASE: dict[str, Any] = {
    "displayName": "team@example.org",
    "members": [{"value": "a@example.org"}, {"value": "b@example.org"}],
}


def ops(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def changed(result: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Keys whose value differs from ``base`` (None for removed keys)."""
    out = {k: v for k, v in result.items() if base.get(k) != v}
    out.update({k: None for k in base if k not in result})
    return out


USER_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "replace simple",
        ops({"op": "replace", "path": "displayName", "value": "A"}),
        {"displayName": "A"},
    ),
    (
        "op case-insensitive",
        ops({"op": "Replace", "path": "displayName", "value": "A"}),
        {"displayName": "A"},
    ),
    (
        "path case-insensitive",
        ops({"op": "replace", "path": "DISPLAYNAME", "value": "A"}),
        {"displayName": "A"},
    ),
    (
        "Entra boolean string",
        ops({"op": "Replace", "path": "active", "value": "False"}),
        {"active": False},
    ),
    ("Okta boolean string", ops({"op": "replace", "path": "active", "value": "true"}), {}),
    (
        "no path, object",
        ops({"op": "replace", "value": {"active": False, "displayName": "B"}}),
        {"active": False, "displayName": "B"},
    ),
    (
        "no path, bool string",
        ops({"op": "replace", "value": {"active": "False"}}),
        {"active": False},
    ),
    (
        "no path, dotted key",
        ops({"op": "replace", "value": {"name.givenName": "Al"}}),
        {"name": {"givenName": "Al", "familyName": "Liddell"}},
    ),
    ("no path, unknown key ignored", ops({"op": "add", "value": {"nickName": "x"}}), {}),
    (
        "add merges a complex attribute",
        ops({"op": "add", "path": "name", "value": {"middleName": "P"}}),
        {"name": {"givenName": "Alice", "familyName": "Liddell", "middleName": "P"}},
    ),
    (
        "sub-attribute path",
        ops({"op": "replace", "path": "name.familyName", "value": "L"}),
        {"name": {"givenName": "Alice", "familyName": "L"}},
    ),
    ("remove simple", ops({"op": "remove", "path": "displayName"}), {"displayName": None}),
    (
        "remove sub-attribute",
        ops({"op": "remove", "path": "name.givenName"}),
        {"name": {"familyName": "Liddell"}},
    ),
    (
        "add appends to multi-valued",
        ops(
            {"op": "add", "path": "emails", "value": [{"value": "a@home.example", "type": "home"}]}
        ),
        {
            "emails": [
                {"value": "a@work.example", "type": "work"},
                {"value": "a@home.example", "type": "home"},
            ]
        },
    ),
    (
        "add of an existing value merges",
        ops(
            {"op": "add", "path": "emails", "value": {"value": "a@work.example", "primary": "True"}}
        ),
        {"emails": [{"value": "a@work.example", "type": "work", "primary": True}]},
    ),
    (
        "replace multi-valued",
        ops({"op": "replace", "path": "emails", "value": [{"value": "n@x.example"}]}),
        {"emails": [{"value": "n@x.example"}]},
    ),
    (
        "Entra filter.sub replace",
        ops({"op": "replace", "path": 'emails[type eq "work"].value', "value": "new@work.example"}),
        {"emails": [{"value": "new@work.example", "type": "work"}]},
    ),
    (
        "filter.sub add creates the element",
        ops({"op": "add", "path": 'emails[type eq "home"].value', "value": "h@home.example"}),
        {
            "emails": [
                {"value": "a@work.example", "type": "work"},
                {"type": "home", "value": "h@home.example"},
            ]
        },
    ),
    ("remove by filter", ops({"op": "remove", "path": 'emails[type eq "work"]'}), {"emails": None}),
    ("remove by filter, no match", ops({"op": "remove", "path": 'emails[type eq "home"]'}), {}),
    (
        "extension attribute by URN path",
        ops({"op": "add", "path": f"{ENTERPRISE}:department", "value": "Mail"}),
        {ENTERPRISE: {"department": "Mail"}},
    ),
    (
        "extension in a no-path value (Entra)",
        ops({"op": "add", "value": {f"{ENTERPRISE}:department": "Mail"}}),
        {ENTERPRISE: {"department": "Mail"}},
    ),
    (
        "whole extension by its URN",
        ops({"op": "replace", "path": ENTERPRISE, "value": {"costCenter": "7"}}),
        {ENTERPRISE: {"costCenter": "7"}},
    ),
    (
        "operations apply in order",
        ops(
            {"op": "replace", "path": "displayName", "value": "X"},
            {"op": "remove", "path": "displayName"},
            {"op": "add", "path": "displayName", "value": "Y"},
        ),
        {"displayName": "Y"},
    ),
    ("externalId", ops({"op": "add", "path": "externalId", "value": "e-1"}), {"externalId": "e-1"}),
    (
        "password is write-only, not read-only",
        ops({"op": "replace", "path": "password", "value": "pw"}),
        {"password": "pw"},
    ),
    (
        "lower-case operations key",
        {"schemas": [PATCH_OP], "operations": [{"op": "remove", "path": "name"}]},
        {"name": None},
    ),
]


@pytest.mark.parametrize(("label", "body", "diff"), USER_CASES, ids=[c[0] for c in USER_CASES])
def test_user_patch(label: str, body: dict[str, Any], diff: dict[str, Any]) -> None:
    result = apply(USER, BASE, parse_operations(body))
    assert changed(result, BASE) == diff
    assert BASE["name"] == {"givenName": "Alice", "familyName": "Liddell"}  # input untouched


GROUP_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "add members",
        ops({"op": "add", "path": "members", "value": [{"value": "c@example.org"}]}),
        ["a@example.org", "b@example.org", "c@example.org"],
    ),
    (
        "add an existing member is idempotent",
        ops(
            {"op": "add", "path": "members", "value": [{"value": "a@example.org", "display": "A"}]}
        ),
        ["a@example.org", "b@example.org"],
    ),
    (
        "Okta remove by filter",
        ops({"op": "remove", "path": 'members[value eq "a@example.org"]'}),
        ["b@example.org"],
    ),
    (
        "Entra remove by value list",
        ops({"op": "Remove", "path": "members", "value": [{"value": "b@example.org"}]}),
        ["a@example.org"],
    ),
    ("remove all members", ops({"op": "remove", "path": "members"}), []),
    (
        "replace members",
        ops({"op": "replace", "path": "members", "value": [{"value": "z@example.org"}]}),
        ["z@example.org"],
    ),
    (
        "no-path add of members",
        ops({"op": "add", "value": {"members": [{"value": "d@example.org"}]}}),
        ["a@example.org", "b@example.org", "d@example.org"],
    ),
]


@pytest.mark.parametrize(("label", "body", "members"), GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_group_patch(label: str, body: dict[str, Any], members: list[str]) -> None:
    result = apply(GROUP, GROUP_BASE, parse_operations(body))
    assert [m["value"] for m in result.get("members", [])] == members


ERRORS: list[tuple[str, Any, str, str]] = [
    ("not an object", [], "invalidSyntax", "PatchOp object"),
    (
        "no schema",
        {"Operations": [{"op": "add", "path": "a", "value": 1}]},
        "invalidSyntax",
        "schemas",
    ),
    ("no operations", {"schemas": [PATCH_OP], "Operations": []}, "invalidSyntax", "non-empty"),
    ("too many", ops(*[{"op": "remove", "path": "name"}] * 101), "invalidSyntax", "at most 100"),
    ("bad op", ops({"op": "move", "path": "name"}), "invalidSyntax", "add, replace or remove"),
    ("missing value", ops({"op": "add", "path": "displayName"}), "invalidValue", "needs a value"),
    (
        "unknown path",
        ops({"op": "add", "path": "nickName", "value": "x"}),
        "invalidPath",
        "unknown attribute",
    ),
    (
        "read-only",
        ops({"op": "replace", "path": "id", "value": "x"}),
        "invalidPath",
        "unknown attribute",
    ),
    (
        "unbalanced bracket",
        ops({"op": "remove", "path": 'emails[type eq "x"'}),
        "invalidPath",
        "unbalanced",
    ),
    (
        "bad filter",
        ops({"op": "remove", "path": 'emails[type is "x"]'}),
        "invalidPath",
        "invalid path",
    ),
    (
        "filter on a simple attribute",
        ops({"op": "remove", "path": 'displayName[value eq "x"]'}),
        "invalidFilter",
        "not a multi-valued",
    ),
    ("remove without path", ops({"op": "remove"}), "noTarget", "needs a path"),
    (
        "no-path value not an object",
        ops({"op": "add", "value": "x"}),
        "invalidValue",
        "object value",
    ),
    (
        "wrong type",
        ops({"op": "replace", "path": "active", "value": "maybe"}),
        "invalidValue",
        "boolean",
    ),
    (
        "wrong type string",
        ops({"op": "replace", "path": "displayName", "value": 5}),
        "invalidValue",
        "string",
    ),
    (
        "too long",
        ops({"op": "replace", "path": "displayName", "value": "x" * 2000}),
        "invalidValue",
        "longer than",
    ),
    (
        "filter replace without target",
        ops({"op": "replace", "path": 'emails[value sw "zz"].type', "value": "home"}),
        "noTarget",
        "matches no element",
    ),
    (
        "unknown sub-attribute",
        ops({"op": "replace", "path": "name.nick", "value": "x"}),
        "invalidPath",
        "unknown attribute",
    ),
]


@pytest.mark.parametrize(
    ("label", "body", "scim_type", "message"), ERRORS, ids=[c[0] for c in ERRORS]
)
def test_patch_errors(label: str, body: Any, scim_type: str, message: str) -> None:
    with pytest.raises(PatchError, match=re.escape(message)) as info:
        apply(USER, BASE, parse_operations(body))
    assert info.value.scim_type == scim_type
