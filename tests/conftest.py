"""Shared fixtures. Backend fixtures live in tests/fixtures/ and are loaded as plugins here."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings as hypothesis_settings

pytest_plugins = [
    "tests.fixtures.embedded",
    "tests.fixtures.slapd",
    "tests.fixtures.postfix",
    "tests.fixtures.ci",
    "tests.fixtures.samba_ad",
    "tests.fixtures.mtastack",  # last: it imports the plugins above
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Hypothesis' per-example deadline measures wall time, which a loaded 2-core machine stretches
# at random; the examples are bounded by their strategies, and pytest-timeout bounds each test.
# In CI the examples are derived from each test's name (derandomize): a red CI run is
# reproducible with the same command. Local runs keep searching afresh (and remember
# what failed in .hypothesis/), which is where new counterexamples come from.
hypothesis_settings.register_profile(
    "idsvc",
    deadline=None,
    derandomize=IN_CI,
    database=None if IN_CI else hypothesis_settings.default.database,
)
hypothesis_settings.load_profile("idsvc")


@pytest.fixture(params=["embedded", "ldap"])
def directory(request: pytest.FixtureRequest) -> object:
    """Every backend in turn, freshly emptied: the contract suite runs unchanged against each."""
    return request.getfixturevalue(f"{request.param}_directory")
