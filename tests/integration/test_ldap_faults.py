"""Fault injection against real slapd processes of this module's own: a server down at start,
killed mid-use, SIGSTOPped (black-holed: a slow directory costs one timeout, not two), failover
to a second URI (also when the first is slow rather than dead), and the pending bound.

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


async def _several_connections(directory: LdapDirectory) -> None:
    """Open more than one reader connection (a burst makes the pool grow in the background),
    so a retry would find another already-open connection to the same server."""
    for _ in range(20):
        found = await asyncio.gather(*(directory.find_account(ALICE) for _ in range(30)))
        assert all(entry is not None for entry in found)
        if directory._reader.connections >= 2:
            return
    raise AssertionError("the reader pool never opened a second connection")


async def test_a_slow_directory_costs_one_timeout_not_two(own_slapd: SlapdServer) -> None:
    """Every operation unanswered (SIGSTOP) with several connections open: the lookup, and a
    whole authentication over it, fail as temporary within ~1x ``timeout``. Before, the read
    timed out, was retried on another open connection to the same stopped server and timed
    out again (2x)."""
    from idsvc.audit import LogAuditSink
    from idsvc.auth.engine import Authenticator
    from idsvc.auth.request import AuthRequest, Outcome
    from idsvc.config import AuthSettings, PasswordSettings
    from idsvc.model import Secret
    from idsvc.passwords import PasswordHasher

    timeout = 1.0
    base = await _fresh(own_slapd)
    async with _opened(own_slapd, base, timeout=timeout, pool_size=4) as directory:
        await _several_connections(directory)
        auth = Authenticator(
            directory,
            PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT")),
            AuthSettings(failure_delay=0, penalty=False, cache=False),
            audit=LogAuditSink(),
        )
        own_slapd.pause()
        try:
            started = time.monotonic()
            with pytest.raises(TemporaryFailure):
                await directory.find_account(ALICE)
            assert time.monotonic() - started < timeout + 0.4
            own_slapd.resume()
            await eventually(lambda: directory.find_account(ALICE))
            await _several_connections(directory)
            own_slapd.pause()
            started = time.monotonic()
            request = AuthRequest("alice@example.org", Secret("pw"), "imap", secured=True)
            result = await auth.authenticate(request)
            assert result.outcome is Outcome.TEMPFAIL
            assert time.monotonic() - started < timeout + 0.4
        finally:
            own_slapd.resume()
            await auth.close()
        assert await eventually(lambda: directory.find_account(ALICE)) is not None


async def test_a_slow_corporate_directory_costs_one_timeout_not_two(
    own_slapd: SlapdServer,
) -> None:
    """The read-only corporate adapter (``CorporateDirectory``) shares the read path: one
    timeout for a stopped server, even with several connections open to it."""
    from idsvc.directory.ldap.corporate import CorporateDirectory
    from tests.integration.test_corporate_openldap import DOMAIN, load, open_corp, person

    timeout = 1.0
    base = own_slapd.new_subtree("corp")
    load(own_slapd, base, {"erin": person("erin", "io-Erin-pw", mail=[f"erin@{DOMAIN}"])})
    corp: CorporateDirectory = await open_corp(
        own_slapd, base, "inetorgperson", **{**FAST, "timeout": timeout, "pool_size": 4}
    )
    erin = Address.parse(f"erin@{DOMAIN}")
    try:
        for _ in range(20):
            found = await asyncio.gather(*(corp.find_account(erin) for _ in range(30)))
            assert all(entry is not None for entry in found)
            if corp._reader.connections >= 2:
                break
        assert corp._reader.connections >= 2
        own_slapd.pause()
        try:
            started = time.monotonic()
            with pytest.raises(TemporaryFailure):
                await corp.find_account(erin)
            assert time.monotonic() - started < timeout + 0.4
        finally:
            own_slapd.resume()
        assert await eventually(lambda: corp.find_account(erin)) is not None
    finally:
        await corp.close()


async def test_a_lost_connection_is_still_retried(own_slapd: SlapdServer) -> None:
    """A connection the server dropped (restart) is retried on a fresh one: no error at all."""
    async with _opened(own_slapd, await _fresh(own_slapd), pool_size=4) as directory:
        await _several_connections(directory)
        await asyncio.sleep(0.5)  # background connects of the burst are done
        own_slapd.restart()
        for _ in range(3):
            assert await directory.find_account(ALICE) is not None


async def _twin(own_slapd: SlapdServer, second: SlapdServer) -> str:
    """The same DIT on ``second`` as on ``own_slapd``, reachable with one settings object."""
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
    return base


async def test_a_slow_first_server_fails_over_within_one_timeout(
    own_slapd: SlapdServer, second: SlapdServer
) -> None:
    """Two servers, the first stopped (slow, not dead): the read gives it half the time, then
    retries on the second — answered within one ``timeout``, and later reads go straight to
    the second while the first is marked down."""
    timeout = 2.0
    base = await _twin(own_slapd, second)
    uris = (own_slapd.uri, second.uri)
    async with _opened(own_slapd, base, uris=uris, timeout=timeout, pool_size=4) as directory:
        await _several_connections(directory)
        own_slapd.pause()
        try:
            started = time.monotonic()
            assert await directory.find_account(ALICE) is not None
            elapsed = time.monotonic() - started
            assert timeout / 2 - 0.1 < elapsed < timeout, elapsed
            started = time.monotonic()
            assert await directory.find_account(ALICE) is not None
            assert time.monotonic() - started < 0.5  # the slow server is skipped now
        finally:
            own_slapd.resume()


async def test_failover_to_a_second_uri(own_slapd: SlapdServer) -> None:
    base = await _fresh(own_slapd)
    async with _opened(own_slapd, base, uris=(_dead_uri(), own_slapd.uri)) as directory:
        for _ in range(3):
            assert await directory.find_account(ALICE) is not None


async def test_failover_when_the_first_server_dies(
    own_slapd: SlapdServer, second: SlapdServer
) -> None:
    base = await _twin(own_slapd, second)
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
