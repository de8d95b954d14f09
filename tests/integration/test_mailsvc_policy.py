"""mailsvc asks idsvc's real policy service at RCPT: per-login message rate limits (a message
with several recipients counts once), and a policy service that has gone away is a temporary
refusal (451 4.3.5), never a pass."""

from __future__ import annotations

import smtplib

from tests.fixtures.mailstack import ALICE, BOB, PASSWORD, MailStack, mail_stack
from tests.integration.test_mailsvc_smtp import tls_client

RATE = 2


def submit(stack: MailStack, rcpts: list[str]) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", stack.submission, timeout=30) as client:
        client.starttls(context=tls_client())
        client.login(ALICE, PASSWORD)
        assert client.mail(ALICE)[0] == 250
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            if code != 250:
                return code, text
        return client.data(b"Subject: rate\r\n\r\nx\r\n")


def mx(stack: MailStack) -> int:
    with smtplib.SMTP("127.0.0.1", stack.mx, timeout=30) as client:
        client.ehlo("p.test")
        client.mail("s@remote.example")
        return client.rcpt(BOB)[0]


async def test_rate_limit_through_the_policy_service() -> None:
    with mail_stack(policy=True, idsvc_extra={"policy": {"rate_limit": RATE}}) as stack:
        for _ in range(RATE):
            assert submit(stack, [BOB, "x@remote.example"])[0] == 250  # counted once each
        code, text = submit(stack, [BOB])
        assert code == 450, text
        assert b"rate limit" in text
        assert mx(stack) == 250  # unauthenticated inbound mail is not rate limited


async def test_policy_service_down_is_temporary() -> None:
    with mail_stack(identity={"policy": "unix:/nonexistent/idsvc-policy"}) as stack:
        with smtplib.SMTP("127.0.0.1", stack.mx, timeout=30) as client:
            client.ehlo("p.test")
            client.mail("s@remote.example")
            code, text = client.rcpt(BOB)
        assert (code, text[:5]) == (451, b"4.3.5"), text
