"""Fault injection: a real slapd is killed in the middle of a load on the Dovecot auth socket.

Invariants checked on every answer (cache off, so each request goes to the directory):

* a wrong password never gets ``OK`` — not before, during or after the outage;
* a right password never gets ``FAIL`` (an outage must not look like a wrong password);
* while slapd is down, every request ends with the connection closed (Postfix: 454), never FAIL;
* after slapd is started again, good passwords succeed again within seconds, with the same
  idsvc objects (nothing restarted).

The load is bounded by time and count and runs on loopback / a UNIX socket only.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.outage import kill_and_restart
from tests.integration.dovecot_auth_support import (
    CLIENT_HELLO,
    HANDSHAKE,
    USERS,
    Conn,
    auth_plain,
    authenticator,
    populate,
    running,
    short_dir,
)

pytestmark = [pytest.mark.slapd, pytest.mark.slow]

WORKERS = 8
MAX_REQUESTS = 20_000
RUN_FOR = 7.0
KILL_AT = 1.5
RESTART_AT = 4.0


@dataclass(frozen=True)
class Answer:
    at: float
    good: bool
    verdict: str  # "ok" | "fail" | "closed"


async def _load(path: Path, t0: float, answers: list[Answer]) -> None:
    budget = MAX_REQUESTS

    async def worker(k: int) -> None:
        nonlocal budget
        conn: Conn | None = None
        rid = 0
        try:
            while budget > 0 and time.monotonic() - t0 < RUN_FOR:
                budget -= 1
                if conn is None:
                    conn = await Conn.open(path)
                    await conn.play([*CLIENT_HELLO, *HANDSHAKE])
                    rid = 0
                rid += 1
                good = (rid + k) % 2 == 0
                pw = USERS.good_pw if good else f"wrong-{k}-{rid}"
                await conn.send(auth_plain(rid, pw))
                line = await conn.line(timeout=15)
                now = time.monotonic() - t0
                if line == "<EOF>":
                    answers.append(Answer(now, good, "closed"))
                    await conn.close()
                    conn = None
                    await asyncio.sleep(0.02)  # Postfix reconnects per SMTP session, not in a loop
                elif line == f"OK\t{rid}\tuser=bob@example.org":
                    answers.append(Answer(now, good, "ok"))
                elif line == f"FAIL\t{rid}\treason=Authentication failed":
                    answers.append(Answer(now, good, "fail"))
                else:
                    raise AssertionError(f"unexpected reply {line!r}")
        finally:
            if conn is not None:
                await conn.close()

    await asyncio.gather(*(worker(k) for k in range(WORKERS)))


async def test_slapd_killed_mid_load(own_slapd: Any) -> None:
    from idsvc.directory.ldap import LdapDirectory

    directory = await LdapDirectory.open(own_slapd.settings(own_slapd.new_subtree("dvfault")))
    try:
        await populate(directory)
        with short_dir() as tmp:
            auth = authenticator(directory, cache=False)
            async with running(auth, tmp / "auth-client") as srv:
                assert srv.path is not None
                answers: list[Answer] = []
                t0 = time.monotonic()
                load = asyncio.ensure_future(_load(srv.path, t0, answers))
                outage = await kill_and_restart(own_slapd, t0, KILL_AT, RESTART_AT)
                await asyncio.wait_for(load, RUN_FOR + 30)
    finally:
        await directory.close()

    assert answers, "the load produced no answers"
    wrong_ok = [a for a in answers if not a.good and a.verdict == "ok"]
    wrong_fail = [a for a in answers if a.good and a.verdict == "fail"]
    assert not wrong_ok, f"{len(wrong_ok)} bad passwords got OK"
    assert not wrong_fail, f"{len(wrong_fail)} good passwords got FAIL"

    before = [a for a in answers if a.at < outage.kill_begin]
    down = [a for a in answers if outage.killed + 0.2 < a.at < outage.restart_begin]
    assert {a.verdict for a in before} == {"ok", "fail"}  # a healthy mix first
    assert down, "no requests while slapd was down"
    assert {a.verdict for a in down} == {"closed"}, "FAIL/OK while the directory was down"

    restart_at = outage.restart_begin
    recovered = [a for a in answers if a.at > restart_at and a.good and a.verdict == "ok"]
    assert recovered, "no good login succeeded after slapd came back"
    assert recovered[0].at - restart_at < 10.0
    after = [a for a in answers if a.at > recovered[0].at]
    assert any(a.verdict == "fail" for a in after), "bad passwords are answered again"
