"""The policy service over real sockets on both backends, with the exact request format of
SMTPD_POLICY_README: sender-login mismatch, disabled accounts, send-rate limits, quota, a
directory outage (DEFER_IF_PERMIT, never DUNNO) and bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from idsvc.config import PolicySettings, SocketSettings
from idsvc.directory.base import Directory
from idsvc.wire.policy import protocol as proto
from idsvc.wire.policy.server import PolicyServer
from tests.fixtures.slapd import SlapdServer
from tests.integration.lookup_support import Client, serving, short_dir
from tests.integration.mail_support import ALICE, ALICE_QUOTA, BOB, CAROL, lookups, populate


def settings(path: Path, **kw: Any) -> PolicySettings:
    return PolicySettings(socket=SocketSettings(path=path, mode=0o666), tcp="127.0.0.1:0", **kw)


def request(**attrs: str) -> dict[str, str]:
    base = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "protocol_name": "ESMTP",
        "client_address": "198.51.100.7",
        "client_name": "unknown",
        "helo_name": "client.example",
        "queue_id": "",
        "instance": "8045.5f2ab23.0",
        "size": "0",
        "sasl_method": "PLAIN",
    }
    base.update(attrs)
    return base


async def ask(client: Client, attrs: dict[str, str]) -> str:
    await client.send(proto.encode_request(attrs))
    reply = await client.until(b"\n\n")
    assert reply.startswith(b"action=")
    assert reply.count(b"\n") == 2
    return reply[len(b"action=") : -2].decode()


@pytest.fixture
async def vmail(tmp_path: Path) -> Path:
    return tmp_path / "vmail"


@pytest.fixture
async def server(directory: Directory, vmail: Path) -> AsyncIterator[PolicyServer]:
    await populate(directory)
    with short_dir() as tmp:
        conf = settings(tmp / "policy", rate_limit=3, rate_window=3600)
        async with serving(PolicyServer(conf, lookups(directory, vmail_root=vmail))) as srv:
            yield srv


async def test_decisions(server: PolicyServer, vmail: Path) -> None:
    assert server.path is not None
    client = await Client.open(server.path)
    sasl = {"sasl_username": ALICE}
    # the documented example: alice sends as herself to a foreign recipient
    assert await ask(client, request(sender=ALICE, recipient="bob@example.net", **sasl)) == "DUNNO"
    assert await ask(client, request(protocol_state="MAIL", sender=ALICE, **sasl)) == "DUNNO"
    # aliases she receives, and her alias-domain address, are hers to send from
    assert await ask(client, request(sender="team@example.org", recipient=BOB, **sasl)) == "DUNNO"
    assert await ask(client, request(sender="alice@example.net", recipient=BOB, **sasl)) == "DUNNO"
    # someone else's address, a catch-all address, or a foreign one is not
    for sender in (BOB, "x@other.example", "alice@gmail.example"):
        action = await ask(client, request(sender=sender, recipient=BOB, **sasl))
        assert action.startswith("553 5.7.1 "), action
        assert action == f"553 5.7.1 Sender address {sender} is not owned by user {ALICE}"
    # the null sender (bounces) is not checked
    assert await ask(client, request(sender="", recipient=BOB, **sasl)) == "DUNNO"
    # the login as typed (cyrus SASL: alias domain, upper case) is the same account
    typed = {"sasl_username": "Alice@Example.NET"}
    assert await ask(client, request(sender=ALICE, recipient=BOB, **typed)) == "DUNNO"
    # a disabled (or unknown) SASL account sends nothing
    action = await ask(client, request(sender=CAROL, recipient=BOB, sasl_username=CAROL))
    assert action.startswith("554 5.7.1 ")
    # recipients: a disabled mailbox is refused at RCPT, for anyone
    action = await ask(client, request(sender="x@external.test", recipient=CAROL))
    assert action == "550 5.2.1 Recipient mailbox is disabled"
    assert await ask(client, request(sender="x@external.test", recipient=BOB)) == "DUNNO"
    # unsupported request kinds defer rather than pass
    assert await ask(client, {"request": "junk"}) == "DEFER_IF_PERMIT Unsupported policy request"
    # quota: alice's maildirsize says she is nearly full
    maildir = vmail / "example.org" / "alice" / "Maildir"
    maildir.mkdir(parents=True)
    (maildir / "maildirsize").write_text(f"{ALICE_QUOTA}S\n{ALICE_QUOTA - 1000} 10\n")
    assert (
        await ask(client, request(sender="x@external.test", recipient=ALICE, size="500")) == "DUNNO"
    )
    action = await ask(client, request(sender="x@external.test", recipient=ALICE, size="5000"))
    assert action == "552 5.2.2 Mailbox full"
    action = await ask(
        client, request(sender="x@ext.test", recipient="alice+x@example.net", size="5000")
    )
    assert action.startswith("552 5.2.2 ")
    await client.close()


async def test_rate_limit_counts_messages_not_recipients(server: PolicyServer) -> None:
    assert server.tcp_port is not None
    client = await Client.open(server.tcp_port)
    sasl = {"sasl_username": BOB, "sender": BOB}
    for message in range(3):  # rate_limit = 3 messages, each to several recipients
        for rcpt in ("a@external.test", "b@external.test", "c@external.test"):
            action = await ask(client, request(recipient=rcpt, instance=f"m{message}", **sasl))
            assert action == "DUNNO"
    action = await ask(client, request(recipient="a@external.test", instance="m3", **sasl))
    assert action.startswith(f"450 4.7.1 Sending rate limit reached for {BOB}, retry in ")
    # another user is not affected
    assert await ask(client, request(sasl_username=ALICE, sender=ALICE, recipient=BOB)) == "DUNNO"
    await client.close()


async def test_pipelined_requests_in_order(server: PolicyServer) -> None:
    assert server.path is not None
    client = await Client.open(server.path)
    reqs = [request(recipient=CAROL), request(recipient=BOB)] * 20
    await client.send(b"".join(proto.encode_request(r) for r in reqs))
    for r in reqs:
        reply = await client.until(b"\n\n")
        expected = "550 5.2.1" if r["recipient"] == CAROL else "DUNNO"
        assert reply.decode().startswith(f"action={expected}")
    await client.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"request=smtpd_access_policy\nno equals sign\n\n",
        b"".join(b"attr%d=x\n" % i for i in range(5000)) + b"\n",  # thousands of attributes
        b"a=" + b"x" * 20_000 + b"\n\n",  # an over-long line
        b"\n",  # an empty request
    ],
)
async def test_bad_input_closes_only_that_connection(server: PolicyServer, garbage: bytes) -> None:
    assert server.path is not None
    bystander = await Client.open(server.path)
    bad = await Client.open(server.path)
    await bad.send(garbage)
    assert await bad.eof()  # no reply at all: Postfix applies its default action
    assert await ask(bystander, request(recipient=BOB)) == "DUNNO"
    await bad.close()
    await bystander.close()


async def test_unterminated_request_times_out(directory: Directory) -> None:
    await populate(directory)
    with short_dir() as tmp:
        conf = settings(tmp / "policy", request_timeout=0.3, idle_timeout=60)
        async with serving(PolicyServer(conf, lookups(directory))) as srv:
            client = await Client.open(srv.path)
            await client.send(proto.encode_request(request(recipient=BOB))[:-1])  # no empty line
            assert await client.eof(5)
            await client.close()


@pytest.mark.slapd
async def test_directory_outage_defers_never_dunno(own_slapd: SlapdServer) -> None:
    from idsvc.directory.ldap import LdapDirectory

    base = own_slapd.new_subtree("policy")
    directory = await LdapDirectory.open(own_slapd.settings(base, timeout=1.0, retry_after=0.1))
    try:
        await populate(directory)
        mail = lookups(directory, cache_ttl=0, timeout=3.0)
        with short_dir() as tmp:
            async with serving(PolicyServer(settings(tmp / "p"), mail)) as srv:
                client = await Client.open(srv.path)
                own_slapd.pause()
                try:
                    for attrs in (
                        request(recipient=BOB),
                        request(sasl_username=ALICE, sender=ALICE, recipient=BOB),
                    ):
                        action = await ask(client, attrs)
                        assert action == "DEFER_IF_PERMIT Service temporarily unavailable"
                finally:
                    own_slapd.resume()
                deadline = asyncio.get_running_loop().time() + 15
                while True:
                    action = await ask(client, request(recipient=CAROL))
                    if action.startswith("550") or asyncio.get_running_loop().time() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert action.startswith("550 5.2.1 ")
                await client.close()
    finally:
        await directory.close()
