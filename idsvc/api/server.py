"""``ApiServer``: runs the API with uvicorn inside the ``idsvc serve`` event loop.

What it does: opens the state store (unless one is handed in), creates a bootstrap admin token
when the store holds no token at all and writes it to ``api.bootstrap_token_file`` (file 0600,
parent directory 0700; the log names the path, never the token), builds the app and serves it on
``api.listen``: ``host:port`` / ``[v6]:port`` (port 0 picks a free one, see ``url``) or
``unix:/path``; TLS when ``api.tls_cert`` and ``api.tls_key`` are set. The socket is bound by
``idsvc.wire.listen`` before uvicorn runs: a UNIX socket gets mode 0660 before ``listen()`` and a
stale socket file left by a crash is replaced, a live one is not.

What it does not do: install signal handlers (``idsvc serve`` owns them) or configure logging
(uvicorn's own log config is disabled; its access log is off because paths carry addresses).

How it fails: a bad ``listen`` value or unusable TLS files raise ``ConfigError``; a port in use
raises ``ConfigError`` from ``start()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from idsvc.api.app import create_app
from idsvc.config import Settings, SocketSettings
from idsvc.errors import ConfigError
from idsvc.state import Scope, StateStore, create_token
from idsvc.wire.listen import BoundSocket, ListenError, bind_tcp, bind_unix

if TYPE_CHECKING:
    from idsvc.runtime import Runtime

log = logging.getLogger(__name__)

START_TIMEOUT = 15.0
CLOSE_GRACE = 0.05
UNIX_MODE = 0o660


async def _serve_or_fail(server: uvicorn.Server, bound: BoundSocket) -> None:
    """uvicorn calls ``sys.exit()`` when it cannot start; inside our event loop that SystemExit
    would end the whole process past every handler, so turn it into an ordinary error."""
    try:
        await server.serve(sockets=[bound.sock])
    except SystemExit as exc:
        raise OSError(f"uvicorn stopped during start-up (exit code {exc.code})") from None


def parse_listen(listen: str) -> tuple[str, int] | Path:
    """``(host, port)`` for TCP or a ``Path`` for ``unix:/path``."""
    if listen.startswith("unix:"):
        path = Path(listen[5:])
        if not path.is_absolute():
            raise ConfigError(f"api.listen: UNIX socket path must be absolute: {listen!r}")
        return path
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535 or not host:
        raise ConfigError(f"api.listen: expected host:port or unix:/path, got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


async def write_bootstrap_token(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` (0600) atomically; the parent is created 0700."""

    def write() -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (token + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    await asyncio.get_running_loop().run_in_executor(None, write)


async def ensure_bootstrap_token(state: StateStore, path: Path) -> bool:
    """Create and write an admin token when the store has never held a token. True if created."""
    if await state.token_count(active_only=False) > 0:
        return False
    _, plaintext = await create_token(
        state, name="bootstrap", scope=Scope.ADMIN, created_by="bootstrap"
    )
    await write_bootstrap_token(path, plaintext)
    log.warning("created a bootstrap admin token in %s (read it, then keep it safe)", path)
    return True


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: ``idsvc serve`` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer:
    """A ``Listener`` for ``idsvc serve``."""

    name = "api"

    def __init__(self, settings: Settings, runtime: Runtime, state: StateStore | None = None):
        self.settings = settings
        self.runtime = runtime
        self.state = state
        self._own_state = state is None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url: str | None = None
        self.path: Path | None = None
        self.app: FastAPI | None = None
        self._bound: BoundSocket | None = None

    def _config(self, state: StateStore) -> uvicorn.Config:
        api = self.settings.api
        if (api.tls_cert is None) != (api.tls_key is None):
            raise ConfigError("api.tls_cert and api.tls_key must be given together")
        app = self.app = create_app(self.settings, self.runtime, state)
        return uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            ssl_certfile=None if api.tls_cert is None else str(api.tls_cert),
            ssl_keyfile=None if api.tls_key is None else str(api.tls_key),
            h11_max_incomplete_event_size=16 * 1024,
            timeout_keep_alive=15,
        )

    def _bind(self) -> BoundSocket:
        """Bind before uvicorn runs: a UNIX socket gets its mode before ``listen()`` and a stale
        socket file is replaced (``idsvc.wire.listen``); errors are ConfigError, not exits."""
        where = parse_listen(self.settings.api.listen)
        try:
            if isinstance(where, Path):
                return bind_unix(SocketSettings(path=where, mode=UNIX_MODE))
            return bind_tcp(self.settings.api.listen)
        except ListenError as exc:
            raise ConfigError(f"api: {exc}") from exc

    async def start(self) -> None:
        if self.state is None:
            self.state = await StateStore.open_for(self.settings)
        await ensure_bootstrap_token(self.state, self.settings.api.bootstrap_token_file)
        config = self._config(self.state)
        try:
            config.load()  # TLS files are read here
        except (OSError, ValueError) as exc:
            raise ConfigError(f"api: cannot load TLS or app configuration: {exc}") from exc
        bound = self._bound = self._bind()
        server = _Server(config)
        self._server = server
        self._task = asyncio.create_task(_serve_or_fail(server, bound), name="idsvc-api")
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while not server.started:
            if self._task.done():
                with contextlib.suppress(BaseException):
                    self._task.result()
                self._task = None
                await self.close()
                raise ConfigError(f"api: could not serve on {self.settings.api.listen}")
            if asyncio.get_running_loop().time() > deadline:
                await self.close()
                raise ConfigError(f"api: not listening after {START_TIMEOUT} s")
            await asyncio.sleep(0.02)
        if bound.path is not None:
            self.path = bound.path
            self.url = f"unix:{bound.path}"
        else:
            scheme = "https" if self.settings.api.tls_cert else "http"
            host = f"[{bound.host}]" if bound.host and ":" in bound.host else bound.host
            self.url = f"{scheme}://{host}:{bound.port}"
        if self.settings.web.enabled:
            log.info("admin console: %s/admin  self-service: %s/account", self.url, self.url)

    async def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await self._task
            self._task = None
            # connections that never reached HTTP (a failed TLS handshake) are not tracked by
            # uvicorn; give their transports a moment to run the close callbacks
            await asyncio.sleep(CLOSE_GRACE)
        self._server = None
        if self._bound is not None:
            self._bound.sock.close()  # already closed by uvicorn unless start-up failed
            self._bound.remove_path()
            self._bound = None
        if self.app is not None:
            self.app.state.idsvc.close()
        if self._own_state and self.state is not None:
            await self.state.close()
            self.state = None
