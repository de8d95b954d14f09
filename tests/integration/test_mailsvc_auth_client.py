"""mailsvc's Dovecot auth-client client against idsvc's real auth-client listener (real
Authenticator, embedded store): both PLAIN forms, LOGIN, failures, abort, many requests
multiplexed on one connection, and an outage followed by recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from idsvc.directory.sqlite import SqliteDirectory
from mailsvc.clients import Unavailable
from mailsvc.clients.dovecot_auth import DovecotAuthClient, MechanismUnavailable
from tests.integration.dovecot_auth_support import (
    USERS,
    authenticator,
    populate,
    running,
    short_dir,
)

GOOD, GOOD_PW = USERS.good, USERS.good_pw


def plain(user: str, password: str) -> bytes:
    return f"\0{user}\0{password}".encode()


async def never(challenge: bytes) -> bytes | None:
    raise AssertionError(f"unexpected challenge {challenge!r}")


@pytest.fixture
async def socket_path(embedded_directory: SqliteDirectory) -> AsyncIterator[Path]:
    await populate(embedded_directory)
    with short_dir() as tmp:
        async with running(authenticator(embedded_directory), tmp / "auth-client"):
            yield tmp / "auth-client"


@pytest.fixture
async def client(socket_path: Path) -> AsyncIterator[DovecotAuthClient]:
    c = DovecotAuthClient(f"unix:{socket_path}", timeout=10)
    yield c
    await c.close()


async def test_plain_with_initial_response(client: DovecotAuthClient) -> None:
    outcome = await client.authenticate(
        "PLAIN", respond=never, initial=plain(GOOD, GOOD_PW), remote_ip="192.0.2.1", secured=True
    )
    assert outcome.ok
    assert outcome.user == GOOD


async def test_plain_after_an_empty_challenge(client: DovecotAuthClient) -> None:
    asked: list[bytes] = []

    async def respond(challenge: bytes) -> bytes:
        asked.append(challenge)
        return plain(GOOD.upper(), GOOD_PW)

    outcome = await client.authenticate("PLAIN", respond=respond, secured=True)
    assert asked == [b""]
    assert outcome.user == GOOD  # canonical, whatever the client typed


async def test_login_mechanism(client: DovecotAuthClient) -> None:
    answers = {b"Username:": GOOD.encode(), b"Password:": GOOD_PW.encode()}
    asked: list[bytes] = []

    async def respond(challenge: bytes) -> bytes:
        asked.append(challenge)
        return answers[challenge]

    outcome = await client.authenticate("LOGIN", respond=respond, secured=True)
    assert asked == [b"Username:", b"Password:"]
    assert outcome.user == GOOD


@pytest.mark.parametrize(
    ("user", "password"),
    [
        (GOOD, "wrong"),
        (USERS.unknown, "whatever"),
        (USERS.disabled, USERS.disabled_pw),
        (GOOD, ""),
    ],
)
async def test_failures_are_definite(client: DovecotAuthClient, user: str, password: str) -> None:
    outcome = await client.authenticate(
        "PLAIN", respond=never, initial=plain(user, password), secured=True
    )
    assert not outcome.ok
    assert not outcome.aborted


async def test_abort_then_the_connection_is_still_usable(client: DovecotAuthClient) -> None:
    async def give_up(challenge: bytes) -> None:
        return None

    outcome = await client.authenticate("PLAIN", respond=give_up, secured=True)
    assert outcome.aborted
    assert not outcome.ok
    again = await client.authenticate(
        "PLAIN", respond=never, initial=plain(GOOD, GOOD_PW), secured=True
    )
    assert again.user == GOOD


async def test_unknown_mechanism(client: DovecotAuthClient) -> None:
    with pytest.raises(MechanismUnavailable):
        await client.authenticate("CRAM-MD5", respond=never)
    assert set(await client.mechanisms()) >= {"PLAIN", "LOGIN"}


async def test_many_requests_share_one_connection(client: DovecotAuthClient) -> None:
    async def one(i: int) -> Any:
        password = GOOD_PW if i % 3 else "wrong"
        return await client.authenticate(
            "PLAIN", respond=never, initial=plain(GOOD, password), secured=True
        )

    outcomes = await asyncio.gather(*(one(i) for i in range(60)))
    for i, outcome in enumerate(outcomes):
        assert outcome.ok == bool(i % 3), i
    conn = client._conn
    assert conn is not None
    assert conn.alive
    assert not conn.pending


async def test_outage_is_temporary_then_recovers(embedded_directory: SqliteDirectory) -> None:
    await populate(embedded_directory)
    with short_dir() as tmp:
        path = tmp / "auth-client"
        client = DovecotAuthClient(f"unix:{path}", timeout=5, connect_timeout=2)
        try:
            with pytest.raises(Unavailable):  # nothing listening yet
                await client.authenticate(
                    "PLAIN", respond=never, initial=plain(GOOD, GOOD_PW), secured=True
                )
            async with running(authenticator(embedded_directory), path):
                ok = await client.authenticate(
                    "PLAIN", respond=never, initial=plain(GOOD, GOOD_PW), secured=True
                )
                assert ok.user == GOOD
            # the listener closed: the live connection dropped, the next request is temporary
            with pytest.raises(Unavailable):
                await client.authenticate(
                    "PLAIN", respond=never, initial=plain(GOOD, GOOD_PW), secured=True
                )
            async with running(authenticator(embedded_directory), path):
                again = await client.authenticate(
                    "PLAIN", respond=never, initial=plain(GOOD, GOOD_PW), secured=True
                )
                assert again.user == GOOD
        finally:
            await client.close()
