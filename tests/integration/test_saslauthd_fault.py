"""Fault injection: slapd is SIGKILLed in the middle of a concurrent load on the saslauthd socket.

A bounded loop (fixed worker count, a cap on attempts and on time) sends good and bad passwords
through the real listener, Authenticator and LdapDirectory to a slapd of our own, which is killed
and later started again. Required: not one OK for a bad password, ever; while slapd is down every
answer is a close without reply (temporary failure), never a NO for a good password; after the
restart good passwords succeed again within seconds, with nothing of ours restarted.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from idsvc.wire.saslauthd.protocol import (
    SaslauthdRequest,
    decode_reply,
    encode_request,
    reply_is_ok,
)
from tests.integration.saslauthd_support import USERS, authenticator, populate, running

pytestmark = [pytest.mark.slapd, pytest.mark.slow]

WORKERS = 8
MAX_ATTEMPTS = 20_000
KILL_AT = 1.0
RESTART_AT = 3.0
STOP_AT = 7.0


@dataclass(frozen=True)
class Attempt:
    start: float
    end: float
    bad: bool
    verdict: str  # ok | no | fail


async def attempt(path: Path, login: str, password: str) -> str:
    try:
        reader, writer = await asyncio.open_unix_connection(os.fspath(path))
    except OSError:
        return "fail"
    try:
        writer.write(encode_request(SaslauthdRequest(login, password, "smtp", "")))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 15)
    except (OSError, TimeoutError):
        return "fail"
    finally:
        writer.close()
    decoded = decode_reply(data)
    if decoded is None:
        return "fail"
    return "ok" if reply_is_ok(decoded[0]) else "no"


@pytest.fixture
def own_slapd() -> Iterator[Any]:
    from tests.fixtures.slapd import SlapdServer, find_binary
    from tests.integration.saslauthd_support import which_or_fail

    if find_binary("slapd") is None:
        which_or_fail("slapd")
    server = SlapdServer(tls=False)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


async def test_slapd_killed_mid_load(own_slapd: Any, tmp_path: Path) -> None:
    from idsvc.directory.ldap import LdapDirectory

    directory = await LdapDirectory.open(own_slapd.settings(own_slapd.new_subtree("fault")))
    attempts: list[Attempt] = []
    marks: dict[str, float] = {}
    try:
        await populate(directory)
        async with running(tmp_path / "mux", authenticator(directory)) as server:
            t0 = time.monotonic()
            budget = MAX_ATTEMPTS

            async def worker(index: int) -> None:
                nonlocal budget
                n = index
                while budget > 0 and time.monotonic() - t0 < STOP_AT:
                    budget -= 1
                    n += 1
                    bad = n % 3 == 0
                    password = "wrong-password" if bad else USERS.good_pw
                    start = time.monotonic() - t0
                    verdict = await attempt(server.path, USERS.good, password)
                    attempts.append(Attempt(start, time.monotonic() - t0, bad, verdict))
                    if verdict == "fail":
                        await asyncio.sleep(0.02)  # do not spin while the directory is down

            async def chaos() -> None:
                await asyncio.sleep(KILL_AT)
                marks["kill_begin"] = time.monotonic() - t0
                await asyncio.to_thread(own_slapd.kill)
                marks["killed"] = time.monotonic() - t0
                await asyncio.sleep(RESTART_AT - KILL_AT)
                marks["restart_begin"] = time.monotonic() - t0
                await asyncio.to_thread(own_slapd.start)
                marks["restarted"] = time.monotonic() - t0

            await asyncio.gather(chaos(), *(worker(i) for i in range(WORKERS)))
    finally:
        await directory.close()

    assert len(attempts) < MAX_ATTEMPTS  # the time bound ended the run, not the cap
    # 1. never an OK for a bad password
    assert not [a for a in attempts if a.bad and a.verdict == "ok"]
    # 2. before the kill: everything answered correctly
    before = [a for a in attempts if a.end < marks["kill_begin"]]
    assert before, "no traffic before the kill"
    assert all(a.verdict == ("no" if a.bad else "ok") for a in before)
    # 3. while down: only closes (temporary failure), never NO — not even for bad passwords
    down = [a for a in attempts if a.start > marks["killed"] and a.end < marks["restart_begin"]]
    assert down, "no traffic while slapd was down"
    assert {a.verdict for a in down} == {"fail"}
    # 4. recovery: good passwords succeed again within seconds of the restart
    recovered = [a for a in attempts if a.start > marks["restarted"] and a.verdict == "ok"]
    assert recovered, "no recovery after slapd came back"
    assert recovered[0].start - marks["restarted"] < 3.0
    tail = [a for a in attempts if a.start > recovered[0].end]
    assert tail
    assert all(a.verdict == ("no" if a.bad else "ok") for a in tail)
