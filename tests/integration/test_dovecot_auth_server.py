"""The Dovecot auth-client listener over a real socket, with the real Authenticator on a real
store (every backend): golden ``C:``/``S:`` transcripts, hygiene disconnects, concurrency,
CANCEL, idle timeout, TEMPFAIL, and Dovecot's own client (``doveadm auth test``)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from idsvc.auth.engine import Authenticator
from idsvc.config import DovecotAuthSettings, SocketSettings
from idsvc.wire.dovecot_auth import DovecotAuthServer
from idsvc.wire.dovecot_auth.protocol import MAX_LINE
from tests.integration.conftest import BOTH_LOOPS
from tests.integration.dovecot_auth_support import (
    CLIENT_HELLO,
    HANDSHAKE,
    USERS,
    Conn,
    auth_plain,
    authenticator,
    b64,
    doveadm_auth_test,
    plain,
    populate,
    require_doveadm,
    running,
    short_dir,
)

EVENT_LOOPS = BOTH_LOOPS  # every test here runs on asyncio's loop and on uvloop
FAIL = "reason=Authentication failed"
POSTFIX_PARAMS = "service=smtp\tnologin\tlip=127.0.0.1\trip=192.0.2.7\tsecured"
NO_PASSWORD = b64(b"\0bob@example.org\0")
EXTRA_NUL = b64(b"\0bob@example.org\0a\0b")
IMAP_ONLY = plain(USERS.imap_only, USERS.imap_only_pw)


@asynccontextmanager
async def _listening(auth: Authenticator, **settings: Any) -> AsyncIterator[DovecotAuthServer]:
    """A listener over ``auth`` (``DovecotAuthSettings`` overrides) on a socket of its own."""
    with short_dir() as tmp:
        async with running(auth, tmp / "auth-client", **settings) as srv:
            yield srv


@pytest.fixture
async def server(directory: Any) -> AsyncIterator[DovecotAuthServer]:
    await populate(directory)
    async with _listening(authenticator(directory), tcp=True) as srv:
        yield srv


async def _session(srv: DovecotAuthServer) -> Conn:
    assert srv.path is not None
    conn = await Conn.open(srv.path)
    await conn.play([*CLIENT_HELLO, *HANDSHAKE])
    return conn


async def _transcript(srv: DovecotAuthServer, script: list[str]) -> None:
    """Play ``script`` on a fresh connection after the handshake, then hang up."""
    conn = await _session(srv)
    await conn.play(script)
    await conn.close()


async def test_handshake_is_sent_at_connect_before_the_client_speaks(
    server: DovecotAuthServer,
) -> None:
    assert server.path is not None
    conn = await Conn.open(server.path)
    await conn.play(HANDSHAKE)  # nothing sent yet: Dovecot 2.3 behaviour, what Postfix expects
    await conn.close()


async def test_golden_plain_ok_returns_canonical_user(server: DovecotAuthServer) -> None:
    await _transcript(
        server,
        [
            f"C: AUTH\t1\tPLAIN\t{POSTFIX_PARAMS}\tresp={plain('Bob@Example.ORG', USERS.good_pw)}",
            "S: OK\t1\tuser=bob@example.org",
            f"C: AUTH\t2\tPLAIN\t{POSTFIX_PARAMS}\tresp={plain('bob@example.org', 'wrong')}",
            f"S: FAIL\t2\t{FAIL}",
            f"C: AUTH\t3\tPLAIN\t{POSTFIX_PARAMS}\tresp={plain(USERS.unknown, 'wrong')}",
            f"S: FAIL\t3\t{FAIL}",  # the same bytes as a wrong password
        ],
    )


async def test_cleartext_from_a_remote_peer_is_refused_by_default(
    server: DovecotAuthServer,
) -> None:
    """The default (``allow_cleartext_remote = false``, Dovecot's ``disable_plaintext_auth``):
    PLAIN/LOGIN without ``secured`` is answered like a wrong password unless the peer is
    loopback; what Postfix sends for a TLS session (``secured``) is accepted."""
    good = plain(USERS.good, USERS.good_pw)
    await _transcript(
        server,
        [
            f"C: AUTH\t1\tPLAIN\tservice=smtp\tlip=192.0.2.1\trip=192.0.2.7\tresp={good}",
            f"S: FAIL\t1\t{FAIL}",
            f"C: AUTH\t2\tLOGIN\tservice=smtp\trip=192.0.2.7\tresp={b64(b'bob@example.org')}",
            "S: CONT\t2\tUGFzc3dvcmQ6",
            f"C: CONT\t2\t{b64(USERS.good_pw.encode())}",
            f"S: FAIL\t2\t{FAIL}",
            f"C: AUTH\t3\tPLAIN\tservice=smtp\tresp={good}",  # no peer named: remote
            f"S: FAIL\t3\t{FAIL}",
            f"C: AUTH\t4\tPLAIN\tservice=smtp\trip=127.0.0.1\tresp={good}",
            "S: OK\t4\tuser=bob@example.org",
            f"C: AUTH\t5\tPLAIN\tservice=smtp\trip=::1\tresp={good}",
            "S: OK\t5\tuser=bob@example.org",
            f"C: AUTH\t6\tPLAIN\t{POSTFIX_PARAMS}\tresp={good}",  # TLS: Postfix adds secured
            "S: OK\t6\tuser=bob@example.org",
        ],
    )


async def test_golden_plain_without_initial_response(server: DovecotAuthServer) -> None:
    await _transcript(
        server,
        [
            f"C: AUTH\t1\tPLAIN\t{POSTFIX_PARAMS}",
            "S: CONT\t1\t",
            f"C: CONT\t1\t{plain(USERS.good, USERS.good_pw)}",
            "S: OK\t1\tuser=bob@example.org",
        ],
    )


async def test_golden_login(server: DovecotAuthServer) -> None:
    await _transcript(
        server,
        [
            f"C: AUTH\t2\tLOGIN\t{POSTFIX_PARAMS}",
            "S: CONT\t2\tVXNlcm5hbWU6",
            f"C: CONT\t2\t{b64(b'BOB@example.org')}",
            "S: CONT\t2\tUGFzc3dvcmQ6",
            f"C: CONT\t2\t{b64(USERS.good_pw.encode())}",
            "S: OK\t2\tuser=bob@example.org",
            # initial response = the user name: the first prompt is skipped
            f"C: AUTH\t3\tlogin\t{POSTFIX_PARAMS}\tresp={b64(b'bob@example.org')}",
            "S: CONT\t3\tUGFzc3dvcmQ6",
            f"C: CONT\t3\t{b64(b'nope')}",
            f"S: FAIL\t3\t{FAIL}",
        ],
    )


async def test_golden_failure_codes(server: DovecotAuthServer) -> None:
    await _transcript(
        server,
        [
            # right password, disabled account: Postfix ignores code=, Dovecot clients use it
            f"C: AUTH\t1\tPLAIN\t{POSTFIX_PARAMS}\tresp={plain(USERS.disabled, USERS.disabled_pw)}",
            f"S: FAIL\t1\tcode=user_disabled\t{FAIL}",
            # wrong password on a disabled account reveals nothing
            f"C: AUTH\t2\tPLAIN\t{POSTFIX_PARAMS}\tresp={plain(USERS.disabled, 'x')}",
            f"S: FAIL\t2\t{FAIL}",
            # not enabled for smtp
            f"C: AUTH\t3\tPLAIN\t{POSTFIX_PARAMS}\tresp={IMAP_ONLY}",
            f"S: FAIL\t3\tcode=user_disabled\t{FAIL}",
            # ... but fine for imap (Dovecot clients say protocol=)
            f"C: AUTH\t4\tPLAIN\tprotocol=imap\tsecured\tresp={IMAP_ONLY}",
            "S: OK\t4\tuser=dave@example.org",
            "C: AUTH\t5\tPLAIN\tservice=smtp\trip=127.0.0.1\tresp=!!!!",
            "S: FAIL\t5\tcode=invalid_base64\treason=Authentication failed",
            "C: AUTH\t6\tCRAM-MD5\tservice=smtp",
            "S: FAIL\t6\treason=Unsupported authentication mechanism",
            f"C: AUTH\t7\tPLAIN\t{POSTFIX_PARAMS}",
            "S: CONT\t7\t",
            "C: CONT\t7\tnot base64",
            "S: FAIL\t7\tcode=invalid_base64\treason=Authentication failed",
            "C: CONT\t99\tAA==",
            "S: FAIL\t99\treason=Authentication request timed out",
            # the connection is still usable after all of that
            f"C: AUTH\t8\tPLAIN\t{POSTFIX_PARAMS}\tresp={plain(USERS.good, USERS.good_pw)}",
            "S: OK\t8\tuser=bob@example.org",
        ],
    )


async def test_golden_malformed_sasl_is_a_plain_failure(server: DovecotAuthServer) -> None:
    await _transcript(
        server,
        [
            f"C: AUTH\t1\tPLAIN\t{POSTFIX_PARAMS}\tresp={NO_PASSWORD}",
            f"S: FAIL\t1\t{FAIL}",
            f"C: AUTH\t2\tPLAIN\t{POSTFIX_PARAMS}\tresp={EXTRA_NUL}",
            f"S: FAIL\t2\t{FAIL}",
            f"C: AUTH\t3\tPLAIN\t{POSTFIX_PARAMS}\tresp=",
            f"S: FAIL\t3\t{FAIL}",
        ],
    )


async def test_golden_authzid(server: DovecotAuthServer) -> None:
    await _transcript(
        server,
        [
            # an ordinary user may not act as someone else, even with the right password
            "C: AUTH\t1\tPLAIN\tservice=smtp\trip=127.0.0.1\tresp="
            + plain(USERS.good, USERS.good_pw, authzid=USERS.disabled),
            f"S: FAIL\t1\tcode=authz_fail\t{FAIL}",
            # authzid equal to the login is no impersonation (doveadm sends it like this)
            "C: AUTH\t2\tPLAIN\tservice=smtp\trip=127.0.0.1\tresp="
            + plain("Bob@example.org", USERS.good_pw, authzid="bob@EXAMPLE.org"),
            "S: OK\t2\tuser=bob@example.org",
            # a configured master user may
            "C: AUTH\t3\tPLAIN\tservice=smtp\trip=127.0.0.1\tresp="
            + plain(USERS.master, USERS.master_pw, authzid=USERS.good),
            "S: OK\t3\tuser=bob@example.org",
        ],
    )


async def test_tcp_listener(server: DovecotAuthServer) -> None:
    assert server.tcp_port
    conn = await Conn.open(server.tcp_port)
    await conn.play(
        [
            *CLIENT_HELLO,
            *HANDSHAKE,
            "C: AUTH\t1\tPLAIN\tservice=smtp\trip=127.0.0.1\t"
            f"resp={plain(USERS.good, USERS.good_pw)}",
            "S: OK\t1\tuser=bob@example.org",
        ]
    )
    await conn.close()


HYGIENE: list[tuple[str, list[str]]] = [
    ("no VERSION first", ["C: CPID\t1"]),
    ("bad major", ["C: VERSION\t2\t0"]),
    ("AUTH before CPID", ["C: VERSION\t1\t0", "C: AUTH\t1\tPLAIN\tservice=smtp"]),
    ("CPID twice", [*CLIENT_HELLO, "C: CPID\t1"]),
    ("unknown command", [*CLIENT_HELLO, "C: HELO\tx"]),
    ("bad id", [*CLIENT_HELLO, "C: AUTH\tx\tPLAIN\tservice=smtp"]),
    ("zero id", [*CLIENT_HELLO, "C: AUTH\t0\tPLAIN\tservice=smtp"]),
    ("no service", [*CLIENT_HELLO, "C: AUTH\t1\tPLAIN\tresp=AA=="]),
    ("params after resp", [*CLIENT_HELLO, "C: AUTH\t1\tPLAIN\tservice=smtp\tresp=\tsecured"]),
    (
        "duplicate id",
        [
            *CLIENT_HELLO,
            "C: AUTH\t1\tPLAIN\tservice=smtp",
            "S: CONT\t1\t",
            "C: AUTH\t1\tPLAIN\tservice=smtp",
        ],
    ),
    ("over-long line", [*CLIENT_HELLO, "C: AUTH\t1\tPLAIN\tservice=smtp\tx=" + "a" * MAX_LINE]),
    ("not UTF-8", [*CLIENT_HELLO, "C: AUTH\t1\tPLAIN\tservice=\udcff"]),
]


@pytest.mark.parametrize(("why", "script"), HYGIENE, ids=[h[0] for h in HYGIENE])
async def test_protocol_violations_disconnect(
    server: DovecotAuthServer, why: str, script: list[str]
) -> None:
    assert server.path is not None
    conn = await Conn.open(server.path)
    await conn.play(HANDSHAKE)
    for step in script:
        if step.startswith("S: "):
            await conn.play([step])
        else:
            await conn.send(step.removeprefix("C: ").encode("utf-8", "surrogateescape"))
    assert await conn.eof(), why
    await conn.close()


async def test_continue_while_verifying_disconnects(directory: Any) -> None:
    await populate(directory)
    async with _listening(authenticator(directory, failure_delay=1.0)) as srv:
        conn = await _session(srv)
        await conn.send(auth_plain(1, "bad"))
        await conn.send("CONT\t1\tAA==")
        t0 = time.monotonic()
        assert await conn.eof()
        assert time.monotonic() - t0 < 0.9  # at once, not after the failure delay
        await conn.close()


async def test_failure_delay_never_stalls_other_requests(directory: Any) -> None:
    await populate(directory)
    async with _listening(authenticator(directory, failure_delay=1.5)) as srv:
        conn = await _session(srv)
        t0 = time.monotonic()
        await conn.send(auth_plain(1, "bad"))
        await conn.send(auth_plain(2, "bad2"))
        await conn.send(auth_plain(3, USERS.good_pw))
        assert await conn.line() == "OK\t3\tuser=bob@example.org"
        assert time.monotonic() - t0 < 1.0
        replies = {await conn.line(), await conn.line()}
        assert replies == {f"FAIL\t1\t{FAIL}", f"FAIL\t2\t{FAIL}"}
        assert time.monotonic() - t0 >= 1.4  # the failures did wait
        await conn.close()


async def test_cancel_drops_the_reply(directory: Any) -> None:
    await populate(directory)
    async with _listening(authenticator(directory, failure_delay=0.5)) as srv:
        conn = await _session(srv)
        await conn.send(auth_plain(1, "bad"))
        await conn.send("CANCEL\t1")
        await conn.send("CANCEL\t77")  # unknown ids are ignored
        # an id may be reused once its request is gone
        await conn.send(auth_plain(1, USERS.good_pw))
        assert await conn.line() == "OK\t1\tuser=bob@example.org"
        with pytest.raises(TimeoutError):
            await conn.line(timeout=1.0)  # the cancelled FAIL never comes
        await conn.close()


async def test_idle_connection_is_closed(directory: Any) -> None:
    await populate(directory)
    async with _listening(authenticator(directory), idle_timeout=0.3) as srv:
        conn = await _session(srv)
        t0 = time.monotonic()
        assert await conn.eof(timeout=3.0)
        assert 0.2 <= time.monotonic() - t0 < 2.0
        await conn.close()


async def test_tempfail_closes_the_connection(directory: Any) -> None:
    """A TEMPFAIL (here: the authenticator refuses new work) is a close without a reply, which
    Postfix turns into 454 4.7.0."""
    await populate(directory)
    auth = authenticator(directory)
    async with _listening(auth) as srv:
        conn = await _session(srv)
        await auth.close()
        await conn.send(auth_plain(1, USERS.good_pw))
        assert await conn.eof()
        await conn.close()


async def test_logs_never_carry_passwords(
    server: DovecotAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    conn = await _session(server)
    secret_resp = plain(USERS.good, "Very-Secret-Pw-1")
    await conn.send(f"AUTH\t1\tPLAIN\tservice=smtp\trip=127.0.0.1\tresp={secret_resp}")
    assert await conn.line() == f"FAIL\t1\t{FAIL}"
    await conn.send(f"AUTH\t2\tPLAIN\tservice=smtp\trip=127.0.0.1\tresp={secret_resp}\tjunk")
    assert await conn.eof()
    await conn.close()
    text = caplog.text
    assert "protocol error" in text  # the disconnect was logged …
    assert "Very-Secret-Pw-1" not in text  # … without the password
    assert secret_resp not in text


async def test_server_close_ends_open_connections(directory: Any) -> None:
    await populate(directory)
    with short_dir() as tmp:
        auth = authenticator(directory)
        settings = DovecotAuthSettings(socket=SocketSettings(path=tmp / "a", mode=0o600))
        srv = DovecotAuthServer(settings, auth)
        await srv.start()
        path = srv.path
        assert path is not None
        assert path.exists()
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
        conn = await _session(srv)
        await srv.close()
        assert await conn.eof()
        assert not Path(path).exists()
        await conn.close()
        await auth.close()


# --- Dovecot's own client ---------------------------------------------------------------------


async def test_doveadm_auth_test(server: DovecotAuthServer) -> None:
    require_doveadm()
    assert server.path is not None
    rc, out = await doveadm_auth_test(server.path, "Bob@Example.ORG", USERS.good_pw)
    assert rc == 0, out
    assert "auth succeeded" in out
    assert "user=bob@example.org" in out  # the canonical name comes back

    rc_bad, out_bad = await doveadm_auth_test(server.path, USERS.good, "wrong")
    rc_unknown, out_unknown = await doveadm_auth_test(server.path, USERS.unknown, "wrong")
    assert rc_bad != 0
    assert "auth failed" in out_bad
    assert (rc_unknown, out_unknown.replace(USERS.unknown, "X")) == (
        rc_bad,
        out_bad.replace(USERS.good, "X"),
    )  # unknown user and wrong password are indistinguishable

    rc, out = await doveadm_auth_test(server.path, USERS.disabled, USERS.disabled_pw)
    assert rc != 0
    assert "auth failed" in out

    rc, out = await doveadm_auth_test(
        server.path, USERS.imap_only, USERS.imap_only_pw, "-x", "service=imap"
    )
    assert rc == 0, out
    assert "user=dave@example.org" in out


async def test_many_concurrent_clients(server: DovecotAuthServer) -> None:
    """40 connections x 10 requests, good and bad mixed: every answer is the right one."""
    assert server.path is not None
    path = server.path

    async def client(k: int) -> list[bool]:
        conn = await Conn.open(path)
        await conn.play([*CLIENT_HELLO, *HANDSHAKE])
        results = []
        for rid in range(1, 11):
            good = (k + rid) % 3 != 0
            pw = USERS.good_pw if good else f"bad-{k}-{rid}"
            await conn.send(auth_plain(rid, pw))
            line = await conn.line()
            expected = f"OK\t{rid}\tuser=bob@example.org" if good else f"FAIL\t{rid}\t{FAIL}"
            results.append(line == expected)
        await conn.close()
        return results

    outcomes = await asyncio.wait_for(asyncio.gather(*(client(k) for k in range(40))), 60)
    assert all(all(r) for r in outcomes)


def _perturb(rng: random.Random, text: str) -> str:
    """A near miss of ``text``: one character changed, added, dropped, or its case flipped."""
    i = rng.randrange(len(text))
    match rng.randrange(5):
        case 0:
            return text[:i] + rng.choice("aZ9.@\t\x01 é") + text[i + 1 :]
        case 1:
            return text[:i] + rng.choice("aZ9.@\t\x01 é") + text[i:]
        case 2:
            return text[:i] + text[i + 1 :]
        case 3:
            return text.swapcase()
        case _:
            return text


async def test_differential_fuzz_over_the_socket(server: DovecotAuthServer) -> None:
    """Seeded near-miss credentials through the real socket and Authenticator: OK comes back
    exactly when the password is the account's own and the login names the account (in any
    case) — the oracle is computed independently of the server."""
    assert server.path is not None
    rng = random.Random(4616)
    conn = await _session(server)
    for rid in range(1, 301):
        login = _perturb(rng, USERS.good) if rng.random() < 0.5 else USERS.good
        password = _perturb(rng, USERS.good_pw) if rng.random() < 0.5 else USERS.good_pw
        authzid = rng.choice(["", "", login, USERS.disabled])
        raw = f"{authzid}\0{login}\0{password}".encode()
        await conn.send(f"AUTH\t{rid}\tPLAIN\tservice=smtp\trip=127.0.0.1\tresp={b64(raw)}")
        reply = await conn.line()
        should_pass = (
            login.lower() == USERS.good
            and password == USERS.good_pw
            and authzid.lower() in ("", USERS.good)
        )
        if should_pass:
            assert reply == f"OK\t{rid}\tuser=bob@example.org", (login, authzid)
        else:
            assert reply.startswith(f"FAIL\t{rid}\t"), (login, password, authzid, reply)
    await conn.close()
