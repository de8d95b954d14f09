"""Helpers shared by the saslauthd integration tests: users in a real directory, a real
Authenticator, the listener on a UNIX socket, and two clients (raw bytes, and ``testsaslauthd``
from the sasl2-bin package — a client nobody here wrote).

Nothing here fakes the directory, the auth core or the peer.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from idsvc.audit import LogAuditSink
from idsvc.auth.engine import Authenticator
from idsvc.config import AuthSettings, PasswordSettings, SaslauthdSettings, SocketSettings
from idsvc.model import Account, Address, Domain, Service
from idsvc.passwords import PasswordHasher
from idsvc.wire.saslauthd.server import SaslauthdServer

TESTSASLAUTHD = "/usr/sbin/testsaslauthd"
DOMAIN = "example.org"


@dataclass(frozen=True)
class Users:
    """Accounts created by :func:`populate` and their passwords."""

    good: str = "alice@example.org"
    good_pw: str = "s3cret-Alice"
    disabled: str = "carol@example.org"
    disabled_pw: str = "s3cret-Carol"
    imap_only: str = "dave@example.org"
    imap_only_pw: str = "s3cret-Dave"
    unknown: str = "nobody@example.org"


USERS = Users()


def require_testsaslauthd() -> None:
    if Path(TESTSASLAUTHD).exists():
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("testsaslauthd (sasl2-bin) is required under CI=true")
    pytest.skip("testsaslauthd (sasl2-bin) not installed")


def hasher() -> PasswordHasher:
    # SHA512-CRYPT (5000 rounds) keeps the tests fast; the scheme does not matter to the socket
    return PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT"))


async def populate(directory: Any, pw: PasswordHasher | None = None) -> Users:
    """Create example.org with an enabled, a disabled and an IMAP-only account."""
    pw = pw or hasher()
    await directory.add_domain(Domain(name=DOMAIN))
    await directory.add_account(
        Account(address=Address.parse(USERS.good), password_hash=pw.hash(USERS.good_pw))
    )
    await directory.add_account(
        Account(
            address=Address.parse(USERS.disabled),
            password_hash=pw.hash(USERS.disabled_pw),
            enabled=False,
        )
    )
    await directory.add_account(
        Account(
            address=Address.parse(USERS.imap_only),
            password_hash=pw.hash(USERS.imap_only_pw),
            services=frozenset({Service.IMAP}),
        )
    )
    return USERS


def authenticator(directory: Any, **auth: Any) -> Authenticator:
    """A real Authenticator; failure delay, penalties and cache off unless overridden."""
    values: dict[str, Any] = {"failure_delay": 0.0, "penalty": False, "cache": False}
    values.update(auth)
    return Authenticator(directory, hasher(), AuthSettings(**values), audit=LogAuditSink())


@asynccontextmanager
async def running(
    path: Path, auth: Authenticator, *, mode: int = 0o666, group: str | None = None, **kw: Any
) -> AsyncIterator[SaslauthdServer]:
    settings = SaslauthdSettings(socket=SocketSettings(path=path, mode=mode, group=group), **kw)
    server = SaslauthdServer(settings, auth)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
        await auth.close()


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


def which_or_fail(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{name} is required under CI=true")
    pytest.skip(f"{name} not installed")
