"""Fault injection against real slapd processes of this module's own: a server down at start,
killed mid-use, SIGSTOPped (black-holed), failover to a second URI, and the pending bound.

Each test starts its own ``SlapdServer`` (no TLS, ~0.1 s) so the shared session server stays
healthy. Every wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from idsvc.directory.ldap import LdapDirectory
from idsvc.errors import TemporaryFailure
from idsvc.model import Account, Address, Domain
from tests.fixtures.slapd import SlapdServer, require_slapd, ssha

pytestmark = [pytest.mark.slapd, pytest.mark.slow]

ALICE = Address.parse("alice@example.org")
FAST = {"connect_timeout": 1.0, "timeout": 1.0, "retry_after": 0.2}


@pytest.fixture
def server() -> Iterator[SlapdServer]:
    require_slapd()
    srv = SlapdServer(tls=False)
    try:
        srv.start()
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture
def second() -> Iterator[SlapdServer]:
    srv = SlapdServer(tls=False)
    try:
        srv.start()
        yield srv
    finally:
        srv.cleanup()


async def _seed(server: SlapdServer, base: str) -> None:
    directory = await LdapDirectory.open(server.settings(base))
    try:
        await directory.add_domain(Domain(name="example.org"))
        await directory.add_account(Account(ALICE, ssha("pw")))
    finally:
        await directory.close()


async def _eventually(check: Callable[[], Awaitable[Any]], seconds: float = 10.0) -> Any:
    """Retry ``check`` until it stops raising TemporaryFailure (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await check()
        except TemporaryFailure:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def _dead_uri() -> str:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return f"ldap://127.0.0.1:{sock.getsockname()[1]}"


async def test_server_down_at_open_then_recovers(server: SlapdServer) -> None:
    base = server.new_subtree("t")
    await _seed(server, base)
    server.stop()
    started = time.monotonic()
    directory = await LdapDirectory.open(server.settings(base, **FAST))  # must not fail
    try:
        assert time.monotonic() - started < 5
        with pytest.raises(TemporaryFailure):
            await directory.find_account(ALICE)
        with pytest.raises(TemporaryFailure):
            await directory.ping()
        server.start()
        found = await _eventually(lambda: directory.find_account(ALICE))
        assert found is not None
        assert found.address == ALICE
    finally:
        await directory.close()


async def test_killed_mid_use_then_recovers_with_the_same_object(server: SlapdServer) -> None:
    base = server.new_subtree("t")
    await _seed(server, base)
    directory = await LdapDirectory.open(server.settings(base, **FAST))
    try:
        assert await directory.find_account(ALICE) is not None
        assert (await directory.list_accounts()).total == 1
        server.kill()
        for _ in range(3):  # never None ("no such user"), always a temporary failure
            with pytest.raises(TemporaryFailure):
                await directory.find_account(ALICE)
        with pytest.raises(TemporaryFailure):
            await directory.add_account(Account(Address.parse("bob@example.org"), None))
        with pytest.raises(TemporaryFailure):
            await directory.list_accounts()
        server.start()  # same port, same data
        assert await _eventually(lambda: directory.find_account(ALICE)) is not None
        # the writer pool recovers too (its old connection was reset by the kill)
        added = await _eventually(
            lambda: directory.add_account(Account(Address.parse("bob@example.org"), None))
        )
        assert added.revision == 1
    finally:
        await directory.close()


async def test_restart_between_calls_is_invisible(server: SlapdServer) -> None:
    base = server.new_subtree("t")
    await _seed(server, base)
    directory = await LdapDirectory.open(server.settings(base, **FAST))
    try:
        assert await directory.find_account(ALICE) is not None
        server.restart()  # clean stop + start: pooled connections are now closed by the peer
        assert await directory.find_account(ALICE) is not None
        assert (await directory.list_accounts()).total == 1
    finally:
        await directory.close()


async def test_sigstopped_server_fails_within_the_timeout(server: SlapdServer) -> None:
    base = server.new_subtree("t")
    await _seed(server, base)
    directory = await LdapDirectory.open(server.settings(base, **FAST))
    try:
        assert await directory.find_account(ALICE) is not None
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(TemporaryFailure):
                await directory.find_account(ALICE)
            elapsed = time.monotonic() - started
            assert elapsed < 1.0 * 2 + 1.5, elapsed
            # a fresh connection to the stopped server (TCP accepts, nothing answers) too
            other = await LdapDirectory.open(server.settings(base, **FAST))
            try:
                started = time.monotonic()
                with pytest.raises(TemporaryFailure):
                    await other.find_account(ALICE)
                assert time.monotonic() - started < 1.0 * 2 + 1.5
            finally:
                await other.close()
        finally:
            server.resume()
        assert await _eventually(lambda: directory.find_account(ALICE)) is not None
    finally:
        await directory.close()


async def test_failover_to_a_second_uri(server: SlapdServer) -> None:
    base = server.new_subtree("t")
    await _seed(server, base)
    directory = await LdapDirectory.open(
        server.settings(base, uris=(_dead_uri(), server.uri), **FAST)
    )
    try:
        for _ in range(3):
            assert await directory.find_account(ALICE) is not None
    finally:
        await directory.close()


async def test_failover_when_the_first_server_dies(
    server: SlapdServer, second: SlapdServer
) -> None:
    base = server.new_subtree("t")
    assert second.new_subtree("t") == base  # same suffix, same DIT on both
    await _seed(server, base)
    await _seed(second, base)
    conn = second.connect()
    try:  # the first server's service passwords, so one settings object fits both
        for dn, pw in ((second.reader_dn, server.reader_pw), (second.writer_dn, server.writer_pw)):
            conn.modify_s(dn, [(2, "userPassword", [ssha(pw).encode()])])
    finally:
        conn.unbind_s()
    settings = server.settings(base, uris=(server.uri, second.uri), **FAST)
    directory = await LdapDirectory.open(settings)
    try:
        assert await directory.find_account(ALICE) is not None
        server.kill()
        # the failed read is retried once on the next server: no error is seen at all
        assert await directory.find_account(ALICE) is not None
        assert await directory.find_domain("example.org") is not None
        # while the first is marked down, new connections go straight to the second
        second_only = await directory.list_accounts()
        assert second_only.total == 1
    finally:
        await directory.close()


async def test_pending_requests_are_bounded(server: SlapdServer) -> None:
    base = server.new_subtree("t")
    await _seed(server, base)
    directory = await LdapDirectory.open(server.settings(base, max_pending=2, pool_size=1, **FAST))
    try:
        assert await directory.find_account(ALICE) is not None
        server.pause()
        try:
            results = await asyncio.gather(
                *(directory.find_account(ALICE) for _ in range(6)), return_exceptions=True
            )
        finally:
            server.resume()
        assert all(isinstance(r, TemporaryFailure) for r in results), results
        assert sum("too many pending" in str(r) for r in results) == 4
    finally:
        await directory.close()
