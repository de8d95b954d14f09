"""A real Postfix with ``smtpd_sasl_type = dovecot`` talking to our listener, driven by swaks.

AUTH PLAIN and LOGIN over STARTTLS: 235 for a good password (and the maillog shows the canonical
``sasl_username=`` for a mixed-case login), 535 for a bad password, an unknown user, a disabled
account or one not enabled for smtp; 454 while the directory (a slapd of our own) is killed and
235 again within seconds after it comes back, with neither idsvc nor Postfix restarted. Postfix's
``noplaintext`` filters out every one of our mechanisms, which proves the ``plaintext`` MECH flags
reach it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from idsvc.auth.engine import Authenticator
from idsvc.wire.dovecot_auth import DovecotAuthServer
from tests.fixtures.outage import smtp_outage_and_recovery
from tests.fixtures.postfix import PostfixSasl, PostfixServer
from tests.integration.dovecot_auth_support import (
    USERS,
    authenticator,
    populate,
    running,
    swaks,
    swaks_auth,
)

pytestmark = pytest.mark.postfix


def listener(path: Path, auth: Authenticator) -> AbstractAsyncContextManager[DovecotAuthServer]:
    # as in production: owned by a group smtpd's user is in, not world-writable
    return running(auth, path, mode=0o660, group="postfix")


@pytest.fixture
async def dovecot_postfix(
    directory: Any,
    postfix_factory: Callable[..., PostfixServer],
    postfix_run_dir: Path,
) -> AsyncIterator[PostfixServer]:
    await populate(directory)
    path = postfix_run_dir / "auth"
    async with listener(path, authenticator(directory)):
        yield await asyncio.to_thread(postfix_factory, PostfixSasl.dovecot(path))


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
async def test_good_password_235_with_canonical_sasl_username(
    dovecot_postfix: PostfixServer, mech: str
) -> None:
    pf = dovecot_postfix
    code, out = await swaks_auth(
        pf.host, pf.port, "Bob@Example.ORG", USERS.good_pw, mech, quit_after="RCPT"
    )
    assert code == 235, out
    assert "<~  250 2.1.5 Ok" in out, out  # relaying to a remote domain: only when authenticated
    await asyncio.to_thread(
        pf.wait_for_log, rf"sasl_method={mech}, sasl_username=bob@example\.org\b"
    )
    assert "sasl_username=Bob@Example.ORG" not in pf.log_text()


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize(
    ("user", "password"),
    [
        (USERS.good, "wrong-password"),
        (USERS.unknown, USERS.good_pw),
        (USERS.disabled, USERS.disabled_pw),
        (USERS.imap_only, USERS.imap_only_pw),
    ],
    ids=["bad-password", "unknown-user", "disabled", "not-for-smtp"],
)
async def test_failures_535(
    dovecot_postfix: PostfixServer, mech: str, user: str, password: str
) -> None:
    code, out = await swaks_auth(dovecot_postfix.host, dovecot_postfix.port, user, password, mech)
    assert code == 535, out
    assert "535 5.7.8 Error: authentication failed: Authentication failed" in out


async def test_noplaintext_hides_our_mechanisms(
    embedded_directory: Any,
    postfix_factory: Callable[..., PostfixServer],
    postfix_run_dir: Path,
) -> None:
    await populate(embedded_directory)
    path = postfix_run_dir / "auth"
    async with listener(path, authenticator(embedded_directory)):
        pf = await asyncio.to_thread(
            postfix_factory,
            PostfixSasl.dovecot(path),
            extra_main={"smtpd_sasl_tls_security_options": "noanonymous, noplaintext"},
        )
        out = await swaks(pf.host, pf.port, "--to", "x@remote.example", "--quit-after", "EHLO")
        assert "TLS started" in out, out
        assert "250-AUTH" not in out, out
        assert "250 AUTH" not in out, out
        # both of our mechanisms carry "plaintext", so Postfix filtered every one of them out
        await asyncio.to_thread(pf.wait_for_log, r"fatal: no SASL authentication mechanisms")


# -- the directory goes away and comes back --------------------------------------------------


@pytest.mark.slapd
@pytest.mark.slow
async def test_directory_down_454_then_recovery(
    own_slapd: Any, postfix_factory: Callable[..., PostfixServer], postfix_run_dir: Path
) -> None:
    from idsvc.directory.ldap import LdapDirectory

    directory = await LdapDirectory.open(own_slapd.settings(own_slapd.new_subtree("pfdv")))
    try:
        await populate(directory)
        path = postfix_run_dir / "auth"
        async with listener(path, authenticator(directory)):
            pf = await asyncio.to_thread(postfix_factory, PostfixSasl.dovecot(path))
            assert (await swaks_auth(pf.host, pf.port, USERS.good, USERS.good_pw))[0] == 235

            async def auth(user: str, password: str, mech: str) -> tuple[int, str]:
                return await swaks_auth(pf.host, pf.port, user, password, mech)

            await smtp_outage_and_recovery(own_slapd, auth, USERS.good, USERS.good_pw)
            await asyncio.to_thread(
                pf.wait_for_log,
                r"SASL LOGIN authentication failed: Connection lost to authentication server",
            )
    finally:
        await directory.close()
