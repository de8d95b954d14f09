"""``idsvc serve``: build the runtime, start every enabled listener, run until SIGTERM/SIGINT.

What it does:

* sets up logging (``idsvc.logs``), opens the directory and the auth core (``idsvc.runtime``);
* starts each enabled listener — control socket, saslauthd mux, Dovecot auth-client, the mail
  lookup listeners (Postfix socketmap / tcp_table / policy, Dovecot dict), REST API, and the
  mail HTTP listeners (nginx ``auth_http``, Dovecot auth-policy and Lua; ``idsvc.wire.mailhttp``) —
  and logs where each one listens (``serve`` also runs, idle, with none enabled);
* on SIGTERM/SIGINT closes the listeners (each stops accepting and finishes its in-flight
  requests) and the runtime within ``SHUTDOWN_GRACE`` seconds; a second signal stops waiting;
* on SIGHUP reopens log files; configuration reload is not supported yet and it says so;
* tells systemd ``READY=1`` / ``STOPPING=1`` when ``NOTIFY_SOCKET`` is set (Type=notify);
* with ``serve.workers`` > 1 (default: the cores, capped) :func:`run` hands over to the
  supervisor of ``idsvc.workers``, which forks N workers that each run a :class:`Server` in
  worker mode (inherited sockets, no control socket, the API in worker 0 only);
* runs on the loop ``serve.loop`` chooses (``idsvc.loops``) and uses sockets passed by systemd
  socket activation (``idsvc.activation``).

How it fails: a listener that cannot bind (address in use, live socket, permissions) or any other
start-up error stops the listeners already started and returns a non-zero exit code with one
clear log line: 1 for a bind/start failure, 2 for invalid settings, 75 when the directory is
unreachable at start-up, 70 for an unexpected error (with its traceback in the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idsvc import _native, gc_tuning, loops
from idsvc.config import Settings
from idsvc.errors import ConfigError, IdsvcError, TemporaryFailure
from idsvc.logs import reopen_logs, setup_logging

if TYPE_CHECKING:
    from idsvc.activation import Activated
    from idsvc.runtime import Listener, Runtime
    from idsvc.workers import WorkerContext

log = logging.getLogger("idsvc.serve")

SHUTDOWN_GRACE = 10.0  # seconds for listeners to finish in-flight requests
EXIT_OK, EXIT_START, EXIT_CONFIG, EXIT_SOFTWARE, EXIT_TEMPFAIL = 0, 1, 2, 70, 75


@dataclass(frozen=True)
class ListenerSpec:
    """How to build one listener and when it is enabled (modules import on first use)."""

    name: str
    enabled: Callable[[Settings], bool]
    build: Callable[[Settings, Runtime, Any], Listener]  # last: the state store, or None
    where: Callable[[Settings], str]


def _dovecot_where(s: Settings) -> str:
    parts = [str(s.dovecot_auth.socket.path)] if s.dovecot_auth.socket.enabled else []
    if s.dovecot_auth.tcp:
        parts.append(f"tcp {s.dovecot_auth.tcp}")
    return ", ".join(parts)


def _control(s: Settings, rt: Runtime, state: Any) -> Listener:
    from idsvc.control import ControlServer

    return ControlServer(s.control.socket, rt.invalidator)


def _saslauthd(s: Settings, rt: Runtime, state: Any) -> Listener:
    from idsvc.wire.saslauthd.server import SaslauthdServer

    return SaslauthdServer(s.saslauthd, rt.authenticator)


def _dovecot(s: Settings, rt: Runtime, state: Any) -> Listener:
    from idsvc.wire.dovecot_auth.server import DovecotAuthServer

    return DovecotAuthServer(s.dovecot_auth, rt.authenticator)


def _socketmap(s: Settings, rt: Runtime, state: Any) -> Listener:
    from idsvc.wire.socketmap.server import SocketmapServer

    return SocketmapServer(s.socketmap, rt.mail)


def _dovecot_dict(s: Settings, rt: Runtime, state: Any) -> Listener:
    from idsvc.wire.dovecot_dict.server import DovecotDictServer

    return DovecotDictServer(s.dovecot_dict, rt.mail)


def _tcp_table(s: Settings, rt: Runtime, state: Any) -> Listener:
    from idsvc.wire.tcp_table.server import TcpTableServer

    return TcpTableServer(s.tcp_table, rt.mail)


def _policy(s: Settings, rt: Runtime, state: Any) -> Listener:
    from idsvc.wire.policy.server import PolicyServer

    return PolicyServer(s.policy, rt.mail)


def _lookup_where(socket: Any, tcp: str | None) -> str:
    parts = [str(socket.path)] if socket is not None and socket.enabled else []
    if tcp:
        parts.append(f"tcp {tcp}")
    return ", ".join(parts)


def _api(s: Settings, rt: Runtime, state: Any) -> Listener:
    from idsvc.api.server import ApiServer

    return ApiServer(s, rt, state)


def _mailsvc(s: Settings, rt: Runtime, state: Any) -> Listener:
    from idsvc.mailsvc_child import MailsvcChild

    return MailsvcChild(s)


def _nginx_auth(s: Settings, rt: Runtime, state: Any) -> Listener:
    from idsvc.wire.mailhttp.nginx import NginxAuthHandler
    from idsvc.wire.mailhttp.server import MailHttpServer

    handler = NginxAuthHandler(s.nginx_auth, rt.authenticator)
    return MailHttpServer("nginx-auth", s.nginx_auth, {"/auth": {"GET": handler}})


def _dovecot_policy(s: Settings, rt: Runtime, state: Any) -> Listener:
    from idsvc.wire.mailhttp.policy import DovecotPolicyHandler
    from idsvc.wire.mailhttp.server import MailHttpServer

    handler = DovecotPolicyHandler(s.dovecot_policy, s.auth, rt.authenticator.penalties)
    return MailHttpServer("dovecot-policy", s.dovecot_policy, {"/policy": {"POST": handler}})


def _dovecot_lua(s: Settings, rt: Runtime, state: Any) -> Listener:
    from idsvc.wire.mailhttp.lua import LuaPassdbHandler, LuaUserdbHandler
    from idsvc.wire.mailhttp.server import MailHttpServer, Routes

    routes: Routes = {
        "/passdb": {"POST": LuaPassdbHandler(rt.authenticator)},
        "/userdb": {"POST": LuaUserdbHandler(rt.mail)},
    }
    return MailHttpServer("dovecot-lua", s.dovecot_lua, routes)


LISTENERS: tuple[ListenerSpec, ...] = (
    ListenerSpec(
        "control",
        lambda s: s.control.socket.enabled,
        _control,
        lambda s: str(s.control.socket.path),
    ),
    ListenerSpec(
        "saslauthd",
        lambda s: s.saslauthd.socket.enabled,
        _saslauthd,
        lambda s: str(s.saslauthd.socket.path),
    ),
    ListenerSpec(
        "dovecot-auth",
        lambda s: s.dovecot_auth.socket.enabled or bool(s.dovecot_auth.tcp),
        _dovecot,
        _dovecot_where,
    ),
    ListenerSpec(
        "socketmap",
        lambda s: s.socketmap.socket.enabled or bool(s.socketmap.tcp),
        _socketmap,
        lambda s: _lookup_where(s.socketmap.socket, s.socketmap.tcp),
    ),
    ListenerSpec(
        "tcp-table",
        lambda s: bool(s.tcp_table.tcp),
        _tcp_table,
        lambda s: f"tcp {s.tcp_table.tcp}",
    ),
    ListenerSpec(
        "policy",
        lambda s: s.policy.socket.enabled or bool(s.policy.tcp),
        _policy,
        lambda s: _lookup_where(s.policy.socket, s.policy.tcp),
    ),
    ListenerSpec(
        "dovecot-dict",
        lambda s: s.dovecot_dict.socket.enabled or bool(s.dovecot_dict.tcp),
        _dovecot_dict,
        lambda s: _lookup_where(s.dovecot_dict.socket, s.dovecot_dict.tcp),
    ),
    ListenerSpec("api", lambda s: s.api.enabled, _api, lambda s: s.api.listen),
    ListenerSpec(
        "nginx-auth", lambda s: s.nginx_auth.enabled, _nginx_auth, lambda s: s.nginx_auth.listen
    ),
    ListenerSpec(
        "dovecot-policy",
        lambda s: s.dovecot_policy.enabled,
        _dovecot_policy,
        lambda s: s.dovecot_policy.listen,
    ),
    ListenerSpec(
        "dovecot-lua", lambda s: s.dovecot_lua.enabled, _dovecot_lua, lambda s: s.dovecot_lua.listen
    ),
    ListenerSpec("mailsvc", lambda s: s.mailsvc.enabled, _mailsvc, lambda s: "child process"),
)


def describe(listener: Any, spec: ListenerSpec, settings: Settings) -> str:
    """Where a started listener listens (its own report when it has one, else the settings)."""
    url = getattr(listener, "url", None)
    if isinstance(url, str):
        return url
    parts: list[str] = []
    path = getattr(listener, "path", None)
    if path is not None:
        parts.append(str(path))
    port = getattr(listener, "tcp_port", None)
    if isinstance(port, int):
        parts.append(f"tcp port {port}")
    return ", ".join(parts) or spec.where(settings)


def sd_notify(state: str) -> None:
    """Send ``state`` to systemd when run as ``Type=notify``; silently nothing otherwise."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(state.encode("ascii"), address)


class Server:
    """One ``idsvc serve`` run: start, wait for a signal, stop."""

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None = None,
        worker: WorkerContext | None = None,
        activated: Activated | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.worker = worker
        self.activated = activated  # sockets passed by systemd (one process; workers: none)
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self.runtime: Runtime | None = None
        self.state: Any = None  # idsvc.state.StateStore when the API is served

    def request_stop(self, why: str = "stop requested") -> None:
        if self._stop.is_set():
            log.warning("%s again: not waiting for in-flight requests any longer", why)
            self._force.set()
            return
        log.info("%s: shutting down", why)
        self._stop.set()

    def _on_hup(self) -> None:
        reopened = reopen_logs()
        log.warning(
            "SIGHUP: %d log file(s) reopened; configuration reload is not supported yet, "
            "restart idsvc to apply configuration changes",
            reopened,
        )

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    async def start(self) -> Runtime:
        """Open the runtime and start the listeners; on failure everything started is closed."""
        from idsvc.runtime import build_runtime

        source = self.config_path or "none, defaults and environment"
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        log.info(
            "idsvc starting (config: %s; directory: %s; event loop: %s; hot path: %s)",
            source,
            self.settings.directory.describe(),
            "uvloop" if loop == "uvloop" else "asyncio",
            _native.STATUS,
        )
        from idsvc.runtime import log_sink

        audit = None
        if self.settings.api.enabled:
            # the API's state store also receives every audit event (auth and provisioning)
            from idsvc.state import StateStore, runtime_audit

            self.state = await StateStore.open_for(self.settings)
            audit = runtime_audit(self.state, log_sink(self.settings))
        channel = None
        if self.worker is not None:
            from idsvc.workers import WorkerChannel

            self.worker.inherited.adopt()
            channel = WorkerChannel(self.worker.channel, self.request_stop)
        elif self.activated:
            from idsvc.workers import Inherited

            Inherited.from_activation(self.settings, self.activated).adopt()
        try:
            runtime = await build_runtime(
                self.settings,
                audit=audit,
                queued=True,
                peers=channel,
                publish_dropped=None if self.worker is None else self.worker.publish_dropped,
            )
        except BaseException:
            await self._close_state()
            raise
        self.runtime = runtime
        try:
            runtime.start_change_feed()
            if self.worker is not None and channel is not None:
                if self.worker.penalties is not None:
                    runtime.authenticator.penalties.share(self.worker.penalties)
                runtime.dropped_counter = self.worker.audit_dropped.total
                channel.attach(runtime.invalidator)
                await channel.start()  # first: flushes sent while starting are applied first
                runtime.listeners.append(channel)
            for spec in LISTENERS:
                if not spec.enabled(self.settings):
                    log.info("%s: disabled in the configuration", spec.name)
                    continue
                if self.worker is not None and not self._worker_runs(spec.name):
                    continue
                listener = spec.build(self.settings, runtime, self.state)
                if spec.name == "control" and self.activated:
                    from idsvc.control import ControlServer

                    assert isinstance(listener, ControlServer)
                    listener.prebound = self.activated.take_unix(self.settings.control.socket.path)
                try:
                    await listener.start()
                except IdsvcError as exc:
                    raise StartError(f"{spec.name}: {exc}") from exc
                except OSError as exc:
                    raise StartError(f"{spec.name}: cannot listen: {exc}") from exc
                runtime.listeners.append(listener)
                log.info("%s: listening on %s", spec.name, describe(listener, spec, self.settings))
        except BaseException:
            await self.stop()
            raise
        if self.activated:
            self.activated.report_unused()
        if channel is not None:
            served = [x.name for x in runtime.listeners if x is not channel]
            log.info("serving: %s", ", ".join(served))
            channel.ready(served)
        elif runtime.listeners:
            names = ", ".join(listener.name for listener in runtime.listeners)
            log.info("ready: %d listener(s): %s", len(runtime.listeners), names)
        else:
            log.warning("ready: no listener is running (none enabled); idle")
        return runtime

    def _worker_runs(self, name: str) -> bool:
        """In worker mode: the supervisor owns the control socket; the API and the policy
        service (its rate limits are per process) run in worker 0 only."""
        from idsvc.workers import WORKER0_ONLY

        if name == "control":
            return False
        if name in WORKER0_ONLY:
            return self.worker is not None and self.worker.index == 0
        return True

    async def _close_state(self) -> None:
        state, self.state = self.state, None
        if state is not None:
            await state.close()

    async def _close_all(self, runtime: Runtime) -> None:
        try:
            await runtime.close()
        finally:
            await self._close_state()

    async def stop(self) -> bool:
        """Close listeners and runtime; False when they did not finish within the grace time."""
        runtime, self.runtime = self.runtime, None
        if runtime is None:
            await self._close_state()
            return True
        closing = asyncio.create_task(self._close_all(runtime))
        forced = asyncio.create_task(self._force.wait())
        done, _ = await asyncio.wait(
            {closing, forced}, timeout=SHUTDOWN_GRACE, return_when=asyncio.FIRST_COMPLETED
        )
        forced.cancel()
        if closing in done:
            closing.result()
            return True
        closing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await closing
        if self._force.is_set():
            log.error("shutdown cut short by a second signal; in-flight requests were dropped")
        else:
            log.error("shutdown did not finish within %.0f s; exiting anyway", SHUTDOWN_GRACE)
        return False

    async def run(self) -> int:
        self._install_signals()
        try:
            await self.start()
            gc_tuning.settle()  # the start-up heap is final: no collection walks it again
            if self.worker is None:
                sd_notify("READY=1")  # workers: the supervisor tells systemd
            await self._stop.wait()
            if self.worker is None:
                sd_notify("STOPPING=1")
            clean = await self.stop()
            log.info("stopped")
            return EXIT_OK if clean else EXIT_SOFTWARE
        finally:
            self._remove_signals()


class StartError(IdsvcError):
    """A listener could not be started (the message names it and the reason)."""


def worker_count(settings: Settings) -> int:
    """How many processes serve: ``serve.workers`` (default: cores, capped), but 1 when no
    listener that workers share (saslauthd, Dovecot auth, the lookup tables) is enabled."""
    from idsvc.workers import wire_sockets

    shared = any(name != "policy" for name, _unix, _tcp in wire_sockets(settings))
    return settings.serve.worker_count() if shared else 1


def run(settings: Settings, config_path: Path | None = None) -> int:
    """Run ``idsvc serve``: in this process (one worker), or as the supervisor of N worker
    processes (``idsvc.workers``); returns the exit code."""
    from idsvc.activation import Activated

    setup_logging(settings.logging)
    activated = Activated.from_environment()
    count = worker_count(settings)
    if count == 1:
        server = Server(settings, config_path, activated=activated)
        return _guarded(lambda: loops.run(server.run, settings.serve.loop))
    from idsvc.workers import Supervisor

    def worker_main(context: WorkerContext) -> int:
        setup_logging(settings.logging, tag=f"w{context.index}")
        server = Server(settings, config_path, worker=context)
        return _guarded(lambda: loops.run(server.run, settings.serve.loop))

    return _guarded(Supervisor(settings, count, worker_main, activated).run)


def _guarded(main: Callable[[], int]) -> int:
    """``main()``'s exit code, with every start-up error mapped to its exit code and logged."""
    try:
        return main()
    except StartError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_START
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc)
        return EXIT_CONFIG
    except TemporaryFailure as exc:
        log.error("directory unavailable: %s", exc)
        return EXIT_TEMPFAIL
    except IdsvcError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_START
    except Exception:
        log.exception("internal error")
        return EXIT_SOFTWARE
