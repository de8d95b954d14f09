"""Active Directory as a read-only source of truth: a real Samba AD DC (tests/fixtures/samba_ad.py)
read through the ``ad`` profile, logins checked by bind-through, through the auth core and the two
auth sockets with their real clients (``testsaslauthd``, ``doveadm auth test``).

What is proven: ``proxyAddresses`` (SMTP: primary, smtp: aliases, other types ignored), logins by
primary address, alias and UPN, ``userAccountControl`` disabled, ``accountExpires``, the bind
sub-codes (533 disabled, 701 expired account, 773 must change, 775 locked), nested-group gating
with the in-chain rule, the domain root answering without referrals (domain-scope control),
writes refused with ReadOnlyDirectory, paged listings, and the faults: a rotated service
password, a frozen DC and a referral are temporary failures, never "unknown user".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from idsvc.auth.request import AuthRequest, Outcome
from idsvc.config import LdapSettings
from idsvc.directory.base import BindResult
from idsvc.directory.ldap.corporate import CorporateDirectory
from idsvc.errors import ReadOnlyDirectory, TemporaryFailure
from idsvc.model import Account, Address, Domain, Secret
from tests.fixtures.samba_ad import BASE_DN, AdDirectory
from tests.integration import dovecot_auth_support as dva
from tests.integration import saslauthd_support as sas

pytestmark = pytest.mark.slow


def settings(ad: AdDirectory, **overrides: Any) -> LdapSettings:
    values: dict[str, Any] = {
        "uris": (ad.server.uri,),
        "base_dn": BASE_DN,
        "bind_dn": ad.server.service_dn,
        "bind_password": ad.server.service_pw,
        "auth_method": "bind",
        "profile": "ad",
        "mail_domains": ("corp.test",),
        "timeout": 3.0,
        "connect_timeout": 2.0,
    }
    values.update(overrides)
    return LdapSettings(**values)


@pytest.fixture
async def corp(samba_ad: AdDirectory) -> AsyncIterator[CorporateDirectory]:
    directory = await CorporateDirectory.open(settings(samba_ad))
    try:
        yield directory
    finally:
        await directory.close()


def request(login: str, password: str, service: str = "imap") -> AuthRequest:
    return AuthRequest(
        login=login,
        password=Secret(password),
        service=service,
        remote_ip="127.0.0.1",
        mechanism="PLAIN",
        protocol="test",
        secured=True,
    )


# -- lookups through the profile --------------------------------------------------------------


async def test_primary_address_comes_from_smtp_proxy_address(
    corp: CorporateDirectory, samba_ad: AdDirectory
) -> None:
    for login in ("alice@corp.test", "a.liddell@corp.test", "alice@ad.corp.test"):
        account = await corp.find_account(Address.parse(login))
        assert account is not None, login
        assert str(account.address) == "alice@corp.test"
        assert account.password_hash is None  # AD hashes are never readable: bind-through
        assert account.enabled
        assert account.display_name == "Alice"  # displayName
    assert await corp.find_account(Address.parse("nobody@corp.test")) is None


async def test_secondary_addresses_are_aliases_and_other_types_are_ignored(
    corp: CorporateDirectory,
) -> None:
    alias = await corp.find_alias("a.liddell@corp.test")
    assert alias is not None
    assert alias.destinations == ("alice@corp.test",)
    assert await corp.find_alias("alice@corp.test") is None  # the primary is a mailbox
    assert await corp.find_alias("@corp.test") is None
    # the SIP: and X500: values are not mail addresses
    assert await corp.find_alias("sip-only@corp.test") is None


async def test_domains_are_the_configured_ones(corp: CorporateDirectory) -> None:
    assert await corp.find_domain("corp.test") == Domain(
        name="corp.test",
        created=(await corp.find_domain("corp.test")).created,  # type: ignore[union-attr]
        updated=(await corp.find_domain("corp.test")).updated,  # type: ignore[union-attr]
    )
    assert await corp.find_domain("example.org") is None
    page = await corp.list_domains()
    assert [d.name for d in page.items] == ["corp.test"]


async def test_account_states_disabled_and_expired(corp: CorporateDirectory) -> None:
    bob = await corp.find_account(Address.parse("bob@corp.test"))
    carol = await corp.find_account(Address.parse("carol@corp.test"))
    assert bob is not None
    assert not bob.enabled  # userAccountControl ACCOUNTDISABLE
    assert carol is not None
    assert not carol.enabled  # accountExpires in the past


async def test_nested_group_gates_who_has_mail(samba_ad: AdDirectory) -> None:
    gated = await CorporateDirectory.open(settings(samba_ad, required_group=samba_ad.mail_group))
    try:
        # alice is in "staff", which is a member of "mailusers": the in-chain rule finds her
        assert await gated.find_account(Address.parse("alice@corp.test")) is not None
        assert await gated.find_account(Address.parse("erin@corp.test")) is None
    finally:
        await gated.close()


async def test_listing_pages_through_the_accounts(corp: CorporateDirectory) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await corp.list_accounts("corp.test", cursor=cursor, limit=2)
        seen += [str(a.address) for a in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(seen)
    assert {"alice@corp.test", "bob@corp.test", "erin@corp.test"} <= set(seen)
    assert page.total == len(seen)


async def test_every_write_is_refused_with_the_mode(corp: CorporateDirectory) -> None:
    account = Account(address=Address.parse("new@corp.test"), password_hash=None)
    with pytest.raises(ReadOnlyDirectory, match=r"read-only.*'ad'"):
        await corp.add_account(account)
    with pytest.raises(ReadOnlyDirectory):
        await corp.add_domain(Domain(name="other.test"))
    with pytest.raises(ReadOnlyDirectory):
        await corp.delete_account(account.address)


# -- bind-through and its sub-codes ----------------------------------------------------------


async def test_bind_through_outcomes(corp: CorporateDirectory, samba_ad: AdDirectory) -> None:
    auth = sas.authstack.authenticator(corp, sas.hasher())
    try:
        cases = [
            ("alice@corp.test", samba_ad.alice.password, Outcome.OK),
            ("alice@ad.corp.test", samba_ad.alice.password, Outcome.OK),  # by UPN
            ("a.liddell@corp.test", samba_ad.alice.password, Outcome.OK),  # by alias
            ("alice@corp.test", "wrong-password", Outcome.MISMATCH),
            ("bob@corp.test", samba_ad.bob.password, Outcome.DISABLED),  # data 533
            ("carol@corp.test", samba_ad.carol.password, Outcome.DISABLED),  # data 701
            ("dave@corp.test", samba_ad.dave.password, Outcome.EXPIRED),  # data 773
            ("nobody@corp.test", "whatever-pw", Outcome.UNKNOWN_USER),
        ]
        for login, password, expected in cases:
            result = await auth.authenticate(request(login, password))
            assert result.outcome is expected, (login, result)
            if expected is Outcome.OK:
                assert result.user == "alice@corp.test"
    finally:
        await auth.close()


async def test_locked_account_is_disabled_only_with_the_right_password(
    corp: CorporateDirectory, samba_ad: AdDirectory
) -> None:
    mallory = await corp.find_account(Address.parse("mallory@corp.test"))
    assert mallory is not None
    for _ in range(3):  # the lockout threshold of the test domain
        assert await corp.bind_check(mallory, "not-her-password") is not BindResult.OK
    assert await corp.bind_check(mallory, samba_ad.mallory.password) is BindResult.DISABLED


# -- the real auth sockets and their real clients ------------------------------------------------


async def test_saslauthd_and_dovecot_sockets_answer_from_ad(
    samba_ad: AdDirectory, tmp_path: Path
) -> None:
    sas.require_testsaslauthd()
    dva.require_doveadm()
    directory = await CorporateDirectory.open(settings(samba_ad))
    with dva.short_dir() as run:
        try:
            sasl_auth = sas.authstack.authenticator(directory, sas.hasher())
            async with sas.running(run / "mux", sasl_auth):
                ok = await sas.run_testsaslauthd(
                    run / "mux", "alice@corp.test", samba_ad.alice.password
                )
                bad = await sas.run_testsaslauthd(run / "mux", "alice@corp.test", "nope-nope")
                disabled = await sas.run_testsaslauthd(
                    run / "mux", "bob@corp.test", samba_ad.bob.password
                )
            assert ok.startswith("0: OK"), ok
            assert bad.startswith("0: NO"), bad
            assert disabled.startswith("0: NO"), disabled
            auth = dva.authstack.authenticator(directory, dva.hasher())
            async with dva.running(auth, run / "auth-client"):
                code, out = await dva.doveadm_auth_test(
                    run / "auth-client", "alice@ad.corp.test", samba_ad.alice.password
                )
                assert code == 0, out
                assert "user=alice@corp.test" in out  # the canonical primary address
                code, out = await dva.doveadm_auth_test(
                    run / "auth-client", "carol@corp.test", samba_ad.carol.password
                )
                assert code != 0, out
        finally:
            await directory.close()


# -- faults: temporary, never "unknown user" ------------------------------------------------------


async def test_rotated_service_password_is_a_temporary_failure(samba_ad: AdDirectory) -> None:
    # a service account of its own: the failed binds count towards AD's lockout threshold
    directory = await CorporateDirectory.open(
        settings(samba_ad, bind_dn=samba_ad.server.rotated_dn, bind_password="rotated-away")
    )
    auth = sas.authstack.authenticator(directory, sas.hasher())
    try:
        with pytest.raises(TemporaryFailure):
            await directory.find_account(Address.parse("alice@corp.test"))
        for login in ("alice@corp.test", "nobody@corp.test"):
            result = await auth.authenticate(request(login, samba_ad.alice.password))
            assert result.outcome is Outcome.TEMPFAIL, (login, result)
    finally:
        await auth.close()
        await directory.close()


async def test_referral_without_domain_scope_is_a_temporary_failure(
    samba_ad: AdDirectory,
) -> None:
    # without the domain-scope control AD answers a root search with continuation references
    directory = await CorporateDirectory.open(settings(samba_ad, mapping={"domain_scope": False}))
    try:
        with pytest.raises(TemporaryFailure, match="referral"):
            await directory.find_account(Address.parse("alice@corp.test"))
    finally:
        await directory.close()


async def test_frozen_dc_answers_temporary_within_the_timeout(samba_ad: AdDirectory) -> None:
    directory = await CorporateDirectory.open(settings(samba_ad, timeout=1.0))
    auth = sas.authstack.authenticator(directory, sas.hasher())
    try:
        assert await directory.find_account(Address.parse("erin@corp.test")) is not None
        samba_ad.server.pause()
        try:
            started = time.monotonic()
            result = await asyncio.wait_for(
                auth.authenticate(request("alice@corp.test", samba_ad.alice.password)), 30
            )
            waited = time.monotonic() - started
        finally:
            samba_ad.server.resume()
        assert result.outcome is Outcome.TEMPFAIL
        assert waited < 10, waited
        # and it recovers without a restart (the server is skipped for retry_after first)
        outcome = Outcome.TEMPFAIL
        for _ in range(50):
            ok = await auth.authenticate(request("alice@corp.test", samba_ad.alice.password))
            outcome = ok.outcome
            if outcome is not Outcome.TEMPFAIL:
                break
            await asyncio.sleep(0.2)
        assert outcome is Outcome.OK
    finally:
        await auth.close()
        await directory.close()


# -- provisioning surfaces: reads work, writes say "read-only" -------------------------------------


async def test_rest_api_reads_and_refuses_writes_with_409(
    corp: CorporateDirectory, tmp_path: Path
) -> None:
    import httpx

    from idsvc.api import create_app
    from idsvc.state import StateStore, create_token
    from tests.api.conftest import api_settings, build_runtime_over

    settings = api_settings(tmp_path)
    runtime = await build_runtime_over(settings, corp)
    state = await StateStore.open_for(settings)
    app = create_app(settings, runtime, state)
    _info, token = await create_token(state, name="admin", scope="admin", created_by="test")
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://idsvc.test") as client:
            got = await client.get("/api/v1/users/alice@corp.test", headers=headers)
            assert got.status_code == 200, got.text
            assert got.json()["address"] == "alice@corp.test"
            created = await client.post(
                "/api/v1/domains/corp.test/users",
                headers=headers,
                json={"address": "new@corp.test", "password": "a-long-enough-password-1"},
            )
            assert created.status_code == 409, created.text
            problem = created.json()
            assert problem["type"].endswith("/read-only-directory")
            assert "read-only" in problem["detail"]
            assert created.headers["content-type"].startswith("application/problem+json")
    finally:
        app.state.idsvc.close()
        runtime.provisioner.close()
        await runtime.authenticator.close()
        await state.close()


# -- transport: verified TLS, failover, unreachable, ambiguity -----------------------------------


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
async def test_verified_tls_to_the_dc(samba_ad: AdDirectory, mode: str) -> None:
    uri = samba_ad.server.ldaps_uri if mode == "ldaps" else samba_ad.server.uri
    tls: dict[str, Any] = {"uris": (uri,), "starttls": mode == "starttls"}
    good = await CorporateDirectory.open(settings(samba_ad, ca_file=samba_ad.server.ca_file, **tls))
    try:
        assert await good.find_account(Address.parse("alice@corp.test")) is not None
    finally:
        await good.close()
    # a CA that did not sign the DC's certificate: never connected, a temporary failure
    other_ca = samba_ad.server.workdir / "other-ca"
    from tests.fixtures.slapd import make_ca

    wrong = await CorporateDirectory.open(settings(samba_ad, ca_file=make_ca(other_ca)[0], **tls))
    try:
        with pytest.raises(TemporaryFailure):
            await wrong.find_account(Address.parse("alice@corp.test"))
    finally:
        await wrong.close()


async def test_unreachable_first_server_fails_over_and_none_is_temporary(
    samba_ad: AdDirectory,
) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        dead = f"ldap://127.0.0.1:{probe.getsockname()[1]}"
    both = await CorporateDirectory.open(settings(samba_ad, uris=(dead, samba_ad.server.uri)))
    try:
        assert await both.find_account(Address.parse("alice@corp.test")) is not None
    finally:
        await both.close()
    none = await CorporateDirectory.open(settings(samba_ad, uris=(dead,)))
    auth = sas.authstack.authenticator(none, sas.hasher())
    try:
        result = await auth.authenticate(request("alice@corp.test", samba_ad.alice.password))
        assert result.outcome is Outcome.TEMPFAIL
    finally:
        await auth.close()
        await none.close()


async def test_two_entries_for_one_login_are_refused_not_guessed(
    samba_ad: AdDirectory, corp: CorporateDirectory
) -> None:
    # AD does not enforce unique mail values; the second claim makes the login ambiguous
    server = samba_ad.server
    server.add_user("twin1", "Tw1n-Passw0rd!", mail="twin@corp.test")
    server.add_user("twin2", "Tw1n-Passw0rd!", mail="twin@corp.test")
    auth = sas.authstack.authenticator(corp, sas.hasher())
    try:
        result = await auth.authenticate(request("twin@corp.test", "Tw1n-Passw0rd!"))
        assert result.outcome is Outcome.TEMPFAIL  # AmbiguousEntry: never one of them
    finally:
        await auth.close()


# -- the mail lookup surfaces answer from the mapping ----------------------------------------------


async def test_postfix_maps_and_dovecot_userdb_answer_from_ad(corp: CorporateDirectory) -> None:
    from idsvc.config import MailSettings, SocketmapSettings, SocketSettings
    from idsvc.lookups import MailLookups
    from idsvc.wire.socketmap.server import SocketmapServer
    from tests.integration.lookup_support import postmap, postmap_config, serving, short_dir

    mail = MailLookups(corp, MailSettings())
    assert await mail.is_hosted_domain("corp.test")
    assert not await mail.is_hosted_domain("ad.corp.test")  # a UPN suffix is not a mail domain
    assert await mail.mailbox_path("alice@corp.test") == "corp.test/alice/Maildir/"
    assert await mail.mailbox_path("alice+news@corp.test") == "corp.test/alice/Maildir/"
    assert await mail.mailbox_path("bob@corp.test") is None  # disabled in AD
    assert await mail.expand_alias("a.liddell@corp.test") == ("alice@corp.test",)
    assert await mail.sender_logins("a.liddell@corp.test") == ("alice@corp.test",)
    user = await mail.userdb("alice@corp.test")
    assert user is not None
    assert user.home == "/var/vmail/corp.test/alice"
    with short_dir() as tmp, postmap_config() as pm:
        conf = SocketmapSettings(socket=SocketSettings(path=tmp / "sm", mode=0o666))
        async with serving(SocketmapServer(conf, mail)) as srv:
            table = f"socketmap:unix:{srv.path}"
            assert await postmap(pm, "corp.test", f"{table}:domain") == (0, "corp.test", "")
            code, out, _ = await postmap(pm, "a.liddell@corp.test", f"{table}:alias")
            assert (code, out) == (0, "alice@corp.test")
            code, out, _ = await postmap(pm, "nobody@corp.test", f"{table}:mailbox")
            assert (code, out) == (1, "")


# -- the local overlay: aliases and quota overrides beside a read-only directory ------------------


async def test_local_aliases_and_quota_overrides(samba_ad: AdDirectory, tmp_path: Path) -> None:
    from idsvc.audit import LogAuditSink
    from idsvc.config import MailSettings
    from idsvc.errors import AlreadyExists, NotFound
    from idsvc.lookups import MailLookups
    from idsvc.overlay import OverlayStore
    from idsvc.provisioning import Provisioner

    overlay = await OverlayStore.open(tmp_path / "overlay.db")
    directory = await CorporateDirectory.open(settings(samba_ad))
    directory.attach_overlay(overlay)
    mail = MailLookups(directory, MailSettings())
    prov = Provisioner(directory, sas.hasher(), audit=LogAuditSink(), invalidator=mail)
    try:
        made = await prov.create_alias(
            "sales@corp.test", ["alice@corp.test", "erin@corp.test"], actor="t"
        )
        assert made.revision == 1
        await prov.create_alias("@corp.test", ["alice@corp.test"], actor="t")  # a catch-all
        with pytest.raises(AlreadyExists):  # a directory account's secondary address
            await prov.create_alias("a.liddell@corp.test", ["erin@corp.test"], actor="t")
        with pytest.raises(NotFound):  # not a mail domain
            await prov.create_alias("x@elsewhere.test", ["erin@corp.test"], actor="t")
        assert await mail.expand_alias("sales@corp.test") == ("alice@corp.test", "erin@corp.test")
        assert await mail.expand_alias("nobody@corp.test") == ("alice@corp.test",)  # catch-all
        assert await mail.expand_alias("erin@corp.test") == ()  # a mailbox is never captured
        page = await prov.list_aliases("corp.test")
        assert [a.source for a in page.items] == ["@corp.test", "sales@corp.test"]
        changed = await prov.update_alias("sales@corp.test", actor="t", enabled=False)
        assert not changed.enabled
        await prov.delete_alias("@corp.test", actor="t")
        assert await mail.expand_alias("nobody2@corp.test") == ()

        updated = await prov.update_user("alice@corp.test", actor="t", quota=5 * 2**30)
        assert updated.quota == 5 * 2**30
        again = await directory.find_account(Address.parse("alice@corp.test"))
        assert again is not None
        assert again.quota == 5 * 2**30  # the override, keyed by objectGUID
        with pytest.raises(ReadOnlyDirectory):  # anything but the quota: the directory's
            await prov.update_user("alice@corp.test", actor="t", display_name="Alice L.")
    finally:
        prov.close()
        await directory.close()
        await overlay.close()
