"""The whole stack on loopback, on both backends: ``idsvc serve`` + a real Postfix + a real
Dovecot, all configured from the files in ``docker/`` (``tests/fixtures/mailstack.py``).

The accounts are made through the ``idsvc`` CLI while the server runs, as an admin would. The
clients are swaks (SMTP) and curl (IMAP, POP3): programs nobody here wrote.
"""

from __future__ import annotations

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
