"""Helpers for the mail HTTP listener tests (nginx ``auth_http``, Dovecot auth-policy and Lua):
the common users in a real store, a real Authenticator and a ``MailHttpServer`` on a UNIX socket
or loopback TCP, plus a raw HTTP client that can send anything (forged and malformed requests).

Nothing here fakes the directory, the auth core or the peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from idsvc.auth.engine import Authenticator
from idsvc.config import (
    AuthSettings,
    DovecotLuaSettings,
    DovecotPolicySettings,
    NginxAuthSettings,
)
from idsvc.lookups import MailLookups
from idsvc.wire.mailhttp.lua import LuaPassdbHandler, LuaUserdbHandler
from idsvc.wire.mailhttp.nginx import NginxAuthHandler
from idsvc.wire.mailhttp.policy import DovecotPolicyHandler
from idsvc.wire.mailhttp.server import MailHttpServer, Routes
from tests.fixtures import authstack
from tests.fixtures.dovecot import DovecotServer
from tests.integration.dovecot_auth_support import USERS, hasher

__all__ = ["USERS", "HttpReply", "raw_request", "serve_lua", "serve_nginx", "serve_policy"]


SCRIPT = Path(__file__).resolve().parents[2] / "contrib" / "dovecot" / "idsvc.lua"
LUA_DB = "{kind} {{\n  driver = lua\n  args = file={script} blocking=yes\n}}"


def require_lua() -> None:
    authstack.require_file("/usr/lib/dovecot/modules/auth/libauthdb_lua.so", "dovecot-auth-lua")
    authstack.require_file("/usr/lib/x86_64-linux-gnu/lua/5.4/socket/unix.so", "lua-socket")
    authstack.require_file("/usr/lib/x86_64-linux-gnu/lua/5.4/cjson.so", "lua-cjson")


def lua_dovecot(tmp: Path, url: str) -> DovecotServer:
    """A Dovecot serving IMAP/POP3 (not started) whose passdb and userdb are the shipped
    idsvc.lua, copied unchanged into ``tmp`` with its settings in idsvc.conf.lua beside it."""
    script = tmp / "idsvc.lua"
    shutil.copy(SCRIPT, script)
    (tmp / "idsvc.conf.lua").write_text(f'return {{ url = "{url}", timeout = 10 }}\n')
    blocks = LUA_DB.format(kind="passdb", script=script) + "\n"
    blocks += LUA_DB.format(kind="userdb", script=script)
    return DovecotServer(blocks, extra="auth_debug = yes\n", mail=True)


def authenticator(directory: Any, **auth: Any) -> Authenticator:
    return authstack.authenticator(directory, hasher(), **auth)


def _listen(tmp: Path | None, name: str) -> str:
    return f"unix:{tmp / name}" if tmp is not None else "127.0.0.1:0"


@asynccontextmanager
async def serve_nginx(
    auth: Authenticator, tmp: Path | None, **settings: Any
) -> AsyncIterator[MailHttpServer]:
    values: dict[str, Any] = {
        "enabled": True,
        "mode": 0o666,
        "imap_backend": "127.0.0.1:1143",
        "pop3_backend": "127.0.0.1:1110",
        "smtp_backend": "127.0.0.1:1025",
        "listen": _listen(tmp, "nginx-auth"),
        **settings,
    }
    s = NginxAuthSettings(**values)
    server = MailHttpServer("nginx-auth", s, {"/auth": {"GET": NginxAuthHandler(s, auth)}})
    async with authstack.serving(server, auth) as srv:
        yield srv


@asynccontextmanager
async def serve_policy(
    auth: Authenticator, auth_settings: AuthSettings, tmp: Path | None = None, **settings: Any
) -> AsyncIterator[MailHttpServer]:
    values: dict[str, Any] = {"enabled": True, "listen": _listen(tmp, "policy"), **settings}
    s = DovecotPolicySettings(**values)
    handler = DovecotPolicyHandler(s, auth_settings, auth.penalties)
    server = MailHttpServer("dovecot-policy", s, {"/policy": {"POST": handler}})
    async with authstack.serving(server, auth) as srv:
        yield srv


@asynccontextmanager
async def serve_lua(
    auth: Authenticator, lookups: MailLookups, tmp: Path | None, **settings: Any
) -> AsyncIterator[MailHttpServer]:
    values: dict[str, Any] = {
        "enabled": True,
        "mode": 0o666,
        "listen": _listen(tmp, "lua"),
        **settings,
    }
    s = DovecotLuaSettings(**values)
    routes: Routes = {
        "/passdb": {"POST": LuaPassdbHandler(auth)},
        "/userdb": {"POST": LuaUserdbHandler(lookups)},
    }
    server = MailHttpServer("dovecot-lua", s, routes)
    async with authstack.serving(server, auth) as srv:
        yield srv


class HttpReply:
    """A parsed response: status, lower-cased headers (last wins), body; status 0 = no reply."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n") if head else []
        self.status = int(lines[0].split(" ")[1]) if lines and lines[0] else 0
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]

    def get(self, name: str) -> str | None:
        return self.headers.get(name.lower())


async def open_conn(server: MailHttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if server.path is not None:
        return await asyncio.open_unix_connection(os.fspath(server.path))
    assert server.port is not None
    return await asyncio.open_connection("127.0.0.1", server.port)


async def raw_request(server: MailHttpServer, data: bytes, timeout: float = 30.0) -> HttpReply:
    """Send ``data`` as is, read until the server closes, parse what came back."""
    reader, writer = await open_conn(server)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return HttpReply(raw)


def nginx_request(
    user: str,
    password: str,
    *,
    protocol: str = "imap",
    attempt: int = 1,
    client_ip: str = "192.0.2.10",
    method: str = "plain",
    extra: str = "",
    ssl: bool = True,
) -> bytes:
    """A request exactly as nginx's ngx_mail_auth_http_module writes it (HTTP/1.0, no body);
    ``ssl``: the client's session is TLS (nginx then sends ``Auth-SSL: on``)."""
    tls = "Auth-SSL: on\r\n" if ssl else ""
    return (
        "GET /auth HTTP/1.0\r\n"
        "Host: localhost\r\n"
        f"Auth-Method: {method}\r\n"
        f"Auth-User: {user}\r\n"
        f"Auth-Pass: {password}\r\n"
        f"Auth-Protocol: {protocol}\r\n"
        f"Auth-Login-Attempt: {attempt}\r\n"
        f"Client-IP: {client_ip}\r\n"
        "Client-Host: [UNAVAILABLE]\r\n"
        f"{tls}"
        f"{extra}"
        "\r\n"
    ).encode("latin-1")
