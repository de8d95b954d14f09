"""A real Postfix ``smtpd`` using idsvc for everything: SASL through the Dovecot auth-client
listener, ``virtual_*`` maps and ``smtpd_sender_login_maps`` through socketmap, and the policy
service through ``check_policy_service`` — driven by swaks, on both backends."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from idsvc.config import (
    DovecotAuthSettings,
    PolicySettings,
    SocketmapSettings,
    SocketSettings,
)
from idsvc.wire.dovecot_auth import DovecotAuthServer
from idsvc.wire.policy.server import PolicyServer
from idsvc.wire.socketmap.server import SocketmapServer
from tests.fixtures import authstack
from tests.fixtures.postfix import PostfixSasl, PostfixServer
from tests.fixtures.swaks import swaks
from tests.integration.dovecot_auth_support import hasher
from tests.integration.mail_support import ALICE, BOB, CAROL, PASSWORD, lookups, populate

pytestmark = pytest.mark.postfix

_REPLY = re.compile(r"^<~\*?\s+(\d{3})[ -](.*)$", re.MULTILINE)


@pytest.fixture
async def stack(
    directory: Any,
    postfix_factory: Callable[..., PostfixServer],
    postfix_run_dir: Path,
) -> AsyncIterator[PostfixServer]:
    await populate(directory)
    run = postfix_run_dir
    mail = lookups(directory)
    auth = authstack.authenticator(directory, hasher())

    def sock(name: str) -> SocketSettings:
        return SocketSettings(path=run / name, mode=0o666)

    servers = [
        DovecotAuthServer(DovecotAuthSettings(socket=sock("auth")), auth),
        SocketmapServer(SocketmapSettings(socket=sock("maps")), mail),
        PolicyServer(PolicySettings(socket=sock("policy")), mail),
    ]
    maps = f"socketmap:unix:{run / 'maps'}"
    extra = {
        "virtual_mailbox_domains": f"{maps}:domain",
        "virtual_mailbox_maps": f"{maps}:mailbox",
        "virtual_alias_maps": f"{maps}:alias",
        "smtpd_sender_login_maps": f"{maps}:senderlogin",
        "virtual_transport": "discard",
        "recipient_delimiter": "+",
        "smtpd_recipient_restrictions": (
            f"check_policy_service unix:{run / 'policy'}, permit_sasl_authenticated, "
            "reject_unauth_destination"
        ),
    }
    async with contextlib.AsyncExitStack() as exits:
        for server in servers:
            await server.start()
            exits.push_async_callback(server.close)
        exits.push_async_callback(auth.close)
        yield await asyncio.to_thread(
            postfix_factory, PostfixSasl.dovecot(run / "auth"), extra_main=extra
        )


async def transaction(pf: PostfixServer, sender: str, rcpt: str, *auth: str) -> tuple[int, str]:
    """(the RCPT reply code and text) of one swaks session that quits after RCPT."""
    args = ["--from", sender, "--to", rcpt, "--quit-after", "RCPT"]
    if auth:
        args += ["--auth", "PLAIN", "--auth-user", auth[0], "--auth-password", auth[1]]
    out = await swaks(pf.host, pf.port, *args)
    after = out.split("~> RCPT TO", 1)[-1]
    if "~> RCPT TO" not in out:  # refused at MAIL FROM already
        after = out.split("~> MAIL FROM", 1)[-1]
    found = _REPLY.search(after)
    assert found, out
    return int(found.group(1)), found.group(2)


async def test_postfix_uses_idsvc_for_maps_and_policy(stack: PostfixServer) -> None:
    pf = stack
    login = (ALICE, PASSWORD)
    outside = "someone@external.test"
    # hosted recipients, through socketmap (no partial keys from Postfix: we strip "+tag")
    assert (await transaction(pf, outside, "bob+tag@example.org"))[0] == 250
    assert (await transaction(pf, outside, "team@example.org"))[0] == 250  # alias
    assert (await transaction(pf, outside, "anyone@other.example"))[0] == 250  # catch-all
    assert (await transaction(pf, outside, "bob@example.net"))[0] == 250  # alias domain
    code, text = await transaction(pf, outside, "nobody@example.org")
    assert code == 550
    assert "User unknown" in text
    # a disabled mailbox is refused by the policy service, with its reason
    code, text = await transaction(pf, outside, CAROL)
    assert (code, text) == (
        550,
        f"5.2.1 <{CAROL}>: Recipient address rejected: Recipient mailbox is disabled",
    )
    # authenticated: her own address and her aliases are fine, somebody else's is not
    assert (await transaction(pf, ALICE, "x@remote.test", *login))[0] == 250
    assert (await transaction(pf, "team@example.org", "x@remote.test", *login))[0] == 250
    code, text = await transaction(pf, BOB, "x@remote.test", *login)
    assert code == 553
    assert text.endswith(f"Sender address {BOB} is not owned by user {ALICE}")
    # unauthenticated relaying stays closed
    assert (await transaction(pf, outside, "x@remote.test"))[0] == 554
