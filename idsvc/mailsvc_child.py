"""``[mailsvc] enabled = true``: ``idsvc serve`` also runs the mailsvc SMTP front end, as a child
process (``python -m mailsvc serve``), for the one-command quick start.

Why a child process and not in-process: mailsvc is a separate program that talks to idsvc only
through its public sockets (Dovecot auth-client, socketmap), exactly as it does when deployed on
another host; a child keeps that boundary honest (no shared imports or event loop), keeps a crash
or a blocked disk in one from stalling the other, and leaves one mailsvc however idsvc is split
into worker processes.

Configuration: ``[mailsvc] config`` names mailsvc's own TOML file, which then decides everything.
Without it, the child gets idsvc's socket paths and ``mail.vmail_root`` through ``MAILSVC_*``
variables, so nothing needs configuring twice. Its log lines go to idsvc's stderr.

How it fails: the socketmap socket disabled without a mailsvc config file, or a child that exits
during its first second (bad configuration, port in use), fails the start (``ConfigError`` /
``StartError``-like ``IdsvcError``); a child that dies later is logged, not restarted (the service
manager restarts idsvc). ``close()`` sends SIGTERM and waits, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

from idsvc.config import Settings
from idsvc.errors import ConfigError, IdsvcError

log = logging.getLogger("idsvc.mailsvc")

START_GRACE = 1.0  # seconds the child must survive for the start to count
STOP_GRACE = 10.0


class MailsvcChild:
    name = "mailsvc"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closing = False

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.settings.mailsvc.config is not None:
            return env
        s = self.settings
        if not s.socketmap.socket.enabled:
            raise ConfigError(
                "mailsvc.enabled needs socketmap.socket.enabled = true (or a mailsvc.config file)"
            )
        env.setdefault("MAILSVC_IDENTITY__AUTH", f"unix:{s.dovecot_auth.socket.path}")
        env.setdefault("MAILSVC_IDENTITY__SOCKETMAP", f"unix:{s.socketmap.socket.path}")
        env.setdefault("MAILSVC_STORE__ROOT", str(s.mail.vmail_root))
        return env

    def argv(self) -> list[str]:
        config = self.settings.mailsvc.config
        extra = ["--config", str(config)] if config is not None else []
        return [sys.executable, "-m", "mailsvc", *extra, "serve"]

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv(), env=self._env(), stdin=asyncio.subprocess.DEVNULL
        )
        with contextlib.suppress(TimeoutError):
            code = await asyncio.wait_for(self.proc.wait(), START_GRACE)
            raise IdsvcError(f"mailsvc exited at start with code {code} (see its log above)")
        self._watch = asyncio.create_task(self._watch_child(self.proc))

    @property
    def path(self) -> str:
        pid = self.proc.pid if self.proc is not None else "?"
        return f"child process {pid}"

    async def _watch_child(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if not self._closing:
            log.error("mailsvc exited with code %s; SMTP is down until idsvc restarts", code)

    async def close(self) -> None:
        self._closing = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._watch is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
