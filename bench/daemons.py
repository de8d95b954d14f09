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

import array
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.common import cpu_seconds, percentile_ms, process_tree, stat_fields
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


Profile = Literal["default", "tuned"]


def idsvc_config(
    slapd: SlapdServer,
    base: str,
    sock: Path,
    *,
    listener: Listener,
    auth_method: str,
    cache: bool,
    profile: Profile = "default",
    ldap_extra: str = "",
) -> str:
    """The TOML of ``idsvc serve`` for a benchmark, LDAP backend, only ``listener`` on ``sock``,
    its control socket next to ``sock`` (so several can run side by side), REST API off.

    ``default`` is what a user runs: every ``[auth]`` / ``[logging]`` setting at its default
    except ``failure_delay = 0`` (the peers run with ``auth_failure_delay = 0`` too, so neither
    side sleeps) and, for the cache-off rows, ``cache = false``. ``tuned`` also turns penalties
    off, logs at WARNING, widens the LDAP pool and the pending/connection limits."""
    other: Listener = "dovecot_auth" if listener == "saslauthd" else "saslauthd"
    tuned = profile == "tuned"
    pool = "pool_size = 8\n" if tuned else ""
    auth_tuned = "penalty = false\nrehash_on_login = false\nmax_pending = 4096\n" if tuned else ""
    limits = f"[{listener}]\nmax_connections = 1024\n" if tuned else ""
    logging = '[logging]\nlevel = "WARNING"\n' if tuned else ""
    return f"""
[directory]
backend = "ldap"
[directory.ldap]
uris = ["{slapd.uri}"]
base_dn = "{base}"
bind_dn = "{slapd.reader_dn}"
bind_password = "{slapd.reader_pw}"
{pool}auth_method = "{auth_method}"
{ldap_extra}
[auth]
failure_delay = 0.0
cache = {"true" if cache else "false"}
{auth_tuned}{limits}[{listener}.socket]
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
[app_passwords]
path = "{sock.parent / "overlay.db"}"
{logging}"""


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
    profile: Profile = "default",
    workers: int | None = None,
    ldap_extra: str = "",
    extra: str = "",
    env: dict[str, str] | None = None,
) -> Iterator[tuple[Path, int]]:
    """Run ``idsvc serve`` (config ``work/<tag>.toml``, log ``work/<tag>.log``, socket below
    ``work/<tag>/``; ``--workers`` when given; ``env``: variables on top of the caller's minus
    its ``IDSVC_*``) until the block ends; yields (socket path, pid).
    """
    sock = work / tag / SOCKET_NAME[listener]
    sock.parent.mkdir(parents=True)
    config = work / f"{tag}.toml"
    config.write_text(
        idsvc_config(
            slapd, base, sock, listener=listener, auth_method=auth_method, cache=cache,
            profile=profile, ldap_extra=ldap_extra,
        ) + extra
    )  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IDSVC_")}
    environ.update(env or {})
    environ["IDSVC_CONFIG"] = str(config)
    log_path = work / f"{tag}.log"
    with log_path.open("wb") as log:
        argv = [sys.executable, "-c", "from idsvc.cli import main; raise SystemExit(main())"]
        argv.append("serve")
        if workers is not None:
            argv += ["--workers", str(workers)]
        proc = subprocess.Popen(
            argv,
            env=environ,
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
    processes: int | None = None,
    password_file: Path | None = None,
) -> dict[str, Any]:
    """One load of ``bench/loadclient.py`` against ``daemon``: ``processes`` client processes
    (default: 2 when ``concurrency`` allows, so the client is not one saturated core) sharing
    ``concurrency`` and ``requests``, run at once; their JSON results merged (counts summed,
    percentiles over all latencies, client CPU summed) plus ``server_cpu_per_1k`` /
    ``slapd_cpu_per_1k`` (CPU seconds per 1000 attempts), ``client_processes`` and ``server``."""
    procs = max(1, min(concurrency, processes if processes is not None else 2))
    shares = [concurrency // procs + (i < concurrency % procs) for i in range(procs)]
    slapd_pid = data.server.pid
    assert slapd_pid is not None
    with tempfile.TemporaryDirectory(prefix="idsvc-load-") as tmp:
        runs = []
        for i, share in enumerate(shares):
            budget = max(1, requests * share // concurrency)
            argv = [
                sys.executable, str(REPO / "bench" / "loadclient.py"),
                "--protocol", protocol, "--target", str(daemon.socket), "--service", "smtp",
                "--concurrency", str(share), "--requests", str(budget),
                "--duration", str(seconds), "--users", str(users),
                "--domains", str(data.domains), "--user-template", "user{n}@d{d}.example",
                "--password-template", data.password.replace("{", "{{").replace("}", "}}"),
                "--bad-ratio", str(bad_ratio), "--seed", str(concurrency * 100 + i),
                "--latency-file", str(Path(tmp) / f"lat-{i}"),
            ]  # fmt: skip
            if password_file is not None:
                argv += ["--password-file", str(password_file)]
            runs.append(argv)
        server0, slapd0 = daemon.cpu(), cpu_seconds([slapd_pid])
        children = [
            subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO) for argv in runs
        ]
        outputs = []
        for child in children:
            out, _ = child.communicate(timeout=seconds + 120)
            if child.returncode != 0:
                raise subprocess.CalledProcessError(child.returncode, child.args, out)
            outputs.append(json.loads(out))
        server1, slapd1 = daemon.cpu(), cpu_seconds([slapd_pid])
        latencies = array.array("d")
        for i in range(procs):
            with (Path(tmp) / f"lat-{i}").open("rb") as f:
                latencies.frombytes(f.read())
    result = _merge(outputs, sorted(latencies))
    n = max(1, result["attempts"])
    result["server_cpu_per_1k"] = round((server1 - server0) * 1000 / n, 3)
    result["slapd_cpu_per_1k"] = round((slapd1 - slapd0) * 1000 / n, 3)
    result["server"] = daemon.name
    return result


def _merge(outputs: list[dict[str, Any]], latencies: list[float]) -> dict[str, Any]:
    """Several simultaneous load-client results as one: counts summed, wall time the longest,
    percentiles over every latency."""
    merged: dict[str, Any] = dict(outputs[0])
    for key in ("attempts", "good", "bad", "wrong_ok", "wrong_no"):
        merged[key] = sum(int(o[key]) for o in outputs)
    merged["verdicts"] = {
        v: sum(int(o["verdicts"][v]) for o in outputs) for v in outputs[0]["verdicts"]
    }
    merged["concurrency"] = sum(int(o["concurrency"]) for o in outputs)
    merged["wall_s"] = max(float(o["wall_s"]) for o in outputs)
    merged["auths_per_s"] = round(merged["attempts"] / merged["wall_s"], 1)
    merged["client_cpu_s"] = round(sum(float(o["client_cpu_s"]) for o in outputs), 4)
    merged["client_processes"] = len(outputs)
    for name, q in (("p50_ms", 0.50), ("p90_ms", 0.90), ("p99_ms", 0.99)):
        merged[name] = round(percentile_ms(latencies, q), 3)
    merged["max_ms"] = round(latencies[-1] * 1000, 3) if latencies else 0.0
    return merged


def interleaved(
    daemons: list[Daemon], rounds: int, measure: Callable[[Daemon], dict[str, Any]]
) -> list[dict[str, Any]]:
    """``measure`` every daemon ``rounds`` times, A B A B …, rotating who goes first each round,
    so a change in a shared machine's load hits all of them alike; each result gets ``round``."""
    out = []
    for rnd in range(rounds):
        shift = rnd % len(daemons)
        for daemon in daemons[shift:] + daemons[:shift]:
            result = measure(daemon)
            result["round"] = rnd
            print(json.dumps(result), file=sys.stderr)
            out.append(result)
    return out


MEDIAN_KEYS = (
    "auths_per_s", "p50_ms", "p99_ms", "server_cpu_per_1k", "slapd_cpu_per_1k", "client_cpu_s",
)  # fmt: skip


def summarize(results: list[dict[str, Any]], group: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per distinct ``(server, *group)``: medians over rounds of :data:`MEDIAN_KEYS`,
    the throughput spread (min, max), sums of counts."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["server"], *(r[k] for k in group)), []).append(r)
    rows = []
    for key, runs in groups.items():
        row: dict[str, Any] = {"server": key[0], **dict(zip(group, key[1:], strict=True))}
        row["rounds"] = len(runs)
        for name in MEDIAN_KEYS:
            row[name] = statistics.median(float(x[name]) for x in runs)
        row["spread"] = (min(x["auths_per_s"] for x in runs), max(x["auths_per_s"] for x in runs))
        for name in ("attempts", "wrong_ok", "wrong_no"):
            row[name] = sum(int(x[name]) for x in runs)
        row["verdicts"] = {"fail": sum(int(x["verdicts"]["fail"]) for x in runs)}
        row["client_processes"] = runs[0].get("client_processes", 1)
        rows.append(row)
    return rows


def load_cells(r: dict[str, Any]) -> list[object]:
    """A load result's table cells from p50 on: p50 ms, p99 ms, server and slapd CPU s/1k, client
    CPU s, attempts, no answer, bad→OK, good→NO."""
    return [
        f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['server_cpu_per_1k']:.3f}",
        f"{r['slapd_cpu_per_1k']:.3f}", f"{r['client_cpu_s']:.2f}", r["attempts"],
        r["verdicts"]["fail"], r["wrong_ok"], r["wrong_no"],
    ]  # fmt: skip
