"""The whole stack on loopback: ``idsvc serve`` + a real Postfix + a real Dovecot, all configured
from the files in ``docker/`` (``tests/fixtures/mtastack.py``), on both backends (embedded,
slapd) and with both Dovecot passdb/userdb drivers (idsvc's dict server; the Lua script).

The accounts are made through the ``idsvc`` CLI while the server runs, as an admin would. The
clients are swaks (SMTP) and curl (IMAP, POP3): programs nobody here wrote.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.fixtures.mtastack import PEOPLE, MailStack
from tests.fixtures.swaks import swaks_auth

pytestmark = [pytest.mark.postfix, pytest.mark.slow]


def test_the_daemons_accept_the_rendered_docker_files(mailstack: MailStack) -> None:
    assert mailstack.pf.postconf_warnings() == []
    effective = mailstack.dv.check_config()
    assert f"mail_home = {mailstack.vmail}/%d/%n" in effective
    assert f"driver = {mailstack.auth_driver}" in effective  # passdb and userdb through idsvc


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
    (both had just accepted and cached the old state), so "within a second" holds with no
    window at all: the first attempt, started right after the command returned, is refused."""
    pf, user, old = mailstack.pf, PEOPLE.erin, PEOPLE.erin_pw
    assert (await swaks_auth(pf.host, pf.submission_port, user, old))[0] == 235
    assert mailstack.imap_login(user, old)[0] == 0

    new = "a brand new passphrase"
    mailstack.cli.ok("user", "passwd", user, "--password-stdin", stdin=new + "\n")
    code, out = await swaks_auth(pf.host, pf.submission_port, user, old)
    assert code == 535, out  # an attempt made right after the change: no stale-cache window
    code, out = mailstack.imap_login(user, old)
    assert code == 67, out
    assert (await swaks_auth(pf.host, pf.submission_port, user, new))[0] == 235
    assert mailstack.imap_login(user, new)[0] == 0

    reply = mailstack.api("PATCH", f"/users/{user}", {"enabled": False})
    assert reply.status_code == 200, reply.text
    code, out = await swaks_auth(pf.host, pf.submission_port, user, new)
    assert code == 535, out
    code, out = mailstack.imap_login(user, new)
    assert code == 67, out
    assert "UNAVAILABLE" not in out, out


# -- mail in and out -------------------------------------------------------------------------


def marker(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


def rcpt_reply(out: str) -> str:
    """The server's reply to RCPT TO in a swaks transcript."""
    after = out.split("~> RCPT TO", 1)[1]
    return next(line for line in after.splitlines() if line.startswith("<~")).lstrip("<~* ")


async def send(
    stack: MailStack, to: str, subject: str, *extra: str, submission: bool = False
) -> str:
    out = await stack.smtp(
        "--to", to, "--header", f"Subject: {subject}", "--body", f"body of {subject}",
        *extra, submission=submission,
    )  # fmt: skip
    assert "<~  250 2.0.0 Ok: queued as" in out, out
    return out


async def test_inbound_mail_is_delivered_and_read_back_over_imap_and_pop3(
    mailstack: MailStack,
) -> None:
    subject = marker("inbound")
    await send(mailstack, "Bob+news@Example.ORG", subject)  # delimiter and case: ours to handle
    delivered = await asyncio.to_thread(mailstack.wait_delivered, PEOPLE.bob, subject)
    assert delivered.is_relative_to(mailstack.vmail / "example.org" / "bob" / "Maildir")
    assert subject in mailstack.imap_fetch(PEOPLE.bob, PEOPLE.bob_pw, subject)
    assert subject in mailstack.pop3_fetch(PEOPLE.bob, PEOPLE.bob_pw, subject)


async def test_alias_catch_all_and_alias_domain_expand(mailstack: MailStack) -> None:
    team, catchall, aliased = marker("team"), marker("catchall"), marker("aliasdomain")
    await send(mailstack, PEOPLE.team, team)
    await send(mailstack, f"whoever@{PEOPLE.catchall_domain}", catchall)
    await send(mailstack, f"alice@{PEOPLE.alias_domain}", aliased)
    for who, subject in (
        (PEOPLE.bob, team),
        (PEOPLE.alice, team),  # one alias, several destinations
        (PEOPLE.bob, catchall),
        (PEOPLE.alice, aliased),
    ):
        await asyncio.to_thread(mailstack.wait_delivered, who, subject)
    assert team in mailstack.imap_fetch(PEOPLE.alice, PEOPLE.alice_pw, team)


@pytest.mark.parametrize(
    ("rcpt", "reply"),
    [
        (
            PEOPLE.unknown,
            "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown",
        ),
        (PEOPLE.carol, "550 5.2.1 <carol@example.org>: Recipient address rejected: Recipient "),
    ],
    ids=["unknown", "disabled"],
)
async def test_unknown_and_disabled_recipients_are_refused_at_rcpt(
    mailstack: MailStack, rcpt: str, reply: str
) -> None:
    subject = marker("refused")
    out = await mailstack.smtp("--to", rcpt, "--header", f"Subject: {subject}")
    assert rcpt_reply(out).startswith(reply), out
    assert "queued as" not in out  # refused in the session: nothing to bounce later
    await asyncio.to_thread(mailstack.pf.wait_for_log, rf"NOQUEUE: reject: RCPT .*<{rcpt}>")
    assert not any(subject in p.read_text() for p in mailstack.maildir_files(rcpt))
    assert "status=bounced" not in mailstack.pf.log_text()  # no backscatter


async def test_authenticated_submission_with_own_and_foreign_sender(mailstack: MailStack) -> None:
    auth = ["--auth", "PLAIN", "--auth-user", PEOPLE.bob, "--auth-password", PEOPLE.bob_pw]
    own, outbound = marker("own"), marker("outbound")
    await send(mailstack, PEOPLE.alice, own, "--from", PEOPLE.bob, *auth, submission=True)
    await asyncio.to_thread(mailstack.wait_delivered, PEOPLE.alice, own)
    # relaying to a remote domain is for authenticated senders only (the test box discards it)
    await send(mailstack, "x@remote.example", outbound, "--from", PEOPLE.team, *auth,
               submission=True)  # fmt: skip
    await asyncio.to_thread(
        mailstack.pf.wait_for_log, r"sasl_method=PLAIN, sasl_username=bob@example\.org"
    )
    out = await mailstack.smtp(
        "--to", "x@remote.example", "--from", PEOPLE.alice, *auth, "--quit-after", "RCPT",
        submission=True,
    )  # fmt: skip
    reply = rcpt_reply(out) if "~> RCPT TO" in out else out
    assert reply.startswith("553 5.7.1"), out  # alice's address is not bob's to use
    assert "not owned by user bob@example.org" in reply, out


async def test_unauthenticated_relay_is_refused(mailstack: MailStack) -> None:
    out = await mailstack.smtp("--to", "x@remote.example", "--quit-after", "RCPT")
    assert rcpt_reply(out).startswith("554 5.7.1 <x@remote.example>: Relay access denied"), out
