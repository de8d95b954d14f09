"""Helpers for the Dovecot auth-client tests: users in a real directory and a real Authenticator
(``tests/fixtures/authstack.py`` with this suite's users, master user and hasher), the listener on
a UNIX socket (+ TCP), and a ``C:``/``S:`` transcript runner.

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

from idsvc.auth.engine import Authenticator
from idsvc.config import DovecotAuthSettings, PasswordSettings, SocketSettings
from idsvc.passwords import PasswordHasher
from idsvc.wire.dovecot_auth import DovecotAuthServer
from tests.fixtures import authstack
from tests.fixtures.authstack import DOMAIN as DOMAIN  # re-exported for the tests
from tests.fixtures.authstack import AccountSpec
from tests.fixtures.authstack import which_or_fail as which_or_fail
from tests.fixtures.slapd import ssha
from tests.fixtures.swaks import swaks as swaks
from tests.fixtures.swaks import swaks_auth as swaks_auth

DOVEADM = "/usr/bin/doveadm"


@dataclass(frozen=True)
class Users(authstack.Users):
    """The common users (``bob`` is the good one) and a master user."""

    good: str = "bob@example.org"
    good_pw: str = "s3cret-Bob"
    master: str = "admin@example.org"
    master_pw: str = "s3cret-Admin"

    def accounts(self) -> list[AccountSpec]:
        return [*super().accounts(), (self.master, self.master_pw, True, None)]


USERS = Users()


def require_doveadm() -> None:
    authstack.require_file(DOVEADM, "doveadm (dovecot-core)")


def hasher() -> PasswordHasher:
    # the cheapest strong scheme for new hashes (the dummy verify); stored hashes are {SSHA}
    return PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT", sha_crypt_rounds=1000))


async def populate(directory: Any) -> Users:
    await authstack.populate(directory, USERS, ssha)
    return USERS


def authenticator(directory: Any, **auth: Any) -> Authenticator:
    """A real Authenticator; failure delay, penalties and cache off unless overridden."""
    return authstack.authenticator(directory, hasher(), **{"master_users": (USERS.master,), **auth})


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
    auth: Authenticator,
    path: Path,
    *,
    tcp: bool = False,
    mode: int = 0o666,
    group: str | None = None,
    **kw: Any,
) -> AsyncIterator[DovecotAuthServer]:
    settings = DovecotAuthSettings(
        socket=SocketSettings(path=path, mode=mode, group=group),
        tcp="127.0.0.1:0" if tcp else None,
        **kw,
    )
    async with authstack.serving(DovecotAuthServer(settings, auth), auth) as server:
        yield server


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def plain(authcid: str, password: str, authzid: str = "") -> str:
    return b64(f"{authzid}\0{authcid}\0{password}".encode())


def auth_plain(rid: int, password: str, login: str = USERS.good) -> str:
    """An ``AUTH`` line for PLAIN with the credentials as initial response, for smtp."""
    return f"AUTH\t{rid}\tPLAIN\tservice=smtp\trip=127.0.0.1\tresp={plain(login, password)}"


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
        "-x",
        "rip=127.0.0.1",  # no peer named would count as remote (cleartext refused)
        user,
        password,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")
