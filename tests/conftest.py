"""Shared fixtures. Backend fixtures live in tests/fixtures/ and are loaded as plugins here."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.embedded",
    "tests.fixtures.slapd",
    "tests.fixtures.postfix",
    "tests.fixtures.ci",
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(params=["embedded", "ldap"])
def directory(request: pytest.FixtureRequest) -> object:
    """Every backend in turn, freshly emptied: the contract suite runs unchanged against each."""
    return request.getfixturevalue(f"{request.param}_directory")


# -- event loop matrix -------------------------------------------------------------------------
# ``idsvc serve`` runs on uvloop when serve.loop says so (auto: when installed); the wire servers'
# tests therefore run on both loops. Every other async test runs on the stdlib loop only.
# IDSVC_TEST_LOOPS (comma-separated: asyncio, uvloop) narrows the matrix, e.g. for a quick run.
WIRE_TESTS = (
    "tests/unit/test_control.py",
    "tests/unit/test_saslauthd_listen.py",
    "tests/integration/test_saslauthd_server.py",
    "tests/integration/test_saslauthd_fault.py",
)
# The Dovecot server asserts isinstance(transport, asyncio.Transport), which uvloop's transports
# are not; its tests join the matrix once that assert is gone (set this to True then).
DOVECOT_ON_UVLOOP = False
DOVECOT_TESTS = (
    "tests/integration/test_dovecot_auth_server.py",
    "tests/integration/test_dovecot_auth_fault.py",
)


def _loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    import uvloop

    known: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop,
        "uvloop": uvloop.new_event_loop,
    }
    wanted = os.environ.get("IDSVC_TEST_LOOPS", "asyncio,uvloop").split(",")
    unknown = [name for name in wanted if name.strip() not in known]
    if unknown:
        raise pytest.UsageError(f"IDSVC_TEST_LOOPS: unknown loop(s) {unknown}; known: {known}")
    return {name.strip(): known[name.strip()] for name in wanted}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    path = Path(str(item.path)).relative_to(Path(str(config.rootpath))).as_posix()
    matrix = WIRE_TESTS + (DOVECOT_TESTS if DOVECOT_ON_UVLOOP else ())
    if path in matrix:
        return _loop_factories()
    return {"asyncio": asyncio.new_event_loop}
