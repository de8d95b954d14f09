"""The asynchronous read path (idsvc/directory/ldap/aio.py) against real slapd processes.

Many requests in flight on few connections (answers routed by message id, including error
results), TLS (LDAPS and StartTLS) under load, binds on one-request binder connections, a poll
that never blocks the loop, per-request timeouts with a black-holed server, connection loss with
requests in flight, cancellation, and close(). The shared session server is only read from;
fault tests start a ``SlapdServer`` of their own_slapd. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import ldap
import pytest

from idsvc.directory.base import BindResult
from idsvc.directory.ldap import LdapDirectory
from idsvc.directory.ldap.directory import RecentDns
from idsvc.directory.mapping import NOT_READ, AttributeProfile
from idsvc.errors import AmbiguousEntry, TemporaryFailure
from idsvc.model import Account, Address, Alias, Domain, Service
from tests.fixtures.outage import eventually
from tests.fixtures.slapd import SlapdServer, ssha

pytestmark = pytest.mark.slapd

PASSWORD = "aio-Passw0rd"
USERS = 40


def _user(i: int) -> Address:
    return Address.parse(f"user{i}@example.org")


async def _fill(directory: LdapDirectory) -> None:
    await directory.add_domain(Domain(name="example.org"))
    await asyncio.gather(
        *(directory.add_account(Account(_user(i), ssha(PASSWORD))) for i in range(USERS))
    )
    await directory.add_alias(Alias("info@example.org", ("user0@example.org",)))


@pytest.fixture
async def filled(slapd: SlapdServer) -> tuple[SlapdServer, str]:
    """A subtree of the shared server with example.org, USERS accounts and one alias."""
    base = slapd.new_subtree(f"aio-{secrets.token_hex(4)}")
    directory = await LdapDirectory.open(slapd.settings(base))
    try:
        await _fill(directory)
    finally:
        await directory.close()
    return slapd, base


async def _open_own(server: SlapdServer, **overrides: Any) -> LdapDirectory:
    base = server.new_subtree("t")
    directory = await LdapDirectory.open(server.settings(base, **overrides))
    await _fill(directory)
    return directory


async def test_many_lookups_in_flight_on_few_connections(
    filled: tuple[SlapdServer, str],
) -> None:
    slapd, base = filled
    directory = await LdapDirectory.open(slapd.settings(base, pool_size=2))
    try:
        wanted = [i % (USERS + 10) for i in range(400)]  # some do not exist
        found = await asyncio.gather(*(directory.find_account(_user(i)) for i in wanted))
        for i, account in zip(wanted, found, strict=True):
            if i < USERS:
                assert account is not None
                assert account.address == _user(i)
                assert account.password_hash is not None
            else:
                assert account is None
        assert 1 <= directory._reader.connections <= 2
    finally:
        await directory.close()


async def test_answers_are_routed_by_message_id_including_errors(
    filled: tuple[SlapdServer, str],
) -> None:
    """Successes, misses, ambiguous keys and referrals interleaved on ONE connection."""
    slapd, base = filled
    domain_dn = f"idsvcDomainName=example.org,ou=domains,{base}"
    slapd.add(f"cn=dup,{domain_dn}", {"objectClass": ["organizationalRole"], "cn": ["dup"]})
    slapd.add(  # a second entry for user1 → AmbiguousEntry
        f"cn=user1@example.org,cn=dup,{domain_dn}",
        {
            "objectClass": ["idsvcAccount"],
            "cn": ["user1@example.org"],
            "idsvcAddress": ["user1@example.org"],
        },
    )
    directory = await LdapDirectory.open(slapd.settings(base, pool_size=1))
    try:
        calls: list[Any] = []
        for _ in range(25):
            calls += [
                directory.find_account(_user(2)),
                directory.find_account(_user(1)),
                directory.find_alias("info@example.org"),
                directory.find_account(Address.parse("nobody@example.org")),
                directory.find_domain("example.org"),
            ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for n in range(0, len(results), 5):
            ok, ambiguous, alias, missing, domain = results[n : n + 5]
            assert isinstance(ok, Account)
            assert ok.address == _user(2)
            assert isinstance(ambiguous, AmbiguousEntry), ambiguous
            assert isinstance(alias, Alias)
            assert alias.destinations == ("user0@example.org",)
            assert missing is None
            assert isinstance(domain, Domain)
        assert directory._reader.connections == 1
    finally:
        await directory.close()


async def test_referral_among_concurrent_lookups(filled: tuple[SlapdServer, str]) -> None:
    slapd, base = filled
    directory = await LdapDirectory.open(slapd.settings(base, pool_size=1))
    try:
        other = f"o=ref-{secrets.token_hex(3)},{slapd.suffix}"
        slapd.add(
            other,
            {
                "objectClass": ["referral", "extensibleObject"],
                "o": [other.split(",")[0][2:]],
                "ref": ["ldap://127.0.0.1:9/o=elsewhere"],
            },
            manage_dsa_it=True,
        )
        foreign = LdapDirectory(slapd.settings(other, pool_size=1))
        try:
            results = await asyncio.gather(
                foreign.find_account(_user(3)),
                directory.find_account(_user(3)),
                return_exceptions=True,
            )
        finally:
            await foreign.close()
        assert isinstance(results[0], TemporaryFailure)
        assert "referral" in str(results[0])
        assert isinstance(results[1], Account)
    finally:
        await directory.close()


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
async def test_tls_under_load(filled: tuple[SlapdServer, str], mode: str) -> None:
    """TLS records can carry several LDAP messages: the drain must hand all of them out."""
    slapd, base = filled
    if mode == "ldaps":
        settings = slapd.settings(base, uris=(slapd.ldaps_uri,), ca_file=slapd.ca_file, pool_size=1)
    else:
        settings = slapd.settings(
            base, uris=(slapd.localhost_uri,), starttls=True, ca_file=slapd.ca_file, pool_size=1
        )
    directory = await LdapDirectory.open(settings)
    try:
        wanted = [i % USERS for i in range(300)]
        found = await asyncio.wait_for(
            asyncio.gather(*(directory.find_account(_user(i)) for i in wanted)), 30
        )
        assert [a.address if a else None for a in found] == [_user(i) for i in wanted]
    finally:
        await directory.close()


async def test_concurrent_binds_one_request_per_binder_connection(
    filled: tuple[SlapdServer, str],
) -> None:
    slapd, base = filled
    directory = await LdapDirectory.open(slapd.settings(base, pool_size=3, auth_method="bind"))
    try:
        checks = [(i % USERS, i % 3 != 0) for i in range(60)]
        results = await asyncio.wait_for(
            asyncio.gather(
                *(
                    directory.bind_check(
                        Account(_user(i), None), PASSWORD if right else PASSWORD + "x"
                    )
                    for i, right in checks
                )
            ),
            30,
        )
        for (_, right), result in zip(checks, results, strict=True):
            assert result is (BindResult.OK if right else BindResult.INVALID_CREDENTIALS)
        assert 1 <= directory._binder.connections <= 3
        # a missing user never reaches a bind
        missing = Account(Address.parse("ghost@example.org"), None)
        assert await directory.bind_check(missing, PASSWORD) is BindResult.INVALID_CREDENTIALS
    finally:
        await directory.close()


async def test_poll_does_not_block_while_the_server_is_silent(own_slapd: SlapdServer) -> None:
    """result4(timeout=0) on the loop thread returns at once, even with a request in flight
    that the (stopped) server will not answer."""
    directory = await _open_own(own_slapd, pool_size=1, timeout=1.0, connect_timeout=1.0)
    try:
        assert await directory.find_account(_user(1)) is not None
        (conn,) = directory._reader._conns
        own_slapd.pause()
        try:
            msgid = conn.search(
                directory._domains, ldap.SCOPE_SUBTREE, "(objectClass=*)", ["1.1"],
                0, None, None, 1.0, 0,
            )  # fmt: skip
            started = time.perf_counter()
            for _ in range(1000):
                assert conn.result(ldap.RES_ANY, 0, 0, 0, 0, 0)[0] is None
            per_poll = (time.perf_counter() - started) / 1000
            assert per_poll < 0.002, per_poll  # microseconds in practice
            conn.abandon(msgid, None, None)
        finally:
            own_slapd.resume()
    finally:
        await directory.close()


async def test_timeouts_fail_every_request_in_flight_then_recover(own_slapd: SlapdServer) -> None:
    fast = {"timeout": 1.0, "connect_timeout": 1.0, "retry_after": 0.2}
    directory = await _open_own(own_slapd, pool_size=1, **fast)
    try:
        assert await directory.find_account(_user(1)) is not None
        own_slapd.pause()
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(directory.find_account(_user(i)) for i in range(20)), return_exceptions=True
            )
            elapsed = time.monotonic() - started
        finally:
            own_slapd.resume()
        assert all(isinstance(r, TemporaryFailure) for r in results), results
        assert elapsed < 1.0 * 2 + 1.5, elapsed
        # the server is skipped for retry_after, then used again
        found = await eventually(lambda: directory.find_account(_user(5)))
        assert found is not None
        assert found.address == _user(5)
    finally:
        await directory.close()


async def test_killed_server_fails_requests_in_flight_at_once(own_slapd: SlapdServer) -> None:
    """A dead connection fails its requests immediately, not after the (long) timeout."""
    directory = await _open_own(own_slapd, pool_size=2, timeout=20.0, retry_after=0.2)
    try:
        assert await directory.find_account(_user(1)) is not None
        own_slapd.pause()  # requests queue up unanswered …
        tasks = [asyncio.create_task(directory.find_account(_user(i))) for i in range(10)]
        await asyncio.sleep(0.2)
        started = time.monotonic()
        own_slapd.kill()  # … then the server dies: the sockets are reset
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        assert time.monotonic() - started < 5
        assert all(isinstance(r, TemporaryFailure) for r in results), results
        own_slapd.start()
        assert await eventually(lambda: directory.find_account(_user(2))) is not None
    finally:
        await directory.close()


async def test_cancelled_lookup_is_abandoned(own_slapd: SlapdServer) -> None:
    directory = await _open_own(own_slapd, pool_size=1, timeout=5.0)
    try:
        assert await directory.find_account(_user(1)) is not None
        (conn,) = directory._reader._conns
        own_slapd.pause()
        try:
            task = asyncio.create_task(directory.find_account(_user(2)))
            await asyncio.sleep(0.1)
            assert len(conn.pending) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert conn.pending == {}
            assert directory._pending == 0
        finally:
            own_slapd.resume()
        found = await directory.find_account(_user(3))  # same connection, still healthy
        assert found is not None
        assert directory._reader._conns == {conn}
    finally:
        await directory.close()


async def test_close_fails_requests_in_flight(own_slapd: SlapdServer) -> None:
    directory = await _open_own(own_slapd, pool_size=1, timeout=5.0)
    assert await directory.find_account(_user(1)) is not None
    own_slapd.pause()
    try:
        tasks = [asyncio.create_task(directory.find_account(_user(i))) for i in range(5)]
        await asyncio.sleep(0.1)
        await directory.close()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    finally:
        own_slapd.resume()
    assert all(isinstance(r, TemporaryFailure) for r in results), results
    with pytest.raises(TemporaryFailure):
        await directory.find_account(_user(1))


async def test_bind_check_after_a_lookup_reuses_its_dn(filled: tuple[SlapdServer, str]) -> None:
    """auth_method = "bind": find_account then bind_check costs one search, not two; a DN that
    went stale meanwhile makes the bind fail, never succeed."""
    slapd, base = filled
    directory = await LdapDirectory.open(slapd.settings(base, auth_method="bind"))
    searches = 0

    def counted(search: Callable[..., int]) -> Callable[..., int]:
        def counting(*args: Any) -> int:
            nonlocal searches
            searches += 1
            return search(*args)

        return counting

    try:
        account = await directory.find_account(_user(3))
        assert account is not None
        assert account.password_hash is None
        # from here on every search on the reader connections is counted (the methods of the
        # pool itself cannot be wrapped: it may be compiled, idsvc/_native.py)
        for conn in directory._reader._conns:
            conn.search = counted(conn.search)
        assert await directory.bind_check(account, PASSWORD) is BindResult.OK
        assert await directory.bind_check(account, "wrong") is BindResult.INVALID_CREDENTIALS
        assert searches == 0
        await directory.delete_account(_user(3))  # the hint is now stale
        assert await directory.bind_check(account, PASSWORD) is BindResult.INVALID_CREDENTIALS
        # without a recent lookup the DN is searched for
        other = Account(_user(4), None)
        assert await directory.bind_check(other, PASSWORD) is BindResult.OK
        assert searches == 1
    finally:
        await directory.close()


def test_recent_dns_is_bounded_and_expires() -> None:
    recent = RecentDns(ttl=0.05, size=3)
    for i in range(5):
        recent.put(_user(i), f"cn={i}")
    assert [recent.get(_user(i)) for i in range(5)] == [None, None, "cn=2", "cn=3", "cn=4"]
    time.sleep(0.06)
    assert recent.get(_user(4)) is None


async def test_find_login_reads_only_what_a_decision_needs(filled: tuple[SlapdServer, str]) -> None:
    """The auth core's read (find_login) asks for five attributes and carries what a decision
    uses exactly as find_account does; what it does not read is left empty, never invented."""
    slapd, base = filled
    directory = await LdapDirectory.open(slapd.settings(base))
    who = Address.parse("lean@example.org")
    services = frozenset({Service.IMAP, Service.SMTP})
    try:
        await directory.add_account(
            Account(who, ssha(PASSWORD), display_name="Lean", quota=10**9, services=services)
        )
        full = await directory.find_account(who)
        lean = await directory.find_login(who)
        assert full is not None
        assert lean is not None
        decided_on = ("address", "password_hash", "enabled", "services", "revision", "subject")
        for name in decided_on:
            assert getattr(lean, name) == getattr(full, name), name
        assert lean.services == services
        assert (full.display_name, full.quota) == ("Lean", 10**9)
        assert (lean.display_name, lean.quota) == ("", 0)
        assert lean.created == lean.updated == NOT_READ != full.created
        assert await directory.find_login(Address.parse("nobody@example.org")) is None
    finally:
        await directory.close()
    profile = AttributeProfile()
    login = profile.login_attrs(with_hash=True)
    assert len(login) == 5
    assert set(login) < set(profile.account_attrs(with_hash=True))
    assert profile.password not in profile.login_attrs(with_hash=False)
