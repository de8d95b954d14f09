"""Helpers for the Dovecot auth-client tests (no tests here): users in a real directory, a real
Authenticator, the listener on a UNIX socket (+ TCP), and a ``C:``/``S:`` transcript runner.

Nothing here fakes the directory, the auth core or the peer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from idsvc.audit import LogAuditSink
from idsvc.auth.engine import Authenticator
from idsvc.config import AuthSettings, DovecotAuthSettings, PasswordSettings, SocketSettings
from idsvc.model import Account, Address, Domain, Service
from idsvc.passwords import PasswordHasher
from idsvc.wire.dovecot_auth import DovecotAuthServer
from tests.fixtures.slapd import ssha

DOVEADM = "/usr/bin/doveadm"
DOMAIN = "example.org"


@dataclass(frozen=True)
class Users:
    good: str = "bob@example.org"
    good_pw: str = "s3cret-Bob"
    disabled: str = "carol@example.org"
    disabled_pw: str = "s3cret-Carol"
    imap_only: str = "dave@example.org"
    imap_only_pw: str = "s3cret-Dave"
    master: str = "admin@example.org"
    master_pw: str = "s3cret-Admin"
    unknown: str = "nobody@example.org"


USERS = Users()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_doveadm() -> None:
    if Path(DOVEADM).exists():
        return
    if in_ci():
        pytest.fail("doveadm (dovecot-core) is required under CI=true")
    pytest.skip("doveadm (dovecot-core) not installed")


def hasher() -> PasswordHasher:
    # the cheapest strong scheme for new hashes (the dummy verify); stored hashes are {SSHA}
    return PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT", sha_crypt_rounds=1000))


async def populate(directory: Any) -> Users:
    await directory.add_domain(Domain(name=DOMAIN))
    for address, password, enabled, services in [
        (USERS.good, USERS.good_pw, True, None),
        (USERS.disabled, USERS.disabled_pw, False, None),
        (USERS.imap_only, USERS.imap_only_pw, True, frozenset({Service.IMAP})),
        (USERS.master, USERS.master_pw, True, None),
    ]:
        kwargs: dict[str, Any] = {} if services is None else {"services": services}
        await directory.add_account(
            Account(
                address=Address.parse(address),
                password_hash=ssha(password),
                enabled=enabled,
                **kwargs,
            )
        )
    return USERS


def authenticator(directory: Any, **auth: Any) -> Authenticator:
    """A real Authenticator; failure delay, penalties and cache off unless overridden."""
    values: dict[str, Any] = {
        "failure_delay": 0.0,
        "penalty": False,
        "cache": False,
        "master_users": (USERS.master,),
    }
    values.update(auth)
    return Authenticator(directory, hasher(), AuthSettings(**values), audit=LogAuditSink())


@contextmanager
def short_dir() -> Iterator[Path]:
    """A short directory for sockets (UNIX paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="idsvc-dva-"))
    os.chmod(path, 0o755)  # noqa: S103 - other users (postfix, dovecot) may need to reach it
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def running(
    auth: Authenticator, path: Path, *, tcp: bool = False, **kw: Any
) -> AsyncIterator[DovecotAuthServer]:
    settings = DovecotAuthSettings(
        socket=SocketSettings(path=path, mode=0o666),
        tcp="127.0.0.1:0" if tcp else None,
        **kw,
    )
    server = DovecotAuthServer(settings, auth)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
        await auth.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def plain(authcid: str, password: str, authzid: str = "") -> str:
    return b64(f"{authzid}\0{authcid}\0{password}".encode())


HANDSHAKE = [
    "S: VERSION\t1\t2",
    "S: MECH\tPLAIN\tplaintext",
    "S: MECH\tLOGIN\tplaintext",
    "S: SPID\t<num>",
    "S: CUID\t<num>",
    "S: COOKIE\t<hex32>",
    "S: DONE",
]
CLIENT_HELLO = ["C: VERSION\t1\t0", "C: CPID\t4242"]
_PLACEHOLDERS = {"<num>": r"[0-9]+", "<hex32>": r"[0-9a-f]{32}"}


def _pattern(expected: str) -> re.Pattern[str]:
    parts = re.split(r"(<num>|<hex32>)", expected)
    return re.compile("".join(_PLACEHOLDERS.get(p, re.escape(p)) for p in parts))


class Conn:
    """A raw client connection that plays ``C:`` lines and checks ``S:`` lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, target: Path | int) -> Conn:
        if isinstance(target, int):
            reader, writer = await asyncio.open_connection("127.0.0.1", target)
        else:
            reader, writer = await asyncio.open_unix_connection(os.fspath(target))
        return cls(reader, writer)

    async def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode()
        self.writer.write(data + b"\n")
        await self.writer.drain()

    async def line(self, timeout: float = 10.0) -> str:
        raw = await asyncio.wait_for(self.reader.readline(), timeout)
        return raw.decode().rstrip("\n") if raw else "<EOF>"

    async def play(self, script: list[str], timeout: float = 10.0) -> None:
        for step in script:
            who, _, text = step.partition(": ")
            if who == "C":
                await self.send(text)
            elif who == "S":
                got = await self.line(timeout)
                assert _pattern(text).fullmatch(got), f"expected {text!r}, got {got!r}"
            else:
                raise ValueError(f"bad transcript step {step!r}")

    async def eof(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (without sending anything more)."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), timeout)
        except (ConnectionError, OSError):
            return True
        assert rest == b"", f"unexpected bytes before close: {rest!r}"
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def doveadm_auth_test(
    socket_path: Path, user: str, password: str, *extra: str
) -> tuple[int, str]:
    """``doveadm auth test -a <socket> USER PASS`` (Dovecot's own auth client)."""
    proc = await asyncio.create_subprocess_exec(
        DOVEADM,
        "auth",
        "test",
        "-a",
        os.fspath(socket_path),
        *(extra or ("-x", "service=smtp")),  # doveadm's default service is "doveadm"
        user,
        password,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


# --- swaks against a real Postfix ---------------------------------------------------------------

_SMTP_CODE = re.compile(r"^<~\*?\s+(\d{3})[ -]", re.MULTILINE)


def which_or_fail(name: str) -> str:
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if found:
        return found
    if in_ci():
        pytest.fail(f"{name} is required under CI=true")
    pytest.skip(f"{name} not installed")


async def swaks(host: str, port: int, *args: str) -> str:
    """Run swaks over STARTTLS against ``host:port`` (a bounded run) and return its transcript."""
    argv = [
        which_or_fail("swaks"), "--server", f"{host}:{port}", "-tls",
        "--ehlo", "client.idsvc.test", "--from", "sender@idsvc.test", "--timeout", "20", *args,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode(errors="replace")


async def swaks_auth(
    host: str, port: int, user: str, password: str, mech: str = "PLAIN", *, quit_after: str = "AUTH"
) -> tuple[int, str]:
    """SMTP AUTH with swaks; (the final AUTH reply code, transcript)."""
    out = await swaks(
        host, port, "--to", "someone@remote.example", "--auth", mech,
        "--auth-user", user, "--auth-password", password, "--quit-after", quit_after,
    )  # fmt: skip
    after = out.split("~> AUTH", 1)[-1]
    codes = [int(c) for c in _SMTP_CODE.findall(after) if c != "334"]
    assert codes, out
    return codes[0], out
