"""The Authenticator against both real backends (embedded SQLite and a real slapd).

Every test that takes ``directory`` runs once per backend. The directory is wrapped in a
``Counting`` pass-through (the real backend answers; the wrapper only counts calls) to prove that
bad input never reaches it and that cache hits skip it. Failure delays go through an injected
``sleep`` that records the delay, except where overlap of real delays is what is being tested.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from idsvc.audit import AuditEvent
from idsvc.auth.engine import Authenticator
from idsvc.auth.request import AuthRequest, AuthResult, Outcome
from idsvc.config import AuthSettings, EmbeddedSettings, PasswordSettings
from idsvc.directory.base import AccountChanges, DomainChanges
from idsvc.model import Account, Address, Domain, Secret, Service
from idsvc.passwords import PasswordHasher
from tests.fixtures.slapd import SlapdServer, find_binary

PW = "correct horse"
# Stored hashes are {SSHA} (verified inline) unless a test says otherwise. New hashes and the
# dummy verify use Argon2id: LIGHT keeps the test run fast, ARGON is heavy enough to dominate a
# directory lookup (timing, rehash).
LIGHT = PasswordSettings(argon2_memory_kib=1024, argon2_time_cost=1)
ARGON = PasswordSettings(argon2_memory_kib=8192, argon2_time_cost=2)


class Sink:
    """Audit sink that keeps events (the real LogAuditSink writes them to a logger)."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def emit(self, event: AuditEvent) -> None:
        self.events.append(event)


class Sleeps:
    """Injected sleep: records each delay instead of waiting it. A failure pads to a deadline
    counted from the request's start, so a recorded pad is the nominal delay minus the work
    done (µs to ms here): compare with :func:`pads`."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Counting:
    """Forwards everything to the real directory and counts the read calls the engine makes."""

    COUNTED = ("find_account", "find_domain", "bind_check")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: dict[str, int] = dict.fromkeys(self.COUNTED, 0)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self.COUNTED:
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await attr(*args, **kwargs)

        return counted

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def req(login: str, password: str = PW, service: str = "imap", **kw: Any) -> AuthRequest:
    """A request over a secured channel unless ``secured=False`` is given (cleartext from a
    remote peer is refused by default; only ``test_cleartext_policy`` is about that)."""
    kw.setdefault("secured", True)
    return AuthRequest(login=login, password=Secret(password), service=service, **kw)


async def populate(directory: Any, hasher: PasswordHasher) -> None:
    """example.org (alias domain alias.org) with bob, admin, off (disabled), imaponly;
    closed.org (disabled) with carol."""
    hashed = hasher.hash(PW, "SSHA")
    await directory.add_domain(Domain("example.org", alias_domains=("alias.org",)))
    await directory.add_domain(Domain("closed.org", enabled=False))
    for local, extra in [
        ("bob", {}),
        ("admin", {}),
        ("kelvin", {}),
        ("off", {"enabled": False}),
        ("imaponly", {"services": frozenset({Service.IMAP})}),
    ]:
        await directory.add_account(
            Account(Address(local, "example.org"), password_hash=hashed, **extra)
        )
    await directory.add_account(Account(Address("carol", "closed.org"), password_hash=hashed))


def pads(*nominal: float) -> Any:
    """What ``Sleeps.delays`` must be for these nominal delays: each no more than nominal, and
    short of it by no more than the work of one request (generous for a loaded machine)."""
    return [pytest.approx(value - 0.25, abs=0.25) for value in nominal]


def make(
    directory: Any,
    hasher: PasswordHasher,
    *,
    sleep: Any = None,
    rehash: bool = False,
    **settings: Any,
) -> tuple[Authenticator, Sink]:
    sink = Sink()
    auth = Authenticator(
        directory,
        hasher,
        AuthSettings(**settings),
        audit=sink,
        rehash=rehash,
        sleep=sleep or Sleeps(),
    )
    return auth, sink


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(LIGHT)


@pytest.fixture
async def counted(directory: Any, hasher: PasswordHasher) -> Counting:
    await populate(directory, hasher)
    return Counting(directory)


@pytest.fixture
async def auth(counted: Counting, hasher: PasswordHasher) -> AsyncIterator[Authenticator]:
    authenticator, _ = make(counted, hasher, cache=False)
    yield authenticator
    await authenticator.close()


# -- outcomes ----------------------------------------------------------------------------------


async def test_ok_returns_canonical_user(auth: Authenticator) -> None:
    result = await auth.authenticate(req("Bob@Example.ORG"))
    assert result.outcome is Outcome.OK
    assert result.ok
    assert result.user == "bob@example.org"
    assert not result.cached
    assert result.elapsed > 0


async def test_mismatch_and_unknown_user(auth: Authenticator) -> None:
    wrong = await auth.authenticate(req("bob@example.org", "wrong"))
    assert wrong.outcome is Outcome.MISMATCH
    assert wrong.user == "bob@example.org"
    unknown = await auth.authenticate(req("nobody@example.org"))
    assert unknown.outcome is Outcome.UNKNOWN_USER
    assert unknown.user is None
    no_domain = await auth.authenticate(req("bob@nowhere.example"))
    assert no_domain.outcome is Outcome.UNKNOWN_USER


@pytest.mark.parametrize(
    ("login", "service", "detail"),
    [
        ("off@example.org", "imap", "account disabled"),
        ("carol@closed.org", "imap", "domain disabled"),
        ("imaponly@example.org", "smtp", "service not enabled"),
        ("bob@example.org", "ftp", "service not enabled"),  # unknown service: refused
    ],
)
async def test_disabled(auth: Authenticator, login: str, service: str, detail: str) -> None:
    result = await auth.authenticate(req(login, service=service))
    assert result.outcome is Outcome.DISABLED
    assert result.detail == detail
    # without the right password the account's state is not revealed
    wrong = await auth.authenticate(req(login, "wrong", service=service))
    assert wrong.outcome is Outcome.MISMATCH


async def test_imaponly_may_use_imap(auth: Authenticator) -> None:
    assert (await auth.authenticate(req("imaponly@example.org", service="IMAP"))).ok


@pytest.mark.parametrize(
    ("login", "password"),
    [
        ("", PW),
        ("bob@example.org", ""),
        ("bob\x00@example.org", PW),
        ("bob@example.org", "correct\x00horse"),
        ("b" * 257, PW),
        ("bob@example.org", "p" * 1025),
        ("bob@example.org\n", PW),
        ("bob @example.org", PW),
        ("bob\u200b@example.org", PW),
        ("bob@example.org", "\udc80bad surrogate"),
    ],
)
async def test_rejected_before_any_directory_call(
    counted: Counting, hasher: PasswordHasher, login: str, password: str
) -> None:
    sleeps = Sleeps()
    auth, sink = make(counted, hasher, sleep=sleeps, failure_delay=2.0)
    result = await auth.authenticate(req(login, password))
    assert result.outcome is Outcome.REJECTED
    assert counted.total == 0
    assert sleeps.delays == pads(2.0)  # a rejection is delayed like any failure
    assert sink.events[0].outcome == "rejected"
    await auth.close()


@pytest.mark.parametrize(
    "login",
    [
        "\u212aelvin@example.org",  # KELVIN SIGN lower-cases to "k"
        "\uff42ob@example.org",  # fullwidth b
        "bob@\uff45xample.org",  # fullwidth e in the domain
        "bo\u0307b@example.org",  # combining dot
        "b\u0131b@example.org",  # dotless i
        "bob@example.org@example.org",
        "bob",  # no domain, no realm, no default domain
    ],
)
async def test_lookalikes_and_malformed_rejected(
    counted: Counting, hasher: PasswordHasher, login: str
) -> None:
    auth, _ = make(counted, hasher, failure_delay=0)
    result = await auth.authenticate(req(login))
    assert result.outcome is Outcome.REJECTED
    assert result.user is None
    assert counted.total == 0
    await auth.close()


async def test_realm_join_and_default_domain(counted: Counting, hasher: PasswordHasher) -> None:
    joined, _ = make(counted, hasher)
    result = await joined.authenticate(req("bob", realm="example.org"))
    assert result.ok
    assert result.user == "bob@example.org"
    # a login that has a domain keeps it; the realm is ignored
    assert (await joined.authenticate(req("bob@example.org", realm="closed.org"))).ok
    assert (await joined.authenticate(req("bob", realm=""))).outcome is Outcome.REJECTED
    not_joined, _ = make(counted, hasher, realm_join=False)
    assert (await not_joined.authenticate(req("bob", realm="example.org"))).outcome is (
        Outcome.REJECTED
    )
    defaulted, _ = make(counted, hasher, realm_join=False, default_domain="Example.org")
    result = await defaulted.authenticate(req("bob", realm="closed.org"))
    assert result.ok
    assert result.user == "bob@example.org"
    for a in (joined, not_joined, defaulted):
        await a.close()


async def test_alias_domain_login(auth: Authenticator) -> None:
    result = await auth.authenticate(req("BOB@alias.org"))
    assert result.ok
    assert result.user == "bob@example.org"
    wrong = await auth.authenticate(req("bob@alias.org", "nope"))
    assert wrong.outcome is Outcome.MISMATCH
    assert wrong.user == "bob@example.org"
    assert (await auth.authenticate(req("ghost@alias.org"))).outcome is Outcome.UNKNOWN_USER


async def test_corrupt_hash_is_tempfail(
    directory: Any, hasher: PasswordHasher, caplog: pytest.LogCaptureFixture
) -> None:
    await directory.add_domain(Domain("example.org"))
    await directory.add_account(Account(Address("bad", "example.org"), password_hash="{NOPE}x"))
    sleeps = Sleeps()
    auth, _ = make(directory, hasher, sleep=sleeps)
    with caplog.at_level(logging.ERROR, logger="idsvc.auth.engine"):
        result = await auth.authenticate(req("bad@example.org"))
    assert result.outcome is Outcome.TEMPFAIL
    assert sleeps.delays == []  # TEMPFAIL is not delayed
    assert "UNUSABLE STORED PASSWORD HASH" in caplog.text
    assert PW not in caplog.text
    await auth.close()


# -- cache ------------------------------------------------------------------------------------


async def test_cache_hit_miss_and_invalidation(directory: Any, hasher: PasswordHasher) -> None:
    await populate(directory, hasher)
    counted = Counting(directory)
    auth, sink = make(counted, hasher)
    first = await auth.authenticate(req("bob@example.org"))
    calls = counted.total
    second = await auth.authenticate(req("BOB@example.org"))
    assert first.ok
    assert not first.cached
    assert second.ok
    assert second.cached
    assert counted.total == calls  # the hit did not touch the directory
    assert sink.events[-1].detail["cached"] is True
    # another service is another key
    assert not (await auth.authenticate(req("bob@example.org", service="smtp"))).cached

    # a password change through the directory is invisible until invalidated …
    bob = Address("bob", "example.org")
    await directory.update_account(bob, AccountChanges(password_hash=hasher.hash("new pw", "SSHA")))
    assert (await auth.authenticate(req("bob@example.org"))).cached
    # … and takes effect at once after invalidate()
    auth.invalidate("Bob@Example.org")
    assert (await auth.authenticate(req("bob@example.org"))).outcome is Outcome.MISMATCH
    assert (await auth.authenticate(req("bob@example.org", "new pw"))).ok

    # negative entries are cached too, and dropped by invalidate as well
    miss = await auth.authenticate(req("bob@example.org", "guess"))
    again = await auth.authenticate(req("bob@example.org", "guess"))
    assert miss.outcome is again.outcome is Outcome.MISMATCH
    assert again.cached
    await directory.update_account(bob, AccountChanges(enabled=False))
    auth.invalidate("bob@example.org")
    assert (await auth.authenticate(req("bob@example.org", "new pw"))).outcome is (Outcome.DISABLED)
    await auth.close()


async def test_cache_invalidate_domain_and_alias_logins(
    directory: Any, hasher: PasswordHasher
) -> None:
    await populate(directory, hasher)
    auth, _ = make(directory, hasher)
    assert (await auth.authenticate(req("bob@alias.org"))).ok
    assert (await auth.authenticate(req("bob@alias.org"))).cached
    # invalidating the account drops the entry made through its alias domain
    auth.invalidate("bob@example.org")
    assert not (await auth.authenticate(req("bob@alias.org"))).cached
    await directory.update_domain("example.org", DomainChanges(enabled=False))
    auth.invalidate_domain("example.org")
    assert (await auth.authenticate(req("bob@alias.org"))).outcome is Outcome.DISABLED
    assert (await auth.authenticate(req("bob@example.org"))).outcome is Outcome.DISABLED
    await auth.close()


async def test_unknown_user_negative_cache_dropped_when_created(
    directory: Any, hasher: PasswordHasher
) -> None:
    await populate(directory, hasher)
    auth, _ = make(directory, hasher)
    assert (await auth.authenticate(req("new@example.org"))).outcome is Outcome.UNKNOWN_USER
    assert (await auth.authenticate(req("new@example.org"))).cached
    await directory.add_account(Account(Address("new", "example.org"), hasher.hash(PW, "SSHA")))
    auth.invalidate("new@example.org")
    assert (await auth.authenticate(req("new@example.org"))).ok
    await auth.close()


async def test_cached_mismatch_does_not_bypass_penalties(
    counted: Counting, hasher: PasswordHasher
) -> None:
    sleeps = Sleeps()
    auth, _ = make(counted, hasher, sleep=sleeps, failure_delay=1.0)
    results = [
        await auth.authenticate(req("bob@example.org", "guess", remote_ip="192.0.2.9"))
        for _ in range(5)
    ]
    assert [r.cached for r in results] == [False, True, True, True, True]
    assert sleeps.delays == pads(1.0, 3.0, 5.0, 9.0, 16.0)  # failure delay + 0, 2, 4, 8, 15
    # a success is never delayed and clears the account's counter (not the network's)
    ok = await auth.authenticate(req("bob@example.org", remote_ip="198.51.100.1"))
    assert ok.ok
    assert len(sleeps.delays) == 5
    await auth.authenticate(req("bob@example.org", "guess", remote_ip="198.51.100.1"))
    assert sleeps.delays[-1:] == pads(1.0)
    await auth.close()


# -- policy -----------------------------------------------------------------------------------


async def test_cleartext_policy(counted: Counting, hasher: PasswordHasher) -> None:
    auth, _ = make(counted, hasher)  # the default: cleartext from a remote peer is refused
    remote = await auth.authenticate(req("bob@example.org", remote_ip="192.0.2.1", secured=False))
    assert remote.outcome is Outcome.REJECTED
    assert counted.total == 0
    unknown_peer = await auth.authenticate(req("bob@example.org", secured=False))
    assert unknown_peer.outcome is Outcome.REJECTED  # fail closed
    for local in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert (await auth.authenticate(req("bob@example.org", remote_ip=local, secured=False))).ok
    assert (await auth.authenticate(req("bob@example.org", remote_ip="192.0.2.1"))).ok  # secured
    await auth.close()
    opened, _ = make(counted, hasher, allow_cleartext_remote=True)  # the explicit opt-out
    assert (
        await opened.authenticate(req("bob@example.org", remote_ip="192.0.2.1", secured=False))
    ).ok
    await opened.close()


async def test_master_user_authzid(counted: Counting, hasher: PasswordHasher) -> None:
    auth, sink = make(counted, hasher, master_users=("Admin@example.org",))
    as_bob = await auth.authenticate(req("admin@example.org", authzid="BOB@example.org"))
    assert as_bob.ok
    assert as_bob.user == "bob@example.org"
    assert sink.events[-1].actor == "admin@example.org"
    assert sink.events[-1].target == "bob@example.org"
    cases = [
        ("bob@example.org", "admin@example.org"),  # not a master user
        ("admin@example.org", "ghost@example.org"),  # target does not exist
        ("admin@example.org", "off@example.org"),  # target disabled
        ("admin@example.org", "carol@closed.org"),  # target's domain disabled
    ]
    for login, authzid in cases:
        result = await auth.authenticate(req(login, authzid=authzid))
        assert result.outcome is Outcome.REJECTED, (login, authzid)
    itself = await auth.authenticate(req("bob@example.org", authzid="bob@example.org"))
    assert itself.ok
    assert itself.user == "bob@example.org"
    wrong = await auth.authenticate(req("admin@example.org", "x", authzid="bob@example.org"))
    assert wrong.outcome is Outcome.MISMATCH
    await auth.close()


async def test_audit_events_never_carry_the_password(
    counted: Counting, hasher: PasswordHasher
) -> None:
    auth, sink = make(counted, hasher)
    await auth.authenticate(req("bob@example.org", remote_ip="192.0.2.5", protocol="saslauthd"))
    await auth.authenticate(req("bob@example.org", "wrong-secret-value", mechanism="LOGIN"))
    await auth.authenticate(req("nobody\x07@example.org", "another-secret"))
    assert [e.outcome for e in sink.events] == ["ok", "mismatch", "rejected"]
    ok, wrong, bad = sink.events
    assert (ok.action, ok.actor, ok.target, ok.remote, ok.service) == (
        "auth",
        "bob@example.org",
        "bob@example.org",
        "192.0.2.5",
        "imap",
    )
    assert ok.detail["protocol"] == "saslauthd"
    assert ok.detail["mechanism"] == "PLAIN"
    assert isinstance(ok.detail["elapsed_ms"], float)
    assert wrong.actor == ""
    assert wrong.target == "bob@example.org"
    assert bad.target == "nobody?@example.org"  # sanitized, not echoed raw
    text = "\n".join(e.to_json() for e in sink.events)
    for secret in (PW, "wrong-secret-value", "another-secret"):
        assert secret not in text
    await auth.close()


# -- concurrency and timing -------------------------------------------------------------------


async def test_failure_delays_overlap(counted: Counting, hasher: PasswordHasher) -> None:
    auth, _ = make(counted, hasher, sleep=asyncio.sleep, failure_delay=0.5, penalty=False)
    requests = [
        req("bob@example.org" if i % 2 else "nobody@example.org", PW if i % 4 == 1 else "bad")
        for i in range(100)
    ]
    start = time.perf_counter()
    results = await asyncio.gather(*(auth.authenticate(r) for r in requests))
    wall = time.perf_counter() - start
    assert sum(r.ok for r in results) == 25
    assert sum(r.outcome is Outcome.MISMATCH for r in results) == 25
    assert sum(r.outcome is Outcome.UNKNOWN_USER for r in results) == 50
    # 75 failures each waited 0.5 s; serialised that would be 37 s
    assert wall < 5.0, wall
    await auth.close()


async def test_max_pending_gives_immediate_tempfail(
    counted: Counting, hasher: PasswordHasher
) -> None:
    auth, _ = make(counted, hasher, max_pending=1, failure_delay=0)
    first, second = await asyncio.gather(
        auth.authenticate(req("bob@example.org")), auth.authenticate(req("bob@example.org"))
    )
    assert first.ok
    assert second.outcome is Outcome.TEMPFAIL
    assert second.detail.startswith("too many")
    assert auth.pending == 0
    assert (await auth.authenticate(req("bob@example.org"))).ok
    await auth.close()
    closed = await auth.authenticate(req("bob@example.org"))
    assert closed.outcome is Outcome.TEMPFAIL


async def test_unknown_user_and_wrong_password_take_alike(directory: Any) -> None:
    """No failure delay, so what is compared is the work: a real Argon2id verify of the stored
    hash versus the dummy verify (the stored hash is in the configured scheme, as in production
    after rehash-on-login)."""
    hasher = PasswordHasher(ARGON)
    await directory.add_domain(Domain("example.org"))
    await directory.add_account(Account(Address("bob", "example.org"), hasher.hash(PW)))
    auth, _ = make(directory, hasher, cache=False, penalty=False, failure_delay=0)
    await auth.authenticate(req("bob@example.org", "warm-up"))
    await auth.authenticate(req("warm-up@example.org", "warm-up"))
    unknown: list[float] = []
    wrong: list[float] = []
    for i in range(41):  # interleaved, so machine load hits both series alike
        for login, sink in (("bob@example.org", wrong), (f"nobody{i}@example.org", unknown)):
            start = time.perf_counter()
            result = await auth.authenticate(req(login, "not the password"))
            sink.append(time.perf_counter() - start)
            assert result.outcome.is_failure
    u, w = statistics.median(unknown), statistics.median(wrong)
    assert abs(u - w) / max(u, w) < 0.2, (u, w)
    await auth.close()


# -- rehash -----------------------------------------------------------------------------------


async def test_rehash_on_login(directory: Any) -> None:
    hasher = PasswordHasher(ARGON)
    await directory.add_domain(Domain("example.org"))
    bob = Address("bob", "example.org")
    await directory.add_account(Account(bob, PasswordHasher(LIGHT).hash(PW, "SSHA")))
    auth, _ = make(directory, hasher, rehash=True)
    assert (await auth.authenticate(req("bob@example.org"))).ok
    await auth.close()  # waits for the background write
    stored = await directory.find_account(bob)
    assert stored.password_hash.startswith("{ARGON2ID}")
    assert not hasher.needs_rehash(stored.password_hash)
    again, _ = make(directory, hasher, rehash=True, cache=False)
    assert (await again.authenticate(req("bob@example.org"))).ok
    assert (await again.authenticate(req("bob@example.org", "wrong"))).outcome is (Outcome.MISMATCH)
    await again.close()


class AdminEditsFirst:
    """Forwards to the real directory, but lets an administrator's change land just before the
    engine's rehash write: the write's ``if_revision`` is then stale and the real backend
    refuses it (a deterministic version of a race that happens in production)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def update_account(
        self, address: Address, changes: AccountChanges, *, if_revision: int | None = None
    ) -> Any:
        if changes.password_hash is not None:
            await self._inner.update_account(address, AccountChanges(display_name="Bob"))
        return await self._inner.update_account(address, changes, if_revision=if_revision)


async def test_rehash_failure_never_affects_the_result(
    directory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    hasher = PasswordHasher(ARGON)
    await directory.add_domain(Domain("example.org"))
    bob = Address("bob", "example.org")
    old = PasswordHasher(LIGHT).hash(PW, "SSHA")
    await directory.add_account(Account(bob, old))
    auth, _ = make(AdminEditsFirst(directory), hasher, rehash=True)
    with caplog.at_level(logging.INFO, logger="idsvc.auth"):
        result = await auth.authenticate(req("bob@example.org"))
        await auth.close()  # waits for the background write
    assert result.ok
    stored = await directory.find_account(bob)
    assert stored.password_hash == old  # the administrator's change won
    assert stored.display_name == "Bob"
    assert "rehash of bob@example.org skipped" in caplog.text


async def test_no_rehash_without_flag(directory: Any) -> None:
    await directory.add_domain(Domain("example.org"))
    bob = Address("bob", "example.org")
    old = PasswordHasher(LIGHT).hash(PW, "SSHA")
    await directory.add_account(Account(bob, old))
    auth, _ = make(directory, PasswordHasher(ARGON))
    assert (await auth.authenticate(req("bob@example.org"))).ok
    await auth.close()
    assert (await directory.find_account(bob)).password_hash == old


# -- directory failures -----------------------------------------------------------------------


def _slapd_or_skip() -> None:
    if find_binary("slapd") is None:
        import os

        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("slapd is not installed (CI=true)")
        pytest.skip("slapd is not installed")


async def test_ldap_down_is_tempfail_then_recovers(hasher: PasswordHasher) -> None:
    from idsvc.directory.ldap import LdapDirectory

    _slapd_or_skip()
    server = SlapdServer(tls=False)
    try:
        server.start()
        base = server.new_subtree("authfault")
        directory = await LdapDirectory.open(server.settings(base, timeout=2.0))
        try:
            await populate(directory, hasher)
            sleeps = Sleeps()
            auth, _ = make(directory, hasher, sleep=sleeps, cache=False)
            assert (await auth.authenticate(req("bob@example.org"))).ok
            server.kill()
            down = await auth.authenticate(req("bob@example.org"))
            unknown = await auth.authenticate(req("nobody@example.org"))
            assert down.outcome is Outcome.TEMPFAIL
            assert unknown.outcome is Outcome.TEMPFAIL
            assert sleeps.delays == []
            server.start()
            result: AuthResult | None = None
            for _ in range(50):  # the backend skips a failed server for retry_after seconds
                result = await auth.authenticate(req("bob@example.org"))
                if result.ok:
                    break
                await asyncio.sleep(0.2)
            assert result is not None
            assert result.ok
            await auth.close()
        finally:
            await directory.close()
    finally:
        server.cleanup()


# Another process holds SQLite's WAL locks (the write, checkpoint, recover and every read-mark
# byte of the -shm file: offsets 120..127 in SQLite's unix VFS). SQLite retries for about 10 s,
# then reports SQLITE_PROTOCOL, which the embedded store maps to TemporaryFailure.
_LOCKER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 8, 120)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
async def test_locked_sqlite_is_tempfail(tmp_path: Path, hasher: PasswordHasher) -> None:
    from idsvc.directory.sqlite import SqliteDirectory

    path = tmp_path / "locked.db"
    directory = await SqliteDirectory.open(EmbeddedSettings(path=path, busy_timeout=0.2))
    try:
        await populate(directory, hasher)
        sleeps = Sleeps()
        auth, _ = make(directory, hasher, sleep=sleeps, cache=False)
        assert (await auth.authenticate(req("bob@example.org"))).ok
        locker = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, f"{path}-shm"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert locker.stdout is not None
            assert locker.stdout.readline().strip() == "locked"
            result = await auth.authenticate(req("bob@example.org"))
        finally:
            locker.communicate(timeout=10)  # closing stdin releases the lock
        assert result.outcome is Outcome.TEMPFAIL
        assert result.detail == "directory: TemporaryFailure"
        assert sleeps.delays == []
        assert (await auth.authenticate(req("bob@example.org"))).ok
        await auth.close()
    finally:
        await directory.close()


async def test_ldap_bind_mode_uses_bind_check(slapd: SlapdServer, hasher: PasswordHasher) -> None:
    """auth_method=bind: the directory hides the hash (None) and slapd checks the password."""
    from idsvc.directory.ldap import LdapDirectory

    base = slapd.new_subtree(f"bindmode-{time.monotonic_ns()}")
    directory = await LdapDirectory.open(slapd.settings(base, auth_method="bind"))
    try:
        await populate(directory, hasher)
        bob = await directory.find_account(Address("bob", "example.org"))
        assert bob is not None
        assert bob.password_hash is None
        counted = Counting(directory)
        auth, _ = make(counted, hasher, cache=False)
        assert (await auth.authenticate(req("bob@example.org"))).ok
        assert counted.calls["bind_check"] == 1
        assert (await auth.authenticate(req("bob@example.org", "wrong"))).outcome is (
            Outcome.MISMATCH
        )
        assert (await auth.authenticate(req("off@example.org"))).outcome is Outcome.DISABLED
        assert (await auth.authenticate(req("nobody@example.org"))).outcome is (
            Outcome.UNKNOWN_USER
        )
        before = counted.calls["bind_check"]
        assert (await auth.authenticate(req("bob@example.org", ""))).outcome is Outcome.REJECTED
        assert counted.calls["bind_check"] == before  # an empty password never reaches a bind
        await auth.close()
    finally:
        await directory.close()


async def test_ambiguous_login_is_tempfail(slapd: SlapdServer, hasher: PasswordHasher) -> None:
    """Two LDAP entries claiming one address: refused as TEMPFAIL, never guessed."""
    from idsvc.directory.ldap import LdapDirectory

    base = slapd.new_subtree(f"ambiguous-{time.monotonic_ns()}")
    directory = await LdapDirectory.open(slapd.settings(base))
    try:
        await populate(directory, hasher)
        slapd.add(
            f"cn=impostor,idsvcDomainName=example.org,ou=domains,{base}",
            {
                "objectClass": ["idsvcAccount"],
                "cn": ["impostor"],
                "idsvcAddress": ["bob@example.org"],
                "userPassword": [hasher.hash(PW, "SSHA")],
            },
        )
        sleeps = Sleeps()
        auth, sink = make(directory, hasher, sleep=sleeps, cache=False)
        result = await auth.authenticate(req("bob@example.org"))
        assert result.outcome is Outcome.TEMPFAIL
        assert result.detail == "directory: AmbiguousEntry"
        assert sleeps.delays == []
        assert sink.events[-1].outcome == "tempfail"
        await auth.close()
    finally:
        await directory.close()
