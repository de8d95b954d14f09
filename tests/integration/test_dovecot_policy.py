"""The Dovecot auth-policy endpoint with a real Dovecot 2.3 (``auth_policy_server_url``): Dovecot
verifies passwords itself (passwd-file) and feeds its results into idsvc's penalty tracker; the
penalty idsvc holds for a network — from Dovecot's reports or from any idsvc socket — comes back
as a tarpit (or, with ``reject_at_max``, a refusal)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idsvc.auth.engine import Authenticator
from idsvc.auth.request import AuthRequest
from idsvc.config import AuthSettings
from idsvc.directory.sqlite import SqliteDirectory
from idsvc.model import Secret
from idsvc.wire.mailhttp.server import MailHttpServer
from tests.fixtures.dovecot import DOVEADM, DovecotServer
from tests.integration.dovecot_auth_support import populate, short_dir
from tests.integration.mailhttp_support import USERS, authenticator, raw_request, serve_policy

ALICE, ALICE_PW = "alice@example.org", "pw-Alice"
SECRET = "pol-s3cret"
PASSDB = "passdb {{\n  driver = passwd-file\n  args = {path}\n}}"
USERDB = "userdb {\n  driver = static\n  args = uid=dovecot gid=dovecot home=/nonexistent\n}"
POLICY = """\
auth_policy_server_url = http://127.0.0.1:{port}/policy
auth_policy_hash_nonce = test-nonce
auth_policy_server_api_header = X-Idsvc-Secret: {secret}
"""
PENALTY = {"penalty": True, "penalty_max": 4.0}


@dataclass
class Stack:
    auth: Authenticator
    idsvc: MailHttpServer
    dovecot: DovecotServer

    async def login(self, password: str, rip: str) -> tuple[bool, float]:
        """``doveadm auth test`` from ``rip``: (succeeded, seconds taken)."""
        started = time.monotonic()
        rc, _out = await asyncio.to_thread(
            self.dovecot.doveadm,
            "auth",
            "test",
            "-x",
            "service=imap",
            "-x",
            f"rip={rip}",
            ALICE,
            password,
        )
        return rc == 0, time.monotonic() - started


async def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Dovecot sends its report after it has answered doveadm: wait for it to land."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _passwd_file(tmp: Path) -> Path:
    hashed = subprocess.run(
        [DOVEADM, "pw", "-s", "SHA512-CRYPT", "-p", ALICE_PW],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    path = tmp / "users.passwd"
    path.write_text(f"{ALICE}:{hashed}::::::\n", encoding="utf-8")
    path.chmod(0o644)
    return path


@asynccontextmanager
async def _stack(
    directory: SqliteDirectory, *, secret: str = SECRET, **policy: Any
) -> AsyncIterator[Stack]:
    await populate(directory)
    auth = authenticator(directory, **PENALTY)
    with short_dir() as tmp:
        async with serve_policy(auth, AuthSettings(**PENALTY), secret=SECRET, **policy) as srv:
            assert srv.port is not None
            dovecot = DovecotServer(
                PASSDB.format(path=_passwd_file(tmp)) + "\n" + USERDB,
                extra=POLICY.format(port=srv.port, secret=secret) + "auth_failure_delay = 0\n",
            )
            await asyncio.to_thread(dovecot.start)
            try:
                yield Stack(auth, srv, dovecot)
            finally:
                await asyncio.to_thread(dovecot.cleanup)


async def test_dovecot_reports_feed_penalties_and_the_penalty_tarpits(
    embedded_directory: SqliteDirectory,
) -> None:
    async with _stack(embedded_directory) as stack:
        ok, _ = await stack.login(ALICE_PW, "192.0.2.20")
        assert ok, stack.dovecot.tail(50_000)
        assert stack.auth.penalties.sizes() == (0, 0)
        for _ in range(2):
            ok, _ = await stack.login("wrong", "192.0.2.20")
            assert not ok
        penalties = stack.auth.penalties
        assert await _eventually(lambda: penalties.delay("192.0.2.20") == 2.0)  # two reports
        assert penalties.delay(None, (ALICE,)) == 2.0
        ok, took = await stack.login(ALICE_PW, "192.0.2.20")
        assert ok
        assert took >= 2.0  # tarpitted by Dovecot on our say-so
        log = stack.dovecot.tail(50_000)
        assert "Policy check action is tarpit 2 second(s)" in log
        # the success cleared the account's count, not the network's
        assert await _eventually(lambda: penalties.delay(None, (ALICE,)) == 0.0)
        assert penalties.delay("192.0.2.20") == 2.0
        ok, took = await stack.login(ALICE_PW, "192.0.2.21")  # another network: no tarpit
        assert ok
        assert took < 2.0


async def test_failures_seen_by_idsvc_sockets_tarpit_dovecot_logins(
    embedded_directory: SqliteDirectory,
) -> None:
    async with _stack(embedded_directory) as stack:
        for _ in range(3):  # e.g. an SMTP AUTH password spray through Postfix → idsvc
            await stack.auth.authenticate(
                AuthRequest(USERS.good, Secret("wrong"), "smtp", remote_ip="192.0.2.30")
            )
        assert stack.auth.penalties.delay("192.0.2.30") == 4.0
        ok, took = await stack.login(ALICE_PW, "192.0.2.30")
        assert ok
        assert took >= 4.0
        assert "Policy check action is tarpit 4 second(s)" in stack.dovecot.tail(50_000)


async def test_reject_at_max_refuses_a_saturated_network(
    embedded_directory: SqliteDirectory,
) -> None:
    async with _stack(embedded_directory, reject_at_max=True) as stack:
        for _ in range(3):
            await stack.auth.authenticate(
                AuthRequest(USERS.good, Secret("wrong"), "smtp", remote_ip="192.0.2.40")
            )
        ok, _ = await stack.login(ALICE_PW, "192.0.2.40")
        assert not ok  # refused before the password is looked at
        log = stack.dovecot.tail(50_000)
        assert "Policy check action is drop connection" in log
        assert "Too many failed logins" in log
        ok, _ = await stack.login(ALICE_PW, "192.0.2.41")
        assert ok


async def test_wrong_api_header_is_refused_and_dovecot_carries_on(
    embedded_directory: SqliteDirectory,
) -> None:
    async with _stack(embedded_directory, secret="not-the-secret") as stack:
        ok, _ = await stack.login("wrong", "192.0.2.50")
        assert not ok
        ok, _ = await stack.login(ALICE_PW, "192.0.2.50")
        assert ok  # auth_policy_reject_on_fail = no (Dovecot's default)
        assert stack.auth.penalties.sizes() == (0, 0)  # nothing forged got in
        assert "Policy server HTTP error: 403" in stack.dovecot.tail(50_000)


async def test_malformed_policy_requests(embedded_directory: SqliteDirectory) -> None:
    await populate(embedded_directory)
    auth = authenticator(embedded_directory, **PENALTY)
    async with serve_policy(auth, AuthSettings(**PENALTY)) as srv:

        def post(query: str, body: bytes) -> bytes:
            return (
                f"POST /policy{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body

        cases = [
            ("?command=allow", b"not json", 400),
            ("?command=allow", b"[1, 2]", 400),
            ("?command=allow", b'{"login": 5}', 400),
            ("?command=report", b'{"login": "a@b.c", "success": "yes"}', 400),
            ("?command=delete", b"{}", 400),
            ("", b"{}", 400),
            ("?command=allow&command=report", b"{}", 400),
            ("?command=allow", b"[" * 100_000, 413),
            ("?command=allow", b"[" * 5_000 + b"]" * 5_000, 400),
            ("?command=allow", b'{"login": "x", "remote": "198.51.100.1"}', 200),
            ("?command=report", b'{"login": "\\u0000", "remote": "::1", "success": false}', 200),
        ]
        for query, body, status in cases:
            reply = await raw_request(srv, post(query, body))
            assert reply.status == status, (query, body[:40], reply.raw[:200])
            if status == 200:
                assert json.loads(reply.body) == {"status": 0, "msg": ""}
        assert auth.penalties.sizes() == (1, 0)  # only the one well-formed failure report


async def test_nothing_is_recorded_for_policy_rejects(
    embedded_directory: SqliteDirectory,
) -> None:
    await populate(embedded_directory)
    auth = authenticator(embedded_directory, **PENALTY)
    async with serve_policy(auth, AuthSettings(**PENALTY)) as srv:
        body = b'{"login": "a@b.c", "remote": "192.0.2.1", "success": false, "policy_reject": true}'
        reply = await raw_request(
            srv,
            b"POST /policy?command=report HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body,
        )
    assert reply.status == 200
    assert auth.penalties.sizes() == (0, 0)
