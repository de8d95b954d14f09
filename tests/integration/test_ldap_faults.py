"""Fault injection against real slapd processes of this module's own: a server down at start,
killed mid-use, SIGSTOPped (black-holed), failover to a second URI, and the pending bound.

Each test starts its own ``SlapdServer`` (the ``own_slapd`` fixture: no TLS, ~0.1 s) so the
shared session server stays healthy. ``pause()`` returns only once slapd is really stopped, so a
request sent right after it cannot be answered by accident. Every wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from idsvc.directory.ldap import LdapDirectory
from idsvc.errors import TemporaryFailure
from idsvc.model import Account, Address, Domain
from tests.fixtures.outage import eventually
from tests.fixtures.slapd import SlapdServer, ssha

pytestmark = [pytest.mark.slapd, pytest.mark.slow]

ALICE = Address.parse("alice@example.org")
FAST = {"connect_timeout": 1.0, "timeout": 1.0, "retry_after": 0.2}


@pytest.fixture
def second() -> Iterator[SlapdServer]:
    """Another slapd with the same suffix, for failover."""
    with SlapdServer(tls=False) as srv:
        yield srv


async def _fresh(server: SlapdServer) -> str:
    """A new subtree holding example.org and alice; returns its base DN."""
    base = server.new_subtree("t")
    directory = await LdapDirectory.open(server.settings(base))
    try:
        await directory.add_domain(Domain(name="example.org"))
        await directory.add_account(Account(ALICE, ssha("pw")))
    finally:
        await directory.close()
    return base


@asynccontextmanager
async def _opened(server: SlapdServer, base: str, **overrides: Any) -> AsyncIterator[LdapDirectory]:
    """An LdapDirectory on ``base``, FAST timeouts unless overridden, closed at the end."""
    directory = await LdapDirectory.open(server.settings(base, **{**FAST, **overrides}))
    try:
        yield directory
    finally:
        await directory.close()


def _dead_uri() -> str:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return f"ldap://127.0.0.1:{sock.getsockname()[1]}"


async def test_server_down_at_open_then_recovers(own_slapd: SlapdServer) -> None:
    base = await _fresh(own_slapd)
    own_slapd.stop()
    started = time.monotonic()
    async with _opened(own_slapd, base) as directory:  # must not fail
        assert time.monotonic() - started < 5
        with pytest.raises(TemporaryFailure):
            await directory.find_account(ALICE)
        with pytest.raises(TemporaryFailure):
            await directory.ping()
        own_slapd.start()
        found = await eventually(lambda: directory.find_account(ALICE))
        assert found is not None
        assert found.address == ALICE


async def test_killed_mid_use_then_recovers_with_the_same_object(own_slapd: SlapdServer) -> None:
    async with _opened(own_slapd, await _fresh(own_slapd)) as directory:
        assert await directory.find_account(ALICE) is not None
        assert (await directory.list_accounts()).total == 1
        own_slapd.kill()
        for _ in range(3):  # never None ("no such user"), always a temporary failure
            with pytest.raises(TemporaryFailure):
                await directory.find_account(ALICE)
        with pytest.raises(TemporaryFailure):
            await directory.add_account(Account(Address.parse("bob@example.org"), None))
        with pytest.raises(TemporaryFailure):
            await directory.list_accounts()
        own_slapd.start()  # same port, same data
        assert await eventually(lambda: directory.find_account(ALICE)) is not None
        # the writer pool recovers too (its old connection was reset by the kill)
        added = await eventually(
            lambda: directory.add_account(Account(Address.parse("bob@example.org"), None))
        )
        assert added.revision == 1


async def test_restart_between_calls_is_invisible(own_slapd: SlapdServer) -> None:
    async with _opened(own_slapd, await _fresh(own_slapd)) as directory:
        assert await directory.find_account(ALICE) is not None
        own_slapd.restart()  # clean stop + start: pooled connections are now closed by the peer
        assert await directory.find_account(ALICE) is not None
        assert (await directory.list_accounts()).total == 1


async def test_sigstopped_server_fails_within_the_timeout(own_slapd: SlapdServer) -> None:
    base = await _fresh(own_slapd)
    async with _opened(own_slapd, base) as directory:
        assert await directory.find_account(ALICE) is not None
        own_slapd.pause()  # returns once every slapd thread is stopped
        try:
            started = time.monotonic()
            with pytest.raises(TemporaryFailure):
                await directory.find_account(ALICE)
            elapsed = time.monotonic() - started
            assert elapsed < 1.0 * 2 + 1.5, elapsed
            # a fresh connection to the stopped server (TCP accepts, nothing answers) too
            async with _opened(own_slapd, base) as other:
                started = time.monotonic()
                with pytest.raises(TemporaryFailure):
                    await other.find_account(ALICE)
                assert time.monotonic() - started < 1.0 * 2 + 1.5
        finally:
            own_slapd.resume()
        assert await eventually(lambda: directory.find_account(ALICE)) is not None


async def test_failover_to_a_second_uri(own_slapd: SlapdServer) -> None:
    base = await _fresh(own_slapd)
    async with _opened(own_slapd, base, uris=(_dead_uri(), own_slapd.uri)) as directory:
        for _ in range(3):
            assert await directory.find_account(ALICE) is not None


async def test_failover_when_the_first_server_dies(
    own_slapd: SlapdServer, second: SlapdServer
) -> None:
    base = await _fresh(own_slapd)
    assert await _fresh(second) == base  # same suffix, same DIT on both
    conn = second.connect()
    try:  # the first server's service passwords, so one settings object fits both
        for dn, pw in (
            (second.reader_dn, own_slapd.reader_pw),
            (second.writer_dn, own_slapd.writer_pw),
        ):
            conn.modify_s(dn, [(2, "userPassword", [ssha(pw).encode()])])
    finally:
        conn.unbind_s()
    async with _opened(own_slapd, base, uris=(own_slapd.uri, second.uri)) as directory:
        assert await directory.find_account(ALICE) is not None
        own_slapd.kill()
        # the failed read is retried once on the next server: no error is seen at all
        assert await directory.find_account(ALICE) is not None
        assert await directory.find_domain("example.org") is not None
        # while the first is marked down, new connections go straight to the second
        second_only = await directory.list_accounts()
        assert second_only.total == 1


async def test_pending_requests_are_bounded(own_slapd: SlapdServer) -> None:
    base = await _fresh(own_slapd)
    async with _opened(own_slapd, base, max_pending=2, pool_size=1) as directory:
        assert await directory.find_account(ALICE) is not None
        own_slapd.pause()
        try:
            results = await asyncio.gather(
                *(directory.find_account(ALICE) for _ in range(6)), return_exceptions=True
            )
        finally:
            own_slapd.resume()
        assert all(isinstance(r, TemporaryFailure) for r in results), results
        assert sum("too many pending" in str(r) for r in results) == 4
