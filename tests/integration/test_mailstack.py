"""The whole stack on loopback, on both backends: ``idsvc serve`` + a real Postfix + a real
Dovecot, all configured from the files in ``docker/`` (``tests/fixtures/mailstack.py``).

The accounts are made through the ``idsvc`` CLI while the server runs, as an admin would. The
clients are swaks (SMTP) and curl (IMAP, POP3): programs nobody here wrote.
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.mailstack import PEOPLE, MailStack
from tests.fixtures.swaks import swaks_auth

pytestmark = [pytest.mark.postfix, pytest.mark.slow]


def test_the_daemons_accept_the_rendered_docker_files(mailstack: MailStack) -> None:
    assert mailstack.pf.postconf_warnings() == []
    effective = mailstack.dv.check_config()
    assert f"mail_home = {mailstack.vmail}/%d/%n" in effective
    assert "driver = dict" in effective  # passdb and userdb through idsvc


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
async def test_submission_auth_goes_to_idsvc(mailstack: MailStack, mech: str) -> None:
    pf = mailstack.pf
    port = pf.submission_port
    code, out = await swaks_auth(pf.host, port, "Bob@Example.ORG", PEOPLE.bob_pw, mech)
    assert code == 235, out
    for user, password in (
        (PEOPLE.bob, "wrong password"),
        (PEOPLE.unknown, PEOPLE.bob_pw),
        (PEOPLE.carol, PEOPLE.carol_pw),  # disabled
    ):
        code, out = await swaks_auth(pf.host, port, user, password, mech)
        assert code == 535, (user, out)


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_dovecot_logins_go_to_idsvc(mailstack: MailStack, protocol: str) -> None:
    login = mailstack.imap if protocol == "imap" else mailstack.pop3
    code, out = login("", "Bob@Example.ORG", PEOPLE.bob_pw, "-v")
    assert code == 0, out
    for user, password in (
        (PEOPLE.bob, "wrong password"),
        (PEOPLE.unknown, PEOPLE.bob_pw),
        (PEOPLE.carol, PEOPLE.carol_pw),  # disabled
    ):
        code, out = login("", user, password, "-v")
        assert code == 67, (user, out)  # curl: login denied
        assert "UNAVAILABLE" not in out, out  # a definite no, not a temporary failure


async def test_password_change_and_disable_reach_postfix_and_dovecot_at_once(
    mailstack: MailStack,
) -> None:
    """A password changed with the CLI and an account disabled through REST are refused by
    Postfix (SMTP AUTH) and Dovecot (IMAP) on the very first attempt after the change returns
    (both had just accepted and cached the old state)."""
    pf, user, old = mailstack.pf, PEOPLE.erin, PEOPLE.erin_pw
    assert (await swaks_auth(pf.host, pf.submission_port, user, old))[0] == 235
    assert mailstack.imap_login(user, old)[0] == 0

    new = "a brand new passphrase"
    mailstack.cli.ok("user", "passwd", user, "--password-stdin", stdin=new + "\n")
    changed = time.monotonic()
    code, out = await swaks_auth(pf.host, pf.submission_port, user, old)
    assert code == 535, out
    assert time.monotonic() - changed < 1.0  # decided at once (no cache window)
    code, out = mailstack.imap_login(user, old)
    assert code == 67, out
    assert (await swaks_auth(pf.host, pf.submission_port, user, new))[0] == 235
    assert mailstack.imap_login(user, new)[0] == 0

    reply = mailstack.api("PATCH", f"/users/{user}", {"enabled": False})
    assert reply.status_code == 200, reply.text
    disabled = time.monotonic()
    code, out = await swaks_auth(pf.host, pf.submission_port, user, new)
    assert code == 535, out
    assert time.monotonic() - disabled < 1.0
    code, out = mailstack.imap_login(user, new)
    assert code == 67, out
    assert "UNAVAILABLE" not in out, out
