"""``idsvc serve --workers N``: one supervisor process, N worker processes sharing every socket.

What it does:

* The **supervisor** binds every listening socket before any worker exists: the saslauthd and
  Dovecot UNIX sockets (mode/owner applied before ``listen()``, as ``idsvc.wire.listen`` does),
  the Dovecot TCP socket and the control socket. It creates the shared penalty table
  (:class:`idsvc.auth.penalty.SharedFailureTable`) and forks the workers. It never runs an event
  loop or a thread, so forking a replacement worker at any time is safe.
* Each **worker** inherits the listening sockets: every worker accepts from the *same* socket, so
  there is one accept queue per listener (no ``SO_REUSEPORT``: a socket per worker would give each
  its own queue, and the connections waiting in a dead worker's queue would be lost). It runs the
  saslauthd and Dovecot servers on them with its own ``Runtime`` (directory connections, auth
  cache, hashing threads) and keeps its penalty counts in the shared table. Worker 0 also serves
  the REST API (see below).
* **Invalidation fan-out.** The control socket belongs to the supervisor. A ``FLUSH`` from the CLI
  is sent to every worker over its channel (a socketpair, the same line protocol as the control
  socket); the supervisor answers ``OK`` once every running worker confirmed. A worker that does
  not confirm within ``CONFIRM_TIMEOUT`` (1 s) is killed and restarted with an empty cache, so no
  worker can keep answering from a stale entry. A change made through the API (worker 0) drops
  worker 0's cache at once and is sent up the channel; the supervisor forwards it to the others.
* **Supervision.** A worker that dies is restarted (at once; after repeated quick deaths with a
  doubling back-off up to 30 s). The other workers keep accepting from the shared queues
  meanwhile, so only the requests in flight on the dead worker are lost. SIGTERM/SIGINT are passed
  on to the workers, which stop accepting and finish their in-flight requests
  (``idsvc.serve.SHUTDOWN_GRACE``); stragglers are killed after the grace time; then the supervisor
  removes the socket files. SIGHUP reopens the log files of every process (no configuration
  reload, as with one process). ``READY=1`` reaches systemd once every worker is serving.

The REST API runs in worker 0 only: its token-failure and ``/auth/test`` rate limits and the
state store's writer stay one per service, and provisioning is not on the hot path. Every worker
opens the state store (when the API is enabled) to persist its own authentications' audit
events; SQLite (WAL, busy timeout) serialises those writers. Worker 0 is started and ready before
the others start, so schema creation and migrations never race.

How it fails: a socket that cannot be bound stops the start with exit code 1 before any worker
exists; a worker that exits before it is ready stops the whole start with that worker's exit
code (1, 2, 75, 70 as ``idsvc serve``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from idsvc.activation import Activated
from idsvc.auth.penalty import SharedFailureTable
from idsvc.config import Settings, SocketSettings
from idsvc.control import MAX_LINE, READ_TIMEOUT, format_request, parse_request
from idsvc.errors import InvalidInput
from idsvc.logs import reopen_logs
from idsvc.wire.listen import DEFAULT_BACKLOG, BoundSocket, ListenError, bind_tcp, bind_unix

if TYPE_CHECKING:
    import asyncio

    from idsvc.provisioning import Invalidator

log = logging.getLogger("idsvc.workers")

CONFIRM_TIMEOUT = 1.0  # every worker drops a flushed entry within this, or is restarted
KILL_AFTER = 15.0  # seconds after SIGTERM before a worker that has not stopped is killed
START_TIMEOUT = 120.0  # a worker that is not ready by then is killed (start-up failure)
QUICK_DEATH = 5.0  # a worker dying sooner than this after its start counts as a crash loop
MAX_BACKOFF = 30.0
READY = b"READY"
OK = b"OK"


# -- worker side -------------------------------------------------------------------------------


# listeners whose state is per process and must stay one per service: worker 0 runs them
# the mail HTTP listeners bind their own socket (not shared by the supervisor): one process runs
# them; penalties are one brain across workers, so the auth-policy answers stay exact; and the
# mailsvc child is one program whatever the number of idsvc workers
WORKER0_ONLY = frozenset(
    {"api", "policy", "nginx-auth", "dovecot-policy", "dovecot-lua", "mailsvc"}
)


def wire_sockets(settings: Settings) -> list[tuple[str, SocketSettings | None, str | None]]:
    """``(listener, UNIX socket, TCP address)`` of every enabled listener whose sockets the
    supervisor binds for the workers (all but the control socket and the REST API)."""
    s = settings
    found: list[tuple[str, SocketSettings | None, str | None]] = []
    candidates: list[tuple[str, SocketSettings | None, str | None]] = [
        ("saslauthd", s.saslauthd.socket, None),
        ("dovecot-auth", s.dovecot_auth.socket, s.dovecot_auth.tcp),
        ("socketmap", s.socketmap.socket, s.socketmap.tcp),
        ("tcp-table", None, s.tcp_table.tcp),
        ("policy", s.policy.socket, s.policy.tcp),
        ("dovecot-dict", s.dovecot_dict.socket, s.dovecot_dict.tcp),
    ]
    for name, unix, tcp in candidates:
        unix = unix if unix is not None and unix.enabled else None
        if unix is not None or tcp:
            found.append((name, unix, tcp or None))
    return found


@dataclass
class Inherited:
    """The listening sockets a worker inherited, handed to the wire servers instead of binding.

    ``bind_unix``/``bind_tcp`` mirror ``idsvc.wire.listen``'s functions: each call returns a
    duplicate of the inherited socket, without the file identity, so a worker closing its
    listener never unlinks the socket path the other workers still serve.
    """

    unix: dict[Path, socket.socket] = field(default_factory=dict)
    tcp: dict[str, socket.socket] = field(default_factory=dict)
    bind_missing: bool = False  # bind what is not inherited (one process, socket activation)

    def bind_unix(self, settings: SocketSettings, *, backlog: int = DEFAULT_BACKLOG) -> BoundSocket:
        sock = self.unix.get(Path(settings.path))
        if sock is None:
            if self.bind_missing:
                return bind_unix(settings, backlog=backlog)
            raise ListenError(f"{settings.path} was not bound by the supervisor")
        return BoundSocket(sock.dup(), path=Path(settings.path))

    def bind_tcp(self, address: str, *, backlog: int = DEFAULT_BACKLOG) -> BoundSocket:
        sock = self.tcp.get(address)
        if sock is None:
            if self.bind_missing:
                return bind_tcp(address, backlog=backlog)
            raise ListenError(f"{address} was not bound by the supervisor")
        host, port = sock.getsockname()[:2]
        return BoundSocket(sock.dup(), host=host, port=port)

    @classmethod
    def from_activation(cls, settings: Settings, activated: Activated) -> Inherited:
        """The passed sockets of the wire listeners (one process; the rest is bound as usual)."""
        found = cls(bind_missing=True)
        for _name, unix, tcp in wire_sockets(settings):
            if unix is not None:
                bound = activated.take_unix(unix.path)
                if bound is not None:
                    found.unix[Path(unix.path)] = bound.sock
            if tcp is not None:
                bound = activated.take_tcp(tcp)
                if bound is not None:
                    found.tcp[tcp] = bound.sock
        return found

    def adopt(self) -> None:
        """Make the wire servers of this (worker) process use the inherited sockets.

        The servers bind in ``start()`` through the names they imported from
        ``idsvc.wire.listen``; this rebinds those names in their modules. It is the seam until
        the servers take pre-bound sockets themselves (see docs/architecture.md).
        """
        from idsvc.wire import serving
        from idsvc.wire.dovecot_auth import server as dovecot
        from idsvc.wire.saslauthd import server as saslauthd

        for module in (saslauthd, dovecot, serving):
            if getattr(module, "bind_unix", None) is None:
                raise ListenError(f"{module.__name__} no longer binds through bind_unix")
            setattr(module, "bind_unix", self.bind_unix)  # noqa: B010 - not re-exported
        for module in (dovecot, serving):
            if getattr(module, "bind_tcp", None) is None:
                raise ListenError(f"{module.__name__} no longer binds through bind_tcp")
            setattr(module, "bind_tcp", self.bind_tcp)  # noqa: B010


class SharedCounters:
    """One 64-bit counter per worker in shared memory (created before the fork): each worker
    writes its own slot, anyone reads the sum (e.g. dropped audit events for ``/metrics``)."""

    def __init__(self, slots: int) -> None:
        self._fd = os.memfd_create("idsvc-counters")
        try:
            os.ftruncate(self._fd, 8 * slots)
            self._map = mmap.mmap(self._fd, 8 * slots, mmap.MAP_SHARED)
        finally:
            os.close(self._fd)  # the mapping stays valid
        self.slots = slots

    def set(self, slot: int, value: int) -> None:
        _COUNTER.pack_into(self._map, 8 * slot, value)

    def get(self, slot: int) -> int:
        return int(_COUNTER.unpack_from(self._map, 8 * slot)[0])

    def total(self) -> int:
        return sum(value for (value,) in _COUNTER.iter_unpack(self._map))

    def close(self) -> None:
        self._map.close()


_COUNTER = struct.Struct("<q")


@dataclass
class WorkerContext:
    """What a worker process receives from the supervisor."""

    index: int
    count: int
    channel: socket.socket
    inherited: Inherited
    penalties: SharedFailureTable | None
    audit_dropped: SharedCounters

    def publish_dropped(self, value: int) -> None:
        self.audit_dropped.set(self.index, value)


class WorkerChannel:
    """The worker's end of its channel to the supervisor: a ``Listener`` that applies the
    flushes the supervisor sends (and confirms each), and an ``Invalidator`` that sends this
    worker's own provisioning changes up for the other workers.

    When the supervisor goes away (EOF), ``on_lost`` is called: a worker never outlives it.
    """

    name = "worker-channel"

    def __init__(self, sock: socket.socket, on_lost: Callable[[str], None]) -> None:
        self._sock = sock
        self._on_lost = on_lost
        self._invalidator: Invalidator | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.applied = 0

    def attach(self, invalidator: Invalidator) -> None:
        """Where flushes go: everything that caches directory data in this worker."""
        self._invalidator = invalidator

    async def start(self) -> None:
        import asyncio

        reader, writer = await asyncio.open_unix_connection(sock=self._sock, limit=4 * MAX_LINE)
        self._writer = writer
        self._task = asyncio.create_task(self._serve(reader), name="idsvc-worker-channel")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def ready(self, listeners: list[str]) -> None:
        """Tell the supervisor this worker serves ``listeners`` (names)."""
        self._send(READY + b" " + ",".join(listeners).encode("ascii") + b"\n")

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        import asyncio

        while True:
            try:
                line = await reader.readline()
            except (ConnectionError, ValueError, asyncio.LimitOverrunError):
                line = b""
            if not line:
                self._on_lost("the supervisor is gone")
                return
            try:
                scope, name = parse_request(line)
            except InvalidInput as exc:
                self._send(f"ERR {exc}\n".encode())
                continue
            self._apply(scope, name)
            self._send(OK + b"\n")

    def _apply(self, scope: str, name: str | None) -> None:
        auth = self._invalidator
        if auth is None:
            return  # not serving yet: nothing is cached
        if scope == "domain" and name is not None:
            auth.invalidate_domain(name)
        else:
            auth.invalidate(name)
        self.applied += 1
        log.debug("auth cache flushed: %s %s", scope, name or "")

    def _send(self, data: bytes) -> None:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(data)  # buffered, never awaited: callers are synchronous

    # -- Invalidator (this worker's provisioning changes, for the others) ----------------------

    def invalidate(self, user: str | None = None) -> None:
        self._send(format_request("all" if user is None else "user", user))

    def invalidate_domain(self, domain: str) -> None:
        self._send(format_request("domain", domain))


# -- supervisor side ---------------------------------------------------------------------------

_ORDER = (
    "control",
    "saslauthd",
    "dovecot-auth",
    "socketmap",
    "tcp-table",
    "policy",
    "dovecot-dict",
    "api",
)


def _listener_order(name: str) -> int:
    return _ORDER.index(name) if name in _ORDER else len(_ORDER)


@dataclass
class _Worker:
    index: int
    pid: int
    channel: socket.socket
    started: float
    ready: bool = False
    unacked: int = 0
    buffer: bytearray = field(default_factory=bytearray)


@dataclass
class _ControlClient:
    sock: socket.socket
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)


class Supervisor:
    """See the module docstring. ``run()`` returns the process exit code.

    ``worker_main(context)`` runs one worker to completion in the forked child and returns its
    exit code (``idsvc.serve`` passes the function that runs a ``Server`` in worker mode).
    """

    def __init__(
        self,
        settings: Settings,
        count: int,
        worker_main: Callable[[WorkerContext], int],
        activated: Activated | None = None,
    ) -> None:
        if count < 2:
            raise ValueError("a supervisor needs at least 2 workers")
        self.settings = settings
        self._activated = activated or Activated()
        self.count = count
        self._worker_main = worker_main
        self._bound: list[BoundSocket] = []
        self._inherited = Inherited()
        self._control: BoundSocket | None = None
        self._clients: dict[int, _ControlClient] = {}
        self._workers: dict[int, _Worker] = {}  # by pid
        self._restart_at: dict[int, float] = {}  # worker index -> when
        self._backoff: dict[int, float] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._signals: list[int] = []
        self._stopping = False
        self._stop_deadline = 0.0
        self._exit = 0
        self._starting = True
        self._rest_spawned = False
        self._penalties: SharedFailureTable | None = None
        self._dropped = SharedCounters(count)
        self._listeners: set[str] = set()

    # -- start-up ------------------------------------------------------------------------------

    def _bind(self) -> None:
        """Bind every shared socket; raises StartError naming the listener."""
        s, act = self.settings, self._activated
        if s.control.socket.enabled:
            self._control = act.take_unix(s.control.socket.path) or self._named(
                "control", lambda: bind_unix(s.control.socket)
            )
            self._selector.register(self._control.sock, selectors.EVENT_READ, "control")
            self._listeners.add("control")
            log.info("control: listening on %s", s.control.socket.path)
        for name, unix, tcp in wire_sockets(s):
            if unix is not None:
                self._bind_unix(name, unix)
            if tcp is not None:
                self._bind_tcp(name, tcp)
        act.report_unused()

    def _bind_tcp(self, name: str, address: str) -> None:
        bound = self._activated.take_tcp(address) or self._named(name, lambda: bind_tcp(address))
        self._bound.append(bound)
        self._inherited.tcp[address] = bound.sock

    @staticmethod
    def _named(name: str, bind: Callable[[], BoundSocket]) -> BoundSocket:
        from idsvc.serve import StartError

        try:
            return bind()
        except ListenError as exc:
            raise StartError(f"{name}: {exc}") from exc
        except OSError as exc:
            raise StartError(f"{name}: cannot listen: {exc}") from exc

    def _bind_unix(self, name: str, settings: SocketSettings) -> None:
        bound = self._activated.take_unix(settings.path) or self._named(
            name, lambda: bind_unix(settings)
        )
        self._bound.append(bound)
        self._inherited.unix[Path(settings.path)] = bound.sock

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)

    def run(self) -> int:
        """Bind, start the workers, supervise until stopped; returns the exit code."""
        from idsvc.serve import EXIT_OK, EXIT_START, StartError, sd_notify

        try:
            self._bind()
        except StartError as exc:
            log.error("cannot start: %s", exc)
            self._close_sockets()
            return EXIT_START
        if self.settings.auth.penalty:
            self._penalties = SharedFailureTable()
        self._install_signals()
        try:
            log.info("starting %d workers", self.count)
            self._spawn(0)
            while not self._stopping:
                self._tick()
                if self._starting and self._all_ready():
                    self._starting = False
                    names = sorted(self._listeners, key=_listener_order)
                    log.info(
                        "ready: %d listener(s): %s; %d workers",
                        len(names),
                        ", ".join(names),
                        self.count,
                    )
                    sd_notify("READY=1")
                elif self._starting and not self._rest_spawned and self._workers_ready() == 1:
                    self._rest_spawned = True  # worker 0 is ready: the schema exists now
                    for index in range(1, self.count):
                        self._spawn(index)
            sd_notify("STOPPING=1")
            while self._workers:
                self._tick()
            log.info("stopped")
            return self._exit if self._exit else EXIT_OK
        finally:
            if self._workers:  # only after an unexpected error: never leave workers behind
                self._signal_workers(signal.SIGKILL)
                for pid in list(self._workers):
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)
            self._restore_signals()
            self._close_sockets()
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            if self._penalties is not None:
                self._penalties.close()
            self._dropped.close()

    def _all_ready(self) -> bool:
        return len(self._workers) == self.count and self._workers_ready() == self.count

    def _workers_ready(self) -> int:
        return sum(1 for w in self._workers.values() if w.ready)

    # -- the loop ------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        timeout = 1.0
        if self._restart_at:
            timeout = max(0.0, min(timeout, min(self._restart_at.values()) - now))
        for key, _events in self._selector.select(timeout):
            tag = key.data
            if tag == "wake":
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
            elif tag == "control":
                self._accept_control()
            elif isinstance(tag, _ControlClient):
                self._read_control(tag)
            elif isinstance(tag, _Worker):
                self._read_worker(tag)
        self._handle_signals()
        self._reap()
        self._expire(time.monotonic())

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, []
        for sig in signals:
            if sig in (signal.SIGTERM, signal.SIGINT):
                self._stop(signal.Signals(sig).name)
            elif sig == signal.SIGHUP:
                reopened = reopen_logs()
                log.warning(
                    "SIGHUP: %d log file(s) reopened; configuration reload is not supported "
                    "yet, restart idsvc to apply configuration changes",
                    reopened,
                )
                self._signal_workers(signal.SIGHUP)

    def _stop(self, why: str, code: int = 0) -> None:
        if code and not self._exit:
            self._exit = code
        again = self._stopping
        if again:
            log.warning("%s again: passing it on to the workers", why)
        else:
            log.info("%s: shutting down %d worker(s)", why, len(self._workers))
            self._stopping = True
            self._stop_deadline = time.monotonic() + KILL_AFTER
            self._restart_at.clear()
            if self._control is not None:
                self._selector.unregister(self._control.sock)
                self._control.sock.close()
                self._control.remove_path()
                self._control = None
        # the second stop goes out as SIGINT: sent as a second SIGTERM, it could merge with a
        # first one the worker has not handled yet (one pending signal of a kind), and the
        # worker would keep waiting for its in-flight requests
        self._signal_workers(signal.SIGINT if again else signal.SIGTERM)

    def _signal_workers(self, sig: int) -> None:
        for pid in list(self._workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _expire(self, now: float) -> None:
        if self._stopping and self._workers and now >= self._stop_deadline:
            log.error("workers still running %.0f s after SIGTERM: killing them", KILL_AFTER)
            self._signal_workers(signal.SIGKILL)
            self._stop_deadline = now + KILL_AFTER
        for worker in list(self._workers.values()):
            if not worker.ready and now - worker.started > START_TIMEOUT:
                log.error(
                    "worker %d not ready after %.0f s: killing it", worker.index, START_TIMEOUT
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
        for client in list(self._clients.values()):
            if now >= client.deadline:
                self._close_client(client)
        if not self._stopping:
            for index, when in list(self._restart_at.items()):
                if now >= when:
                    del self._restart_at[index]
                    self._spawn(index)

    # -- workers -------------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 70
            try:
                parent.close()
                code = self._become_worker(index, child)
            except BaseException:
                log.exception("worker %d: could not start", index)
            finally:
                logging.shutdown()
                os._exit(code)
        child.close()
        parent.setblocking(False)
        worker = _Worker(index, pid, parent, time.monotonic())
        self._workers[pid] = worker
        self._selector.register(parent, selectors.EVENT_READ, worker)
        log.info("worker %d started (pid %d)", index, pid)

    def _become_worker(self, index: int, channel: socket.socket) -> int:
        """In the forked child: drop what belongs to the supervisor, then run the worker."""
        self._restore_signals()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._control is not None:
            self._control.sock.close()
        for client in self._clients.values():
            client.sock.close()
        for other in self._workers.values():
            other.channel.close()
        context = WorkerContext(
            index, self.count, channel, self._inherited, self._penalties, self._dropped
        )
        return self._worker_main(context)

    def _reap(self) -> None:
        while self._workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self._workers.pop(pid, None)
            if worker is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.channel)
            worker.channel.close()
            self._on_exit(worker, os.waitstatus_to_exitcode(status))

    def _on_exit(self, worker: _Worker, code: int) -> None:
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if self._stopping:
            log.info("worker %d (pid %d) %s", worker.index, worker.pid, how)
            if code != 0 and not self._exit:
                from idsvc.serve import EXIT_SOFTWARE

                self._exit = EXIT_SOFTWARE
            return
        if not worker.ready and self._starting:
            log.error("worker %d (pid %d) %s before it was ready", worker.index, worker.pid, how)
            self._stop("start-up failure", code if code > 0 else 70)
            return
        lived = time.monotonic() - worker.started
        delay = 0.0
        if lived < QUICK_DEATH:
            delay = min(MAX_BACKOFF, max(1.0, 2 * self._backoff.get(worker.index, 0.5)))
        self._backoff[worker.index] = delay
        log.error(
            "worker %d (pid %d) %s; restarting it%s",
            worker.index,
            worker.pid,
            how,
            f" in {delay:.0f} s" if delay else "",
        )
        self._restart_at[worker.index] = time.monotonic() + delay

    def _read_worker(self, worker: _Worker) -> None:
        try:
            data = worker.channel.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the worker is exiting: stop watching its channel; _reap collects it
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.channel)
            return
        worker.buffer += data
        while b"\n" in worker.buffer:
            line, _, rest = bytes(worker.buffer).partition(b"\n")
            worker.buffer = bytearray(rest)
            self._on_worker_line(worker, line)
        if len(worker.buffer) > 4 * MAX_LINE:
            log.error("worker %d sent an over-long line; restarting it", worker.index)
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)

    def _on_worker_line(self, worker: _Worker, line: bytes) -> None:
        if line == OK or line.startswith(b"ERR"):
            worker.unacked = max(0, worker.unacked - 1)
        elif line.split(b" ", 1)[0] == READY:
            worker.ready = True
            names = line.partition(b" ")[2].decode("ascii", "replace")
            self._listeners.update(name for name in names.split(",") if name)
            log.info("worker %d (pid %d) ready", worker.index, worker.pid)
        elif line.startswith(b"FLUSH"):
            try:
                scope, name = parse_request(line)
            except InvalidInput:
                return
            self._broadcast(format_request(scope, name), exclude=worker)
        else:
            log.warning("worker %d: unexpected message %r", worker.index, line[:64])

    def _broadcast(self, line: bytes, exclude: _Worker | None = None) -> list[_Worker]:
        """Send a flush to every worker (but ``exclude``); returns the ready ones it reached."""
        sent: list[_Worker] = []
        for worker in list(self._workers.values()):
            if worker is exclude:
                continue
            try:
                worker.channel.send(line)
            except (BlockingIOError, InterruptedError):
                log.error("worker %d does not read its channel: restarting it", worker.index)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
                continue
            except OSError:
                continue  # exiting; _reap collects it
            worker.unacked += 1
            if worker.ready:
                sent.append(worker)
        return sent

    def _confirm(self, workers: list[_Worker]) -> None:
        """Wait (up to CONFIRM_TIMEOUT) until ``workers`` confirmed every flush sent to them;
        a worker that does not is killed (and restarted with an empty cache)."""
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        waiting = [w for w in workers if w.unacked]
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            selector = selectors.DefaultSelector()
            try:
                for worker in waiting:
                    selector.register(worker.channel, selectors.EVENT_READ, worker)
                for key, _ in selector.select(left):
                    self._read_worker(key.data)
            finally:
                selector.close()
            waiting = [w for w in waiting if w.unacked and w.pid in self._workers]
        for worker in waiting:
            log.error(
                "worker %d (pid %d) did not confirm a cache flush within %.0f s: restarting it",
                worker.index,
                worker.pid,
                CONFIRM_TIMEOUT,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)

    # -- the control socket --------------------------------------------------------------------

    def _accept_control(self) -> None:
        if self._control is None:
            return
        try:
            sock, _ = self._control.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                log.error("control: cannot accept: %s", exc)
                return
            raise
        sock.setblocking(False)
        client = _ControlClient(sock, time.monotonic() + READ_TIMEOUT)
        self._clients[sock.fileno()] = client
        self._selector.register(sock, selectors.EVENT_READ, client)

    def _read_control(self, client: _ControlClient) -> None:
        try:
            data = client.sock.recv(MAX_LINE + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_client(client)
            return
        client.buffer += data
        if b"\n" not in client.buffer and len(client.buffer) <= MAX_LINE:
            return
        line = bytes(client.buffer).split(b"\n", 1)[0]
        try:
            scope, name = parse_request(line if b"\n" in client.buffer else bytes(client.buffer))
        except InvalidInput as exc:
            reply = f"ERR {exc}\n".encode()
        else:
            self._confirm(self._broadcast(format_request(scope, name)))
            log.info("auth cache flushed: %s %s", scope, name or "")
            reply = OK + b"\n"
        with contextlib.suppress(OSError):
            client.sock.send(reply)
        self._close_client(client)

    def _close_client(self, client: _ControlClient) -> None:
        self._clients.pop(client.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()

    def _close_sockets(self) -> None:
        for client in list(self._clients.values()):
            self._close_client(client)
        if self._control is not None:
            self._control.sock.close()
            self._control.remove_path()
            self._control = None
        for bound in self._bound:
            bound.sock.close()
            bound.remove_path()
        self._bound.clear()
