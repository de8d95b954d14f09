"""A real Postfix (``smtpd_sasl_type = cyrus``, libsasl2 → our saslauthd mux) and real swaks.

SMTP AUTH PLAIN and LOGIN over STARTTLS: 235 for a good password, 535 for a bad one or an unknown
user, 454 while the directory (a slapd of our own) is killed, and 235 again within seconds after
it is started again, with nothing restarted on our side or Postfix's.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import swaks
from tests.fixtures.outage import smtp_outage_and_recovery
from tests.fixtures.postfix import PostfixSasl, PostfixServer, postfix_instance, run_dir
from tests.integration.saslauthd_support import (
    USERS,
    authenticator,
    populate,
    running,
    which_or_fail,
)

pytestmark = pytest.mark.postfix


async def swaks_auth(
    pf: PostfixServer, user: str, password: str, mech: str = "PLAIN", *, to: str | None = None
) -> tuple[int, str]:
    """AUTH over STARTTLS with swaks; returns (the AUTH reply code, transcript).

    With ``to`` a whole message is sent to that (remote) recipient after AUTH.
    """
    if to is None:
        return await swaks.swaks_auth(pf.host, pf.port, user, password, mech)
    return await swaks.swaks_auth(pf.host, pf.port, user, password, mech, to=to, quit_after=None)


@pytest.fixture(scope="module")
def cyrus_pf() -> Iterator[tuple[PostfixServer, Path]]:
    """One Postfix for the module; each test serves the mux at the same path with its own
    directory and listener (libsasl2 connects per authentication)."""
    with run_dir() as sockets:
        mux = sockets / "mux"
        with postfix_instance(PostfixSasl.cyrus(mux)) as pf:
            yield pf, mux


@pytest.fixture
async def populated(directory: Any) -> Any:
    await populate(directory)
    return directory


@pytest.fixture
async def cyrus_postfix(
    populated: Any, cyrus_pf: tuple[PostfixServer, Path]
) -> AsyncIterator[PostfixServer]:
    pf, mux = cyrus_pf
    # as in production: the socket belongs to a group smtpd's user is in, not world-writable
    async with running(mux, authenticator(populated), mode=0o660, group="postfix"):
        yield pf


async def test_good_password_235(cyrus_postfix: PostfixServer) -> None:
    for mech in ("PLAIN", "LOGIN"):
        code, out = await swaks_auth(
            cyrus_postfix, USERS.good, USERS.good_pw, mech, to="friend@remote.example"
        )
        assert code == 235, out
        assert re.search(r"<~\s+250 2\.0\.0 Ok: queued", out), out
        # libsasl2 split alice@example.org into login + realm; the auth core joined them back
        cyrus_postfix.wait_for_log(rf"sasl_method={mech}, sasl_username=alice@example\.org")


async def test_failures_535(cyrus_postfix: PostfixServer) -> None:
    cases = [
        (USERS.good, "wrong-password"),
        (USERS.unknown, USERS.good_pw),
        (USERS.disabled, USERS.disabled_pw),
        (USERS.imap_only, USERS.imap_only_pw),
    ]
    for mech in ("PLAIN", "LOGIN"):
        for user, password in cases:
            code, out = await swaks_auth(cyrus_postfix, user, password, mech)
            assert code == 535, (mech, user, out)


async def test_unauthenticated_relay_refused(
    cyrus_postfix: PostfixServer,
) -> None:
    # no AUTH: relaying to a remote domain is refused (reject_unauth_destination)
    proc = await asyncio.create_subprocess_exec(
        which_or_fail("swaks"), "--server", f"{cyrus_postfix.host}:{cyrus_postfix.port}",
        "-tls", "--from", "x@idsvc.test", "--to", "friend@remote.example",
        "--quit-after", "RCPT", "--timeout", "20",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    raw, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert re.search(r"<~\*\s+554 5\.7\.1 .*Relay access denied", raw.decode()), raw.decode()


async def test_no_auth_offered_before_starttls(cyrus_postfix: PostfixServer) -> None:
    reader, writer = await asyncio.open_connection(cyrus_postfix.host, cyrus_postfix.port)
    try:
        assert (await reader.readline()).startswith(b"220")
        writer.write(b"EHLO client.idsvc.test\r\n")
        lines = []
        while True:
            line = await asyncio.wait_for(reader.readline(), 10)
            lines.append(line)
            if line[3:4] == b" ":
                break
        assert b"250-STARTTLS\r\n" in lines
        assert not [x for x in lines if b"AUTH" in x]
        writer.write(b"QUIT\r\n")
    finally:
        writer.close()


# -- the directory goes away and comes back --------------------------------------------------


@pytest.mark.slapd
@pytest.mark.slow
async def test_directory_down_454_then_recovery(
    own_slapd: Any, cyrus_pf: tuple[PostfixServer, Path]
) -> None:
    from idsvc.directory.ldap import LdapDirectory

    directory = await LdapDirectory.open(own_slapd.settings(own_slapd.new_subtree("pf")))
    try:
        await populate(directory)
        pf, mux = cyrus_pf
        async with running(mux, authenticator(directory), mode=0o660, group="postfix"):
            assert (await swaks_auth(pf, USERS.good, USERS.good_pw))[0] == 235

            async def auth(user: str, password: str, mech: str) -> tuple[int, str]:
                return await swaks_auth(pf, user, password, mech)

            recovered = await smtp_outage_and_recovery(own_slapd, auth, USERS.good, USERS.good_pw)
            assert recovered < 15
            pf.wait_for_log(r"SASL PLAIN authentication failed: generic failure")  # the 454s
            pf.wait_for_log(r"SASL PLAIN authentication failed: authentication failure")
    finally:
        await directory.close()
