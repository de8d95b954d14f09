"""App passwords end to end, on both backends (embedded, slapd) and on a read-only Active
Directory: made through the REST API and the CLI's use cases, used through the two auth sockets
with their real clients (``testsaslauthd`` for SMTP, ``doveadm auth test`` for IMAP), scoped by
service and network, expiring, revoked at once on every socket even with the decision cache on,
and — with ``required_for`` — the only way in for mail protocols.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from idsvc.api import create_app
from idsvc.app_passwords import AppPasswords
from idsvc.audit import LogAuditSink
from idsvc.auth.engine import Authenticator
from idsvc.auth.request import AuthRequest, Outcome
from idsvc.config import AuthSettings
from idsvc.directory.ldap.corporate import CorporateDirectory
from idsvc.model import Secret, Service
from idsvc.overlay import OverlayStore
from idsvc.state import StateStore, create_token
from tests.api.conftest import api_settings
from tests.fixtures.samba_ad import AdDirectory
from tests.integration import dovecot_auth_support as dva
from tests.integration import saslauthd_support as sas
from tests.integration.test_corporate_ad import settings as ad_settings

USER = sas.USERS.good  # alice@example.org
PASSWORD = sas.USERS.good_pw


@dataclass
class Stack:
    auth: Authenticator
    apps: AppPasswords
    overlay: OverlayStore


@pytest.fixture
async def stack(directory: Any, tmp_path: Path) -> AsyncIterator[Stack]:
    await sas.populate(directory)
    overlay = await OverlayStore.open(tmp_path / "overlay.db")
    auth = Authenticator(
        directory, sas.hasher(), AuthSettings(failure_delay=0, penalty=False, cache=True),
        audit=LogAuditSink(), app_passwords=overlay,
    )  # fmt: skip
    apps = AppPasswords(directory, overlay, audit=LogAuditSink(), invalidator=auth)
    try:
        yield Stack(auth, apps, overlay)
    finally:
        await auth.close()
        await overlay.close()


async def smtp(run: Path, user: str, password: str) -> bool:
    answer = await sas.run_testsaslauthd(run / "mux", user, password, service="smtp")
    assert answer.startswith(("0: OK", "0: NO")), answer
    return answer.startswith("0: OK")


async def imap(run: Path, user: str, password: str, rip: str = "127.0.0.1") -> bool:
    """``doveadm auth test`` for IMAP from ``rip``, over TLS as far as idsvc is told (so a
    refusal from a remote ``rip`` is the app password's network scope, not the cleartext rule)."""
    proc = await asyncio.create_subprocess_exec(
        dva.DOVEADM, "auth", "test", "-a", str(run / "auth-client"), "-x", "service=imap",
        "-x", f"rip={rip}", "-x", "secured=1", user, password,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode == 0


async def test_scoped_expiring_and_revoked_on_both_sockets(stack: Stack) -> None:
    sas.require_testsaslauthd()
    dva.require_doveadm()
    scanner, scanner_pw = await stack.apps.create(
        USER, "scanner", actor="test", services=[Service.SMTP]
    )
    office, office_pw = await stack.apps.create(
        USER, "office", actor="test", networks=["127.0.0.0/8"]
    )
    _soon, soon_pw = await stack.apps.create(
        USER, "soon", actor="test", expires=datetime.now(UTC) + timedelta(seconds=2)
    )
    with dva.short_dir() as run:
        async with (
            sas.running(run / "mux", stack.auth),
            dva.running(stack.auth, run / "auth-client"),
        ):
            # scoped to SMTP: works on SMTP, fails on IMAP
            assert await smtp(run, USER, scanner_pw)
            assert not await imap(run, USER, scanner_pw)
            # scoped to a network: works from it, fails from elsewhere
            assert await imap(run, USER, office_pw)
            assert not await imap(run, USER, office_pw, rip="192.0.2.10")
            # the account's own password still works (nothing required)
            assert await imap(run, USER, PASSWORD)
            # expiry
            assert await imap(run, USER, soon_pw)
            await _sleep_past(datetime.now(UTC) + timedelta(seconds=2.1))
            assert not await imap(run, USER, soon_pw)
            # revoked: fails at once on every socket, the cached OK included
            assert await smtp(run, USER, scanner_pw)  # cached now
            await stack.apps.revoke(USER, scanner.id, actor="test")
            assert not await smtp(run, USER, scanner_pw)
            await stack.apps.revoke(USER, office.id, actor="test")
            assert not await imap(run, USER, office_pw)
            # a different account's login with this account's app password: no
            _other, other_pw = await stack.apps.create(USER, "x", actor="test")
            assert not await imap(run, sas.USERS.imap_only, other_pw)


async def _sleep_past(when: datetime) -> None:
    delay = (when - datetime.now(UTC)).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)


async def test_required_for_mail_protocols(directory: Any, tmp_path: Path) -> None:
    await sas.populate(directory)
    overlay = await OverlayStore.open(tmp_path / "overlay.db")
    auth = Authenticator(
        directory, sas.hasher(), AuthSettings(failure_delay=0, penalty=False),
        audit=LogAuditSink(), app_passwords=overlay,
        app_required=frozenset({Service.IMAP, Service.SMTP}),
    )  # fmt: skip
    apps = AppPasswords(directory, overlay, audit=LogAuditSink(), invalidator=auth)
    try:
        _made, secret = await apps.create(USER, "phone", actor="test")

        async def outcome(password: str, service: str) -> Outcome:
            result = await auth.authenticate(
                AuthRequest(
                    login=USER,
                    password=Secret(password),
                    service=service,
                    remote_ip="127.0.0.1",
                    secured=True,
                )
            )
            return result.outcome

        assert await outcome(PASSWORD, "imap") is Outcome.MISMATCH  # own password refused
        assert await outcome(secret, "imap") is Outcome.OK
        assert await outcome(PASSWORD, "pop3") is Outcome.OK  # not in required_for
    finally:
        await auth.close()
        await overlay.close()


async def test_rest_api_makes_lists_and_revokes(directory: Any, tmp_path: Path) -> None:
    from tests.api.conftest import build_runtime_over

    await sas.populate(directory)
    settings = api_settings(tmp_path)
    runtime = await build_runtime_over(settings, directory)
    runtime.overlay = await OverlayStore.open(tmp_path / "overlay.db")
    state = await StateStore.open_for(settings)
    app = create_app(settings, runtime, state)
    _i, admin = await create_token(state, name="admin", scope="admin", created_by="t")
    _j, other = await create_token(
        state, name="da", scope="domain_admin", domains=("other.test",), created_by="t"
    )
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
    base = f"/api/v1/users/{USER}/app-passwords"
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://idsvc.test") as c:
            h = {"Authorization": f"Bearer {admin}"}
            made = await c.post(base, headers=h, json={"name": "phone", "services": ["imap"]})
            assert made.status_code == 201, made.text
            body = made.json()
            secret = body["secret"]
            assert body["services"] == ["imap"]
            assert body["active"] is True
            listed = (await c.get(base, headers=h)).json()
            assert [i["id"] for i in listed["items"]] == [body["id"]]
            assert secret not in str(listed)
            foreign = await c.get(base, headers={"Authorization": f"Bearer {other}"})
            assert foreign.status_code == 404  # a domain admin of another domain sees nothing
            bad = await c.post(base, headers=h, json={"name": "x", "networks": ["nope"]})
            assert bad.status_code == 422
            gone = await c.delete(f"{base}/{body['id']}", headers=h)
            assert gone.status_code == 204
            again = (await c.get(base, headers=h)).json()["items"][0]
            assert again["active"] is False
            assert again["revoked"] is not None
            missing = await c.delete(f"{base}/ffffffffffffffff", headers=h)
            assert missing.status_code == 404
    finally:
        app.state.idsvc.close()
        runtime.provisioner.close()
        await runtime.authenticator.close()
        await runtime.overlay.close()
        await state.close()


async def test_app_passwords_on_a_read_only_active_directory(
    samba_ad: AdDirectory, tmp_path: Path
) -> None:
    directory = await CorporateDirectory.open(ad_settings(samba_ad))
    overlay = await OverlayStore.open(tmp_path / "overlay.db")
    auth = Authenticator(
        directory, sas.hasher(), AuthSettings(failure_delay=0, penalty=False),
        audit=LogAuditSink(), app_passwords=overlay,
    )  # fmt: skip
    apps = AppPasswords(directory, overlay, audit=LogAuditSink(), invalidator=auth)
    try:
        made, secret = await apps.create("alice@corp.test", "phone", actor="test")
        assert made.subject != "alice@corp.test"  # the objectGUID: a rename keeps it

        async def ok(login: str, password: str) -> bool:
            result = await auth.authenticate(
                AuthRequest(
                    login=login,
                    password=Secret(password),
                    service="imap",
                    remote_ip="127.0.0.1",
                    secured=True,
                )
            )
            return result.ok

        assert await ok("alice@corp.test", secret)
        assert await ok("alice@ad.corp.test", secret)  # by UPN: the same account
        assert await ok("alice@corp.test", samba_ad.alice.password)  # bind-through still
        await apps.revoke("alice@corp.test", made.id, actor="test")
        assert not await ok("alice@corp.test", secret)
    finally:
        await auth.close()
        await overlay.close()
        await directory.close()
