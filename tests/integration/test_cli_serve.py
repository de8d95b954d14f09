"""``idsvc serve`` as a real process: it listens where it says, answers real clients, handles
SIGHUP honestly, stops cleanly on SIGTERM, and fails with one clear message when it cannot start."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_cli import IDSVC, PASSWORD, Cli, cli_fixture, embedded_cli_fixture

__all__ = ["cli_fixture", "embedded_cli_fixture"]  # the fixtures "cli" and "embedded_cli"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


class Served:
    """A running ``idsvc serve`` with its stderr collected line by line (bounded wait)."""

    def __init__(self, cli: Cli, *, prefix: tuple[str, ...] = (), pass_fds: tuple[int, ...] = ()):
        self.proc = subprocess.Popen(
            [*prefix, str(IDSVC), "serve"],
            env=cli.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=pass_fds,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> str:
        """The first new log line matching ``pattern``; fails on timeout or process exit."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"serve exited before {pattern!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if regex.search(line):
                return line
        pytest.fail(f"no log line {pattern!r} within {timeout}s:\n" + "\n".join(self.lines))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            pytest.fail("idsvc serve did not stop within the grace time")
        self._reader.join(timeout=10)
        self.close_pipes()
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return code

    def close_pipes(self) -> None:
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def serving() -> Iterator[list[Served]]:
    """Collects started servers and kills any a failing test left behind."""
    started: list[Served] = []
    yield started
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait(timeout=10)
        served._reader.join(timeout=10)
        served.close_pipes()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def short_run_dir() -> Path:
    """UNIX socket paths must stay under 108 bytes; pytest's tmp_path can be long."""
    return Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")


@pytest.fixture
def sockdir() -> Iterator[Path]:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="idsvc-", dir=short_run_dir()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def with_listeners(cli: Cli, sockdir: Path) -> int:
    port = free_port()
    cli.config["saslauthd.socket"] = {"path": str(sockdir / "mux")}
    cli.config["dovecot_auth.socket"] = {"path": str(sockdir / "auth-client")}
    cli.config["control.socket"] = {"path": str(sockdir / "control")}
    cli.config["api"]["enabled"] = True
    cli.config["api"]["listen"] = f"127.0.0.1:{port}"
    return port


def worker_pids(served: Served) -> dict[int, int]:
    """The current pid of each worker index, from the supervisor's "ready" lines (none when
    ``serve`` runs as one process)."""
    pids: dict[int, int] = {}
    for index, pid in re.findall(r"worker (\d+) \(pid (\d+)\) ready", served.log):
        pids[int(index)] = int(pid)  # a restarted worker's later line wins
    return pids


@contextlib.contextmanager
def only_worker(served: Served, index: int) -> Iterator[None]:
    """Every other worker is paused (SIGSTOP): a new connection can only be accepted by
    ``index``. The shared accept queue gives no fairness, so this is how a test reaches a
    chosen worker deterministically (an attacker gets there by reconnecting)."""
    others = [pid for i, pid in worker_pids(served).items() if i != index]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


def each_worker(served: Served) -> Iterator[contextlib.AbstractContextManager[None]]:
    """One context per worker in which only that worker accepts; one plain context when
    ``serve`` runs as one process."""
    pids = worker_pids(served)
    if not pids:
        yield contextlib.nullcontext()
    for index in sorted(pids):
        yield only_worker(served, index)


def dovecot_handshake(path: Path) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(b"VERSION\t1\t0\nCPID\t4242\n")
        data = b""
        while b"DONE\n" not in data and len(data) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode()


def run_testsaslauthd(path: Path, user: str, password: str) -> str:
    binary = shutil.which("testsaslauthd") or "/usr/sbin/testsaslauthd"
    if not Path(binary).exists():
        pytest.fail("testsaslauthd (sasl2-bin) is not installed")
    result = subprocess.run(
        [binary, "-f", str(path), "-u", user, "-p", password, "-s", "smtp"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.stdout.strip()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_on_its_sockets_and_stops_on_sigterm(
    cli: Cli, sockdir: Path, serving: list[Served], workers: int
) -> None:
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "alice@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    port = with_listeners(cli, sockdir)
    cli.config["serve"] = {"workers": workers}
    served = Served(cli)
    serving.append(served)
    served.wait_for(r"ready: 4 listener\(s\)")
    assert f"127.0.0.1:{port}" in served.log
    assert str(sockdir / "mux") in served.log

    assert run_testsaslauthd(sockdir / "mux", "alice@example.org", PASSWORD).startswith("0: OK")
    assert run_testsaslauthd(sockdir / "mux", "alice@example.org", "wrong").startswith("0: NO")

    handshake = dovecot_handshake(sockdir / "auth-client")
    assert handshake.startswith("VERSION\t1\t")
    assert "MECH\tPLAIN" in handshake

    token = Path(cli.config["api"]["bootstrap_token_file"]).read_text(encoding="utf-8").strip()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/api/v1/domains").status_code == 401
        listed = http.get("/api/v1/domains", headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200
        assert "example.org" in listed.text

    served.proc.send_signal(signal.SIGHUP)
    served.wait_for("reload is not supported yet")
    assert served.proc.poll() is None  # SIGHUP does not stop it

    assert served.stop() == 0
    assert "stopped" in served.log
    assert "Traceback" not in served.log
    assert PASSWORD not in served.log
    assert token not in served.log
    with (  # nobody listens any more
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
        pytest.raises((FileNotFoundError, ConnectionRefusedError)),
    ):
        sock.connect(str(sockdir / "mux"))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_changes_reach_the_running_servers_cache_at_once(
    cli: Cli, sockdir: Path, serving: list[Served], workers: int
) -> None:
    """The auth cache of ``idsvc serve`` is dropped through its control socket when the CLI (a
    separate process) changes a password or disables an account: no 5-minute window."""
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "dora@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    with_listeners(cli, sockdir)
    cli.config["serve"] = {"workers": workers}
    cli.config["api"]["enabled"] = False
    cli.config["auth"] = {"failure_delay": 0, "cache_ttl": 3600}
    served = Served(cli)
    serving.append(served)
    served.wait_for("ready:")
    mux = sockdir / "mux"
    assert run_testsaslauthd(mux, "dora@example.org", PASSWORD).startswith("0: OK")  # now cached

    new = "a brand new passphrase"
    cli.ok("user", "passwd", "dora@example.org", "--password-stdin", stdin=new + "\n")
    assert run_testsaslauthd(mux, "dora@example.org", PASSWORD).startswith("0: NO")
    assert run_testsaslauthd(mux, "dora@example.org", new).startswith("0: OK")  # cached again

    cli.ok("user", "disable", "dora@example.org")
    assert run_testsaslauthd(mux, "dora@example.org", new).startswith("0: NO")
    served.wait_for(r"auth cache flushed: user dora@example\.org")

    assert cli.ok("auth", "flush").strip() == "flushed: all"
    flushed = cli.ok("auth", "flush", "--domain", "Example.ORG").strip()
    assert flushed == "flushed: domain example.org"
    bad = cli.run("auth", "flush", "not an address")
    assert bad.returncode == 2, bad.stderr
    assert served.stop() == 0
    gone = cli.run("auth", "flush")  # nobody listens any more
    assert gone.returncode == 75
    assert "no server answers" in gone.stderr


def test_serve_persists_the_audit_trail_of_cli_and_auth(
    embedded_cli: Cli, sockdir: Path, serving: list[Served]
) -> None:
    cli = embedded_cli
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "bob@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    port = with_listeners(cli, sockdir)
    served = Served(cli)
    serving.append(served)
    served.wait_for("ready:")
    assert run_testsaslauthd(sockdir / "mux", "bob@example.org", PASSWORD).startswith("0: OK")
    token = Path(cli.config["api"]["bootstrap_token_file"]).read_text(encoding="utf-8").strip()
    robot = cli.ok("token", "create", "robot", "--domain-admin", "example.org").strip()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        users = http.get(
            "/api/v1/domains/example.org/users", headers={"Authorization": f"Bearer {robot}"}
        )  # a token made by the CLI while serve runs works at once
        assert users.status_code == 200, users.text
        assert "bob@example.org" in users.text
        deadline = time.monotonic() + 10
        actions: set[str] = set()
        while time.monotonic() < deadline and not {"auth", "account.create"} <= actions:
            got = http.get("/api/v1/audit", headers={"Authorization": f"Bearer {token}"})
            assert got.status_code == 200, got.text
            actions = {item["action"] for item in got.json()["items"]}
            time.sleep(0.2)
        assert "account.create" in actions  # made by the CLI before serve started
        assert "token.create" in actions
        assert "auth" in actions  # made through the saslauthd socket
        creators = {i["actor"] for i in got.json()["items"] if i["action"] == "account.create"}
        assert all(actor.startswith("cli:") for actor in creators)
    assert served.stop() == 0


def test_serve_logs_json_lines(embedded_cli: Cli, sockdir: Path, serving: list[Served]) -> None:
    cli = embedded_cli
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "carl@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    with_listeners(cli, sockdir)
    cli.config["api"]["enabled"] = False
    cli.config["logging"] = {"format": "json", "level": "DEBUG", "auth_log": "all"}
    served = Served(cli)
    serving.append(served)
    served.wait_for("ready:")
    assert run_testsaslauthd(sockdir / "mux", "carl@example.org", PASSWORD).startswith("0: OK")
    served.wait_for(r'"audit"')
    assert served.stop(signal.SIGINT) == 0
    records = [json.loads(line) for line in served.lines if line.strip()]
    assert all({"time", "level", "logger"} <= set(r) for r in records)
    audits = [r["audit"] for r in records if "audit" in r]
    assert any(a["action"] == "auth" and a["outcome"] == "ok" for a in audits)
    assert PASSWORD not in served.log


def test_serve_with_no_listener_says_so(
    embedded_cli: Cli, sockdir: Path, serving: list[Served]
) -> None:
    cli = embedded_cli
    cli.config["saslauthd.socket"] = {"path": str(sockdir / "mux"), "enabled": False}
    cli.config["dovecot_auth.socket"] = {"path": str(sockdir / "a"), "enabled": False}
    cli.config["control.socket"] = {"path": str(sockdir / "control"), "enabled": False}
    served = Served(cli)
    serving.append(served)
    served.wait_for("no listener is running")
    assert served.stop() == 0


def test_serve_refuses_to_start_when_a_socket_cannot_be_bound(
    embedded_cli: Cli, sockdir: Path, serving: list[Served]
) -> None:
    cli = embedded_cli
    with_listeners(cli, sockdir)
    (sockdir / "mux").write_text("a regular file where the socket should go\n")
    served = Served(cli)
    serving.append(served)
    assert served.proc.wait(timeout=START_TIMEOUT) == 1
    served.stop()
    assert "cannot start: saslauthd" in served.log
    assert str(sockdir / "mux") in served.log
    assert "Traceback" not in served.log
    assert (sockdir / "mux").read_text().startswith("a regular file")  # left alone


def test_serve_refuses_to_start_when_the_api_port_is_taken(
    embedded_cli: Cli, sockdir: Path, serving: list[Served]
) -> None:
    cli = embedded_cli
    port = with_listeners(cli, sockdir)
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen(1)
        served = Served(cli)
        serving.append(served)
        assert served.proc.wait(timeout=START_TIMEOUT) == 1
    served.stop()
    assert "cannot start: api" in served.log
    assert "Traceback" not in served.log
    assert not (sockdir / "mux").exists()  # the listeners started before were closed again


def test_serve_with_invalid_config_is_exit_2(embedded_cli: Cli) -> None:
    embedded_cli.config["saslauthd"] = {"read_timeout": -1}
    result = embedded_cli.run("serve", timeout=60)
    assert result.returncode == 2
    assert "saslauthd.read_timeout" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_lets_an_in_flight_request_finish(
    embedded_cli: Cli, sockdir: Path, serving: list[Served]
) -> None:
    cli = embedded_cli
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "dora@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    with_listeners(cli, sockdir)
    cli.config["api"]["enabled"] = False
    cli.config["auth"]["failure_delay"] = 1.5  # keeps a wrong-password request in flight
    served = Served(cli)
    serving.append(served)
    served.wait_for("ready:")
    answer: dict[str, str] = {}
    client = threading.Thread(
        target=lambda: answer.update(
            reply=run_testsaslauthd(sockdir / "mux", "dora@example.org", "wrong")
        )
    )
    client.start()
    time.sleep(0.4)  # the request is now waiting out its failure delay
    assert served.stop() == 0
    client.join(timeout=30)
    assert answer["reply"].startswith("0: NO")  # answered, not cut off


def test_a_second_sigterm_stops_waiting(
    embedded_cli: Cli, sockdir: Path, serving: list[Served]
) -> None:
    cli = embedded_cli
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "eve@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    with_listeners(cli, sockdir)
    cli.config["api"]["enabled"] = False
    cli.config["auth"]["failure_delay"] = 8.0  # a request that would hold shutdown for seconds
    served = Served(cli)
    serving.append(served)
    served.wait_for("ready:")
    client = threading.Thread(
        target=run_testsaslauthd, args=(sockdir / "mux", "eve@example.org", "wrong")
    )
    client.start()
    # the failure is decided (and audited) before its 8 s deadline: from here it is in flight
    served.wait_for(r'"action": ?"auth"')
    served.proc.send_signal(signal.SIGTERM)
    served.wait_for("SIGTERM: shutting down")
    started = time.monotonic()
    code = served.stop()  # the second SIGTERM
    assert time.monotonic() - started < 6.0
    assert code == 70  # not a clean stop, and it says so
    assert "cut short by a second signal" in served.log
    client.join(timeout=30)
