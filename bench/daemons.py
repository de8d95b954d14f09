"""The processes the comparison benchmarks (``dovecot_compare.py``, ``saslauthd_vs_cyrus.py``)
start and measure: a slapd loaded with users, ``idsvc serve`` with one auth listener, and runs of
``bench/loadclient.py`` against a daemon's socket with the daemon's and slapd's CPU per 1000
authentications.

What it does not do: start the other side's daemons (Dovecot, Cyrus: each benchmark knows its
own), or talk to anything but 127.0.0.1 and UNIX sockets.

How it fails: a daemon whose socket does not appear within the timeout raises ``RuntimeError``
with the tail of its log; a load client that exits non-zero raises ``CalledProcessError``. Every
process started here is stopped by pid (its whole tree: SIGTERM, then SIGKILL after 5 s), also
on errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.common import cpu_seconds, process_tree, stat_fields
from bench.ldapdata import Dataset, load_users
from tests.fixtures.slapd import SlapdServer

REPO = Path(__file__).resolve().parents[1]
Listener = Literal["saslauthd", "dovecot_auth"]
SOCKET_NAME: dict[Listener, str] = {"saslauthd": "mux", "dovecot_auth": "auth-client"}


@dataclass
class Daemon:
    """An auth server under test: its socket and the root of its process tree."""

    name: str
    socket: Path
    root_pid: int
    cache: bool = False

    def cpu(self) -> float:
        """CPU seconds of the whole process tree so far."""
        return cpu_seconds(process_tree(self.root_pid))


def wait_socket(
    path: Path,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    timeout: float = 30.0,
) -> None:
    """Wait until ``path`` exists; raise early if ``proc`` exits, with the tail of ``log``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    exit_status = proc.poll() if proc is not None else None
    raise RuntimeError(f"{path} did not appear (exit {exit_status}):\n{tail}")


def _all_gone(pids: list[int], timeout: float) -> bool:
    """Wait (bounded) until every pid is gone or a zombie."""
    deadline = time.monotonic() + timeout
    while True:
        if all((stat_fields(p) or ["Z"])[0] == "Z" for p in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def kill_tree(root: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM ``root`` and its descendants, SIGKILL what is left after 5 s; reap ``proc``."""
    pids = process_tree(root)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if _all_gone(pids, 5.0):
            break
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def idsvc_config(
    slapd: SlapdServer,
    base: str,
    sock: Path,
    *,
    listener: Listener,
    auth_method: str,
    cache: bool,
    cache_size: int | None = None,
    workers: int = 1,
    log_level: str = "WARNING",
) -> str:
    """The TOML of ``idsvc serve`` for a benchmark: LDAP backend, only ``listener`` on ``sock``,
    failure delay 0, penalties off, REST API off, ``workers`` processes, ``log_level`` (INFO is
    the default configuration: failures make an audit line); its control socket next to
    ``sock`` (so several can run side by side)."""
    other: Listener = "dovecot_auth" if listener == "saslauthd" else "saslauthd"
    size = "" if cache_size is None else f"cache_size = {cache_size}\n"
    return f"""
[directory]
backend = "ldap"
[directory.ldap]
uris = ["{slapd.uri}"]
base_dn = "{base}"
bind_dn = "{slapd.reader_dn}"
bind_password = "{slapd.reader_pw}"
pool_size = 8
auth_method = "{auth_method}"
[auth]
failure_delay = 0.0
penalty = false
cache = {"true" if cache else "false"}
{size}rehash_on_login = false
max_pending = 4096
[{listener}]
max_connections = 1024
[{listener}.socket]
path = "{sock}"
mode = 0o666
[{other}.socket]
enabled = false
path = "{sock.parent / ("unused-" + SOCKET_NAME[other])}"
[control.socket]
path = "{sock.parent / "control"}"
mode = 0o600
[api]
enabled = false
[serve]
workers = {workers}
[logging]
level = "{log_level}"
"""


@contextlib.contextmanager
def idsvc_serve(
    work: Path,
    tag: str,
    slapd: SlapdServer,
    base: str,
    *,
    listener: Listener,
    auth_method: str,
    cache: bool,
    cache_size: int | None = None,
    workers: int = 1,
    log_level: str = "WARNING",
) -> Iterator[tuple[Path, int]]:
    """Run ``idsvc serve`` (config ``work/<tag>.toml``, log ``work/<tag>.log``, socket below
    ``work/<tag>/``) until the block ends; yields (socket path, pid)."""
    sock = work / tag / SOCKET_NAME[listener]
    sock.parent.mkdir(parents=True)
    config = work / f"{tag}.toml"
    config.write_text(
        idsvc_config(
            slapd, base, sock, listener=listener, auth_method=auth_method, cache=cache,
            cache_size=cache_size, workers=workers, log_level=log_level,
        )
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDSVC_")}
    env["IDSVC_CONFIG"] = str(config)
    log_path = work / f"{tag}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from idsvc.cli import main; raise SystemExit(main())", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        try:
            wait_socket(sock, proc, log_path)
            yield sock, proc.pid
        finally:
            kill_tree(proc.pid, proc)


@contextlib.contextmanager
def loaded_slapd(users: int, prefix: str) -> Iterator[tuple[Path, Dataset]]:
    """A fresh work directory and a slapd (no TLS) with ``users`` ``{SSHA}`` accounts; both are
    removed at the end. Prints the load time to stderr."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    slapd = SlapdServer(tls=False)
    try:
        t0 = time.monotonic()
        data = load_users(slapd, users)
        print(f"# slapd ready: {users} users in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        yield work, data
    finally:
        slapd.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def run_loadclient(
    daemon: Daemon,
    data: Dataset,
    *,
    protocol: str,
    users: int,
    concurrency: int,
    requests: int,
    seconds: float,
    bad_ratio: float,
) -> dict[str, Any]:
    """One ``bench/loadclient.py`` run (its own process) against ``daemon``; its JSON result plus
    ``server_cpu_per_1k`` / ``slapd_cpu_per_1k`` (CPU seconds per 1000 attempts) and ``server``."""
    argv = [
        sys.executable, str(REPO / "bench" / "loadclient.py"),
        "--protocol", protocol, "--target", str(daemon.socket), "--service", "smtp",
        "--concurrency", str(concurrency), "--requests", str(requests),
        "--duration", str(seconds), "--users", str(users),
        "--domains", str(data.domains), "--user-template", "user{n}@d{d}.example",
        "--password-template", data.password.replace("{", "{{").replace("}", "}}"),
        "--bad-ratio", str(bad_ratio), "--seed", str(concurrency),
    ]  # fmt: skip
    slapd_pid = data.server.pid
    assert slapd_pid is not None
    server0, slapd0 = daemon.cpu(), cpu_seconds([slapd_pid])
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 120, check=True, cwd=REPO
    )
    server1, slapd1 = daemon.cpu(), cpu_seconds([slapd_pid])
    result: dict[str, Any] = json.loads(proc.stdout)
    n = max(1, result["attempts"])
    result["server_cpu_per_1k"] = round((server1 - server0) * 1000 / n, 3)
    result["slapd_cpu_per_1k"] = round((slapd1 - slapd0) * 1000 / n, 3)
    result["server"] = daemon.name
    return result


def load_cells(r: dict[str, Any]) -> list[object]:
    """A load result's table cells from p50 on: p50 ms, p99 ms, server and slapd CPU s/1k, client
    CPU s, attempts, no answer, bad→OK, good→NO."""
    return [
        f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['server_cpu_per_1k']:.3f}",
        f"{r['slapd_cpu_per_1k']:.3f}", f"{r['client_cpu_s']:.2f}", r["attempts"],
        r["verdicts"]["fail"], r["wrong_ok"], r["wrong_no"],
    ]  # fmt: skip
