"""The shortcuts on the authentication hot path change nothing observable: memoised domain
canonicalisation, the exact-value fast path of ``Service.parse``, the entry → Account conversion
with its memos, and skipping audit events a sink would drop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from idsvc import model
from idsvc.audit import AuditEvent, LogAuditSink
from idsvc.auth.engine import Authenticator
from idsvc.auth.request import AuthRequest, Outcome
from idsvc.config import AuthSettings, EmbeddedSettings, PasswordSettings
from idsvc.directory.mapping import IDSVC, Entry
from idsvc.directory.sqlite import SqliteDirectory
from idsvc.errors import InvalidDomain, PasswordError, TemporaryFailure
from idsvc.model import Account, Address, Domain, Secret, Service, canonical_domain
from idsvc.passwords import PasswordHasher

# -- canonical_domain memo ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["Example.ORG", "example.org.", "bücher.example", "xn--bcher-kva.example", "A-1.b"]
)
def test_domain_memo_gives_the_computed_answer(text: str) -> None:
    model._DOMAIN_MEMO.clear()
    first = canonical_domain(text)
    assert model._DOMAIN_MEMO[text] == first
    assert canonical_domain(text) == first == model._canonical_domain(text)


def test_domain_memo_never_keeps_failures_and_stays_bounded() -> None:
    model._DOMAIN_MEMO.clear()
    for _ in range(2):
        with pytest.raises(InvalidDomain):
            canonical_domain("bad_domain.example")
    assert "bad_domain.example" not in model._DOMAIN_MEMO
    for i in range(model.DOMAIN_MEMO_SIZE + 50):
        assert canonical_domain(f"D{i}.Example") == f"d{i}.example"
    assert len(model._DOMAIN_MEMO) <= model.DOMAIN_MEMO_SIZE
    assert "D0.Example" not in model._DOMAIN_MEMO  # the oldest went first
    assert Address.parse("Bob@D0.Example") == Address("bob", "d0.example")


def test_service_parse_fast_and_slow_paths_agree() -> None:
    assert Service.parse("imap") is Service.IMAP
    assert Service.parse(" IMAP ") is Service.IMAP
    assert Service.parse("Submission") is Service.SUBMISSION
    assert Service.parse("gopher") is None
    assert Service.parse("") is None


# -- entry -> Account --------------------------------------------------------------------------


def _entry(**extra: list[bytes]) -> Entry:
    attrs: dict[str, list[bytes]] = {
        "idsvcAddress": [b"Bob@Example.org"],
        "userPassword": [b"{SSHA}c2FsdHNhbHQ="],
        "idsvcService": [b"imap", b"smtp"],
        "idsvcCreated": [b"20260101000000Z"],
        "modifyTimestamp": [b"20260102030405Z"],
    }
    attrs.update(extra)
    return Entry("cn=bob@example.org,idsvcDomainName=example.org", attrs)


def test_account_from_entry_values() -> None:
    for _ in range(2):  # the second round is answered from the memos
        account = IDSVC.account_from_entry(_entry(), with_hash=True)
        assert account.address == Address("bob", "example.org")
        assert account.password_hash == "{SSHA}c2FsdHNhbHQ="
        assert account.services == {Service.IMAP, Service.SMTP}
        assert account.created == datetime(2026, 1, 1, tzinfo=UTC)
        assert account.updated == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # the fallback
        assert (account.enabled, account.quota, account.revision) == (True, 0, 1)
    hidden = IDSVC.account_from_entry(_entry(), with_hash=False)
    assert hidden.password_hash is None


def test_account_from_entry_reuses_the_searched_address_only_when_it_is_the_stored_one() -> None:
    searched = Address("bob", "example.org")
    canonical = _entry(idsvcAddress=[b"bob@example.org"])
    reused = IDSVC.account_from_entry(
        canonical, with_hash=True, searched=(searched, "bob@example.org")
    )
    assert reused.address is searched
    assert reused == IDSVC.account_from_entry(canonical, with_hash=True)
    # a stored value that differs from the searched text (here: not canonical) is parsed
    parsed = IDSVC.account_from_entry(
        _entry(), with_hash=True, searched=(searched, "bob@example.org")
    )
    assert parsed.address == searched
    assert parsed.address is not searched
    other = IDSVC.account_from_entry(
        _entry(idsvcAddress=[b"alice@example.org"]),
        with_hash=False,
        searched=(searched, "bob@example.org"),
    )
    assert other.address == Address("alice", "example.org")
    with pytest.raises(TemporaryFailure, match="invalid idsvcAddress"):
        IDSVC.account_from_entry(
            _entry(idsvcAddress=[b"no-at-sign"]),
            with_hash=False,
            searched=(searched, "bob@example.org"),
        )


def test_an_empty_timestamp_falls_back_to_the_operational_one() -> None:
    account = IDSVC.account_from_entry(
        _entry(idsvcCreated=[b""], createTimestamp=[b"20250505050505Z"]), with_hash=False
    )
    assert account.created == datetime(2025, 5, 5, 5, 5, 5, tzinfo=UTC)


def test_unknown_services_are_ignored_and_bad_bytes_still_fail() -> None:
    account = IDSVC.account_from_entry(_entry(idsvcService=[b"IMAP", b"gopher"]), with_hash=False)
    assert account.services == {Service.IMAP}
    with pytest.raises(TemporaryFailure, match="idsvcService is not UTF-8"):
        IDSVC.account_from_entry(_entry(idsvcService=[b"imap", b"\xff"]), with_hash=False)
    with pytest.raises(TemporaryFailure, match="too many values"):
        IDSVC.account_from_entry(_entry(idsvcService=[b"imap"] * 1001), with_hash=False)


def test_first_still_checks_every_value() -> None:
    entry = _entry(userPassword=[b"{SSHA}one", b"\xfe"])
    with pytest.raises(TemporaryFailure, match="userPassword is not UTF-8"):
        entry.first("userPassword")
    assert _entry().first("USERPASSWORD") == "{SSHA}c2FsdHNhbHQ="
    assert _entry().first("displayName") is None
    with pytest.raises(TemporaryFailure, match="not a UTC time"):
        IDSVC.account_from_entry(_entry(idsvcCreated=[b"yesterday"]), with_hash=False)


# -- audit events only when the sink keeps them ------------------------------------------------


class CountingSink:
    """A sink that says whether it wants events, and counts those it gets."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.events: list[AuditEvent] = []

    def emit(self, event: AuditEvent) -> None:
        self.events.append(event)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteDirectory]:
    directory = await SqliteDirectory.open(EmbeddedSettings(path=tmp_path / "idsvc.db"))
    hasher = PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT"))
    await directory.add_domain(Domain(name="example.org"))
    await directory.add_account(
        Account(address=Address.parse("bob@example.org"), password_hash=hasher.hash("s3cret-Bob"))
    )
    try:
        yield directory
    finally:
        await directory.close()


@pytest.mark.parametrize("enabled", [True, False])
async def test_audit_events_are_built_only_for_a_sink_that_keeps_them(
    store: SqliteDirectory, enabled: bool
) -> None:
    sink = CountingSink(enabled)
    auth = Authenticator(
        store,
        PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT")),
        AuthSettings(failure_delay=0, penalty=False),
        audit=sink,
    )
    try:
        result = await auth.authenticate(
            AuthRequest("bob@example.org", Secret("s3cret-Bob"), "imap", secured=True)
        )
        assert result.outcome is Outcome.OK
        assert len(sink.events) == (1 if enabled else 0)
    finally:
        await auth.close()


class FailuresOnlySink(CountingSink):
    """Records failures only, as ``LogAuditSink(auth="failures")`` (the default) does."""

    def wants_auth(self, outcome: str) -> bool:
        return outcome != Outcome.OK.value


async def test_no_event_is_built_for_an_outcome_no_sink_records(store: SqliteDirectory) -> None:
    sink = FailuresOnlySink(True)
    auth = Authenticator(
        store,
        PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT")),
        AuthSettings(failure_delay=0, penalty=False),
        audit=sink,
    )
    try:
        ok = await auth.authenticate(
            AuthRequest("bob@example.org", Secret("s3cret-Bob"), "imap", secured=True)
        )
        assert ok.outcome is Outcome.OK
        assert sink.events == []
        bad = await auth.authenticate(
            AuthRequest("bob@example.org", Secret("wrong-Bob"), "imap", secured=True)
        )
        assert bad.outcome is Outcome.MISMATCH
        assert [e.outcome for e in sink.events] == [Outcome.MISMATCH.value]
    finally:
        await auth.close()


def test_log_audit_sink_enabled_follows_the_logger_level() -> None:
    logger = logging.getLogger("idsvc.audit.test-hotpath")
    sink = LogAuditSink(logger)
    logger.setLevel(logging.WARNING)
    assert sink.enabled is False
    logger.setLevel(logging.INFO)
    assert sink.enabled is True


# -- one parse for cheap schemes ---------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["SSHA", "SSHA512", "PLAIN", "SHA512-CRYPT", "ARGON2ID"])
def test_verify_if_cheap_agrees_with_is_cheap_and_verify(scheme: str) -> None:
    hasher = PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT", sha_crypt_rounds=1000))
    stored = "{PLAIN}s3cret" if scheme == "PLAIN" else hasher.hash("s3cret", scheme)
    for password in ("s3cret", "wrong", "", "s3\x00cret"):
        verdict = hasher.verify_if_cheap(password, stored)
        if hasher.is_cheap(stored):
            assert verdict is hasher.verify(password, stored)
        else:
            assert verdict is None
    with pytest.raises(PasswordError):
        hasher.verify_if_cheap("s3cret", "{SSHA}!!not-base64!!")
    with pytest.raises(PasswordError):  # an unusable value is never kept: it fails every time
        hasher.verify_if_cheap("s3cret", "{SSHA}!!not-base64!!")


@pytest.mark.parametrize(
    "stored",
    [
        "{SSHA}",  # filled in below per scheme
        "{SMD5}",
        "{SHA256}",
        "{SHA}",
        "{PLAIN-MD5}",
        "{LDAP-MD5}",
        "{PLAIN.b64}czNjcmV0",
        "{CRYPT}abJnggxhB/yWI",  # DES crypt of "test"
    ],
)
def test_parsed_cache_verdicts_match_a_fresh_parse(stored: str) -> None:
    import base64
    import hashlib

    salt = b"saltsalt"
    algo = {"SSHA": "sha1", "SMD5": "md5", "SHA256": "sha256", "SHA": "sha1"}
    name = stored[1:-1]
    if name in algo:
        salted = name.startswith("S") and name != "SHA256" and name != "SHA"
        digest = hashlib.new(algo[name], b"s3cret" + (salt if salted else b"")).digest()
        stored += base64.b64encode(digest + (salt if salted else b"")).decode()
    elif name == "PLAIN-MD5":
        stored += hashlib.md5(b"s3cret").hexdigest()
    elif name == "LDAP-MD5":
        stored += base64.b64encode(hashlib.md5(b"s3cret").digest()).decode()
    hasher = PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT"))
    for password in ("s3cret", "test", "wrong", "", "s3\x00cret", "s3cret" * 50):
        expected = hasher.verify(password, stored)
        for _ in range(2):  # the second call is answered from the parsed form
            assert hasher.verify_if_cheap(password, stored) is expected
    assert hasher.verify_if_cheap("s3cret", stored) is (stored.startswith("{CRYPT}") is False)


def test_parsed_cache_is_bounded_and_keyed_by_the_exact_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from idsvc import passwords

    monkeypatch.setattr(passwords, "PARSED_CACHE_SIZE", 8)
    hasher = PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT"))
    stored = [hasher.hash(f"pw-{i}", "SSHA") for i in range(20)]
    for i, value in enumerate(stored):
        assert hasher.verify_if_cheap(f"pw-{i}", value) is True
        assert hasher.verify_if_cheap(f"pw-{i + 1}", value) is False
    assert len(hasher._parsed) == 8
    # a changed password is a different stored value: the old parsed form never answers for it
    changed = hasher.hash("new-pw", "SSHA")
    assert hasher.verify_if_cheap("pw-19", changed) is False
    assert hasher.verify_if_cheap("new-pw", changed) is True
    # slow schemes are remembered as slow (no re-parse) and still answer None
    slow = hasher.hash("pw", "SHA512-CRYPT")
    assert hasher.verify_if_cheap("pw", slow) is None
    assert hasher.verify_if_cheap("pw", slow) is None


# -- no per-request timer where the directory owns the read deadlines ---------------------------


class BoundedReads:
    """The store, declaring (as ``LdapDirectory`` does) that its reads end by themselves."""

    bounds_reads = True

    def __init__(self, inner: SqliteDirectory) -> None:
        self._inner = inner

    async def find_account(self, address: Address) -> Account | None:
        return await self._inner.find_account(address)

    async def find_domain(self, name: str) -> Domain | None:
        return await self._inner.find_domain(name)


class StuckHasher(PasswordHasher):
    """Slow-scheme verifies that take far longer than the test's overall timeout."""

    def verify(self, password: str, stored: str) -> bool:
        time.sleep(0.6)
        return super().verify(password, stored)


def _count_timers(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    made: list[float | None] = []
    real = asyncio.timeout

    def counting(delay: float | None) -> asyncio.Timeout:
        made.append(delay)
        return real(delay)

    monkeypatch.setattr(asyncio, "timeout", counting)
    return made


@pytest.mark.parametrize("bounded", [True, False])
async def test_a_cheap_auth_sets_a_timer_only_when_the_directory_does_not_bound_its_reads(
    store: SqliteDirectory, monkeypatch: pytest.MonkeyPatch, bounded: bool
) -> None:
    hasher = PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT"))
    await store.add_account(
        Account(address=Address.parse("carol@example.org"), password_hash=hasher.hash("c", "SSHA"))
    )
    directory = BoundedReads(store) if bounded else store
    auth = Authenticator(
        directory, hasher, AuthSettings(failure_delay=0, penalty=False), audit=CountingSink(False)
    )
    made = _count_timers(monkeypatch)
    try:
        for password, outcome in (("c", Outcome.OK), ("x", Outcome.MISMATCH)):
            result = await auth.authenticate(
                AuthRequest("carol@example.org", Secret(password), "imap", secured=True)
            )
            assert result.outcome is outcome
        unknown = await auth.authenticate(
            AuthRequest("nobody@example.org", Secret("c"), "imap", secured=True)
        )
        assert unknown.outcome is Outcome.UNKNOWN_USER
        # the unknown user's dummy verify imitates SSHA (inline): no timer for it either
        assert len(made) == (0 if bounded else 3)
    finally:
        await auth.close()


async def test_work_no_lower_layer_bounds_still_times_out(store: SqliteDirectory) -> None:
    """The hashing pool is not the directory's: a stuck slow verify is still a TEMPFAIL."""
    auth = Authenticator(
        BoundedReads(store),
        StuckHasher(PasswordSettings(scheme="SHA512-CRYPT")),
        AuthSettings(failure_delay=0, penalty=False),
        audit=CountingSink(False),
        timeout=0.1,
    )
    try:
        started = time.monotonic()
        result = await auth.authenticate(
            AuthRequest("bob@example.org", Secret("s3cret-Bob"), "imap", secured=True)
        )
        assert result.outcome is Outcome.TEMPFAIL
        assert result.detail == "timeout"
        assert time.monotonic() - started < 0.5
    finally:
        await auth.close()


class LoginReads(BoundedReads):
    """A directory with the cheap auth read (``LoginLookup``), as ``LdapDirectory`` has."""

    def __init__(self, inner: SqliteDirectory) -> None:
        super().__init__(inner)
        self.logins: list[str] = []

    async def find_login(self, address: Address) -> Account | None:
        self.logins.append(str(address))
        return await self._inner.find_account(address)

    async def find_account(self, address: Address) -> Account | None:
        raise AssertionError("the auth core reads accounts with find_login when offered")


async def test_the_auth_core_reads_accounts_with_find_login_when_offered(
    store: SqliteDirectory,
) -> None:
    hasher = PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT"))
    await store.add_account(Account(Address.parse("dan@example.org"), hasher.hash("d", "SSHA")))
    directory = LoginReads(store)
    auth = Authenticator(
        directory, hasher, AuthSettings(failure_delay=0, penalty=False), audit=CountingSink(False)
    )
    try:
        for password, outcome in (("d", Outcome.OK), ("x", Outcome.MISMATCH)):
            result = await auth.authenticate(
                AuthRequest("dan@example.org", Secret(password), "imap", secured=True)
            )
            assert result.outcome is outcome
        assert directory.logins == ["dan@example.org"] * 2
    finally:
        await auth.close()
