"""The directory goes away under the whole stack and comes back (slapd backend: a slapd of the
stack's own, SIGKILLed and started again; nothing else is restarted).

While slapd is down: an SMTP client gets 451 at RCPT (it keeps the message and retries), SMTP AUTH
gets 454, Dovecot answers IMAP LOGIN with ``[UNAVAILABLE]`` (temporary), and a message submitted
locally with ``sendmail`` stays in Postfix's maildrop ("message not accepted, try again later"):
nothing is refused for good, nothing bounces. After slapd is back: AUTH, IMAP and RCPT work again,
and the message kept in the maildrop is delivered over LMTP (pickup rescans the maildrop on its
60 s timer or when the next message is posted; the test posts one to avoid the wait), with
``idsvc serve``, Postfix and Dovecot still the same processes.

One Postfix behaviour shows here and is not ours: an ``smtpd`` process caches the result of
resolving an address (``smtpd_resolve``), a failed one included, for its lifetime, so the very
sender that met the outage in that process keeps getting 451 until the process exits
(``max_idle``, 100 s, or ``max_use``). It is the same with ``ldap:`` tables; the test sends the
post-outage mail from another address.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.fixtures.mtastack import PEOPLE, MailStack, mail_stack
from tests.fixtures.swaks import swaks_auth

pytestmark = [pytest.mark.postfix, pytest.mark.slapd, pytest.mark.slow]
RECOVERY = 20.0  # seconds slapd may take to be used again after it is back


@pytest.fixture(params=["dict", "lua"])
def stack(request: pytest.FixtureRequest) -> Iterator[MailStack]:
    """A slapd-backed stack of the test's own; Dovecot through idsvc's dict server or Lua."""
    with mail_stack("slapd", str(request.param)) as started:
        yield started


def rcpt_code(out: str) -> int:
    after = out.split("~> RCPT TO", 1)[1]
    return int(next(line for line in after.splitlines() if line.startswith("<~"))[3:].split()[0])


async def test_directory_down_defers_everything_and_loses_nothing(stack: MailStack) -> None:
    slapd = stack.backend.slapd
    assert slapd is not None
    pf, dave, pw = stack.pf, PEOPLE.dave, PEOPLE.dave_pw
    processes = (stack.served.proc.pid, pf.master_pid(), stack.dv._proc and stack.dv._proc.pid)

    await asyncio.to_thread(slapd.kill)
    out = await stack.smtp("--to", dave, "--quit-after", "RCPT")
    assert rcpt_code(out) == 451, out  # temporary: the sending MTA keeps the message
    assert (await swaks_auth(pf.host, pf.submission_port, dave, pw))[0] == 454
    code, out = stack.imap_login(dave, pw)
    assert code == 67, out
    assert "NO [UNAVAILABLE]" in out, out  # temporary, not "authentication failed"
    subject = "kept-in-the-maildrop"
    await asyncio.to_thread(
        pf.sendmail, "sender@idsvc.test", dave, f"Subject: {subject}\n\nsent while down\n"
    )
    await asyncio.to_thread(pf.wait_for_log, r"message not accepted, try again later")
    assert any('"queue_name": "maildrop"' in q for q in pf.queue_ids())

    await asyncio.to_thread(slapd.start)
    back = time.monotonic()
    while True:  # AUTH works again within RECOVERY seconds, 454 until then
        code, out = await swaks_auth(pf.host, pf.submission_port, dave, pw)
        if code == 235:
            break
        assert code == 454, out
        assert time.monotonic() - back < RECOVERY, out
        await asyncio.sleep(0.5)
    assert stack.imap_login(dave, pw)[0] == 0
    # another sender: smtpd keeps the failed resolve of sender@idsvc.test in its per-process
    # address cache (stock Postfix, any table type) until that smtpd process exits
    out = await stack.smtp(
        "--to", dave, "--from", "later@idsvc.test", "--header", "Subject: after-the-outage"
    )
    assert "queued as" in out, out
    await asyncio.to_thread(  # posting a message wakes pickup, which rescans the maildrop
        pf.sendmail, "sender@idsvc.test", dave, "Subject: nudge\n\nwake pickup up\n"
    )
    for marker in (subject, "after-the-outage"):
        await asyncio.to_thread(stack.wait_delivered, dave, marker, 60.0)
    assert "status=bounced" not in pf.log_text()
    assert (stack.served.proc.pid, pf.master_pid(), stack.dv._proc and stack.dv._proc.pid) == (
        processes
    )
    assert stack.served.proc.poll() is None
