"""Shared fixtures. Backend fixtures live in tests/fixtures/ and are loaded as plugins here."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.embedded",
    "tests.fixtures.slapd",
    "tests.fixtures.postfix",
    "tests.fixtures.ci",
    "tests.fixtures.mailstack",  # last: it imports the plugins above
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(params=["embedded", "ldap"])
def directory(request: pytest.FixtureRequest) -> object:
    """Every backend in turn, freshly emptied: the contract suite runs unchanged against each."""
    return request.getfixturevalue(f"{request.param}_directory")
