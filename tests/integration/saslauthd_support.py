"""Helpers shared by the saslauthd integration tests: users in a real directory and a real
Authenticator (``tests/fixtures/authstack.py`` with this suite's users and hasher), the listener
on a UNIX socket, and two clients (raw bytes, and ``testsaslauthd`` from the sasl2-bin package —
a client nobody here wrote).

Nothing here fakes the directory, the auth core or the peer.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from idsvc.auth.engine import Authenticator
from idsvc.config import PasswordSettings, SaslauthdSettings, SocketSettings
from idsvc.passwords import PasswordHasher
from idsvc.wire.saslauthd.server import SaslauthdServer
from tests.fixtures import authstack
from tests.fixtures.authstack import DOMAIN as DOMAIN  # re-exported for the tests
from tests.fixtures.authstack import Users
from tests.fixtures.authstack import which_or_fail as which_or_fail

TESTSASLAUTHD = "/usr/sbin/testsaslauthd"
USERS = Users(good="alice@example.org", good_pw="s3cret-Alice")


def require_testsaslauthd() -> None:
    authstack.require_file(TESTSASLAUTHD, "testsaslauthd (sasl2-bin)")


def hasher() -> PasswordHasher:
    # SHA512-CRYPT (5000 rounds) keeps the tests fast; the scheme does not matter to the socket
    return PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT"))


async def populate(directory: Any, pw: PasswordHasher | None = None) -> Users:
    """Create example.org with an enabled, a disabled and an IMAP-only account."""
    return await authstack.populate(directory, USERS, (pw or hasher()).hash)


def authenticator(directory: Any, **auth: Any) -> Authenticator:
    """A real Authenticator; failure delay, penalties and cache off unless overridden."""
    return authstack.authenticator(directory, hasher(), **auth)


@asynccontextmanager
async def running(
    path: Path, auth: Authenticator, *, mode: int = 0o666, group: str | None = None, **kw: Any
) -> AsyncIterator[SaslauthdServer]:
    settings = SaslauthdSettings(socket=SocketSettings(path=path, mode=mode, group=group), **kw)
    async with authstack.serving(SaslauthdServer(settings, auth), auth) as server:
        yield server


async def exchange(
    path: Path, payload: bytes, *, half_close: bool = False, timeout: float = 10.0
) -> bytes:
    """Send ``payload`` and read until the server closes; returns what it sent (b"" = nothing,
    including a reset: the server closed before reading everything)."""
    reader, writer = await asyncio.open_unix_connection(os.fspath(path))
    try:
        writer.write(payload)
        await writer.drain()
        if half_close:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), timeout)
    except (ConnectionResetError, BrokenPipeError):
        # the server hung up while unread request bytes were pending: no reply either
        return b""
    finally:
        writer.close()


async def run_testsaslauthd(
    path: Path, user: str, password: str, *, realm: str | None = None, service: str = "smtp"
) -> str:
    """Run the real ``testsaslauthd`` (without blocking the loop the server runs in)."""
    argv = [TESTSASLAUTHD, "-f", os.fspath(path), "-u", user, "-p", password, "-s", service]
    if realm is not None:
        argv += ["-r", realm]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return out.decode(errors="replace").strip()
