"""Benchmark: idsvc's Postfix socketmap (``mailbox`` map) on the embedded store and on slapd, next
to Postfix's own ``ldap:`` table asking the same slapd the same question.

What it runs, all on this machine, in one go:

* one ``slapd`` (no TLS) loaded offline with ``--users`` accounts (``bench/ldapdata.py``) and an
  embedded store with as many (``bench/make_embedded.py``); both name users
  ``user<i>@d<i % 100>.example``;
* two ``idsvc serve`` processes, each with only the socketmap listener (embedded / LDAP
  backend; the lookup cache ``mail.cache_ttl`` off unless ``--mail-cache``, log level WARNING);
* the native side: Postfix's ``ldap:`` table (``postfix-ldap``) with a config file whose query is
  the one a hand-written ``virtual_mailbox_maps = ldap:…`` would use against our schema
  (``(&(objectClass=idsvcAccount)(idsvcAddress=%s))``, ``result_format = %d/%u/Maildir/``).

Two drivers, both reported:

* ``loop``: threads in this process (1, 8, 32), one persistent connection each, timing every
  lookup (p50/p99): a netstring client for the socketmap; for the native side python-ldap
  (libldap, like Postfix's table) running that same search on one bound connection per thread,
  i.e. the *ceiling* of ``ldap:`` (no Postfix dict layer on top);
* ``postmap``: Postfix's own clients, ``postmap -q -`` (keys on stdin, one persistent table
  connection per process), 1/8/32 processes at once; lookups/s from wall time only.

Keys: 90 % existing users, 10 % unknown addresses in hosted domains (a NOTFOUND); a wrong answer
counts as a failure. Rounds are interleaved (every target at one concurrency, then the next
concurrency; the target order rotates per round) and the table shows medians over ``--rounds``
(≥ 3). CPU per lookup of the server (idsvc's process tree) and of slapd comes from ``/proc``.

What it does not do: isolate the machine (it is shared: look at the spread and at the load
average it prints), or talk to anything but 127.0.0.1 and UNIX sockets. Every process it starts
is stopped by pid, also on errors.

Usage: ``.venv/bin/python bench/lookups.py [--users 100000] [--seconds 5] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    RunStats,
    cpu_seconds,
    ldap_connection,
    md_head,
    md_row,
    percentile_ms,
    process_tree,
    run_threads,
)
from bench.daemons import kill_tree, wait_socket  # noqa: E402
from bench.ldapdata import Dataset, load_users  # noqa: E402
from tests.fixtures.slapd import SlapdServer  # noqa: E402

POSTMAP = "/usr/sbin/postmap"
CONCURRENCY = (1, 8, 32)
UNKNOWN_SHARE = 0.1


# -- the keys and the expected answers ----------------------------------------------------------


def address(i: int) -> str:
    return f"user{i}@d{i % 100}.example"


def pick_key(rng: random.Random, users: int) -> tuple[str, str | None]:
    """(key, expected mailbox value or None for NOTFOUND)."""
    i = rng.randrange(users)
    if rng.random() < UNKNOWN_SHARE:
        return f"nobody{i}@d{i % 100}.example", None
    return address(i), f"d{i % 100}.example/user{i}/Maildir/"


# -- clients ------------------------------------------------------------------------------------


class SocketmapClient:
    """One persistent socketmap connection (netstrings, one request at a time)."""

    def __init__(self, path: Path, table: str = "mailbox") -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.table = table
        self.buf = b""

    def _read_netstring(self) -> bytes:
        while True:
            colon = self.buf.find(b":")
            if colon > 0:
                length = int(self.buf[:colon])
                end = colon + 1 + length
                if len(self.buf) > end:
                    if self.buf[end : end + 1] != b",":
                        raise ValueError("bad netstring terminator")
                    payload, self.buf = self.buf[colon + 1 : end], self.buf[end + 1 :]
                    return payload
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("socketmap server closed the connection")
            self.buf += chunk

    def lookup(self, key: str) -> str | None:
        """The value, None for NOTFOUND; raises on TEMP/PERM."""
        query = f"{self.table} {key}".encode()
        self.sock.sendall(b"%d:%s," % (len(query), query))
        reply = self._read_netstring().decode()
        status, _, value = reply.partition(" ")
        if status == "OK":
            return value
        if status == "NOTFOUND":
            return None
        raise RuntimeError(reply)

    def close(self) -> None:
        self.sock.close()


def ldap_filter(key: str) -> str:
    import ldap.filter

    return f"(&(objectClass=idsvcAccount)(idsvcAddress={ldap.filter.escape_filter_chars(key)}))"


class LdapTableClient:
    """What Postfix's ``ldap:`` table does per lookup, on one bound libldap connection."""

    def __init__(self, data: Dataset) -> None:
        self.conn = ldap_connection(data.server.uri)
        self.conn.simple_bind_s(data.server.reader_dn, data.server.reader_pw)
        self.base = data.base_dn

    def lookup(self, key: str) -> str | None:
        import ldap

        found = self.conn.search_ext_s(
            self.base, ldap.SCOPE_SUBTREE, ldap_filter(key), ["idsvcAddress"]
        )
        for _dn, attrs in found:
            for value in attrs.get("idsvcAddress", []):
                local, _, domain = value.decode().partition("@")
                return f"{domain}/{local}/Maildir/"
        return None

    def close(self) -> None:
        self.conn.unbind_s()


# -- targets ------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str  # "idsvc embedded", "idsvc slapd", "ldap: slapd"
    connect: Callable[[], Any]  # a loop client
    postmap_table: str  # the table argument of postmap -q -
    server_pid: int | None  # idsvc's pid (its tree is measured), None for the native table
    slapd_pid: int | None


def socketmap_config(work: Path, tag: str, backend: dict[str, Any], cache: bool) -> Path:
    sock_dir = work / tag
    sock_dir.mkdir(parents=True)
    lines = ["[directory]", f'backend = "{backend["backend"]}"']
    if backend["backend"] == "ldap":
        lines += [
            "[directory.ldap]",
            f'uris = ["{backend["uri"]}"]',
            f'base_dn = "{backend["base_dn"]}"',
            f'bind_dn = "{backend["bind_dn"]}"',
            f'bind_password = "{backend["bind_pw"]}"',
            "pool_size = 8",
        ]
    else:
        lines += ["[directory.embedded]", f'path = "{backend["path"]}"', "workers = 4"]
    lines += [
        "[mail]",
        f"cache_ttl = {30.0 if cache else 0.0}",
        "[socketmap]",
        "max_connections = 1024",
        "[socketmap.socket]",
        "enabled = true",
        f'path = "{sock_dir / "socketmap"}"',
        "mode = 0o666",
        "[saslauthd.socket]",
        "enabled = false",
        f'path = "{sock_dir / "mux"}"',
        "[dovecot_auth.socket]",
        "enabled = false",
        f'path = "{sock_dir / "auth-client"}"',
        "[dovecot_lua]",
        "enabled = false",
        f'listen = "unix:{sock_dir / "lua"}"',
        "[control.socket]",
        f'path = "{sock_dir / "control"}"',
        "[api]",
        "enabled = false",
        "[logging]",
        'level = "WARNING"',
    ]
    config = work / f"{tag}.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


@contextlib.contextmanager
def idsvc_socketmap(work: Path, tag: str, backend: dict[str, Any], cache: bool) -> Iterator[Any]:
    """``idsvc serve`` with only the socketmap listener; yields (socket path, pid)."""
    config = socketmap_config(work, tag, backend, cache)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDSVC_")}
    env["IDSVC_CONFIG"] = str(config)
    env["PYTHONPATH"] = str(REPO)
    log_path = work / f"{tag}.log"
    sock = work / tag / "socketmap"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from idsvc.cli import main; raise SystemExit(main())", "serve"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
        try:
            wait_socket(sock, proc, log_path)
            yield sock, proc.pid
        finally:
            kill_tree(proc.pid, proc)


def ldap_table_cf(work: Path, data: Dataset) -> Path:
    """The ``ldap:`` table config a site would write for virtual_mailbox_maps on our schema."""
    path = work / "ldap-mailbox.cf"
    path.write_text(
        f"server_host = {data.server.uri}\n"
        "version = 3\n"
        f"search_base = {data.base_dn}\n"
        "scope = sub\n"
        "query_filter = (&(objectClass=idsvcAccount)(idsvcAddress=%s))\n"
        "result_attribute = idsvcAddress\n"
        "result_format = %d/%u/Maildir/\n"
        "bind = yes\n"
        f"bind_dn = {data.server.reader_dn}\n"
        f"bind_pw = {data.server.reader_pw}\n"
    )
    path.chmod(0o600)
    return path


# -- drivers ------------------------------------------------------------------------------------


def loop_run(target: Target, users: int, threads: int, seconds: float, seed: int) -> RunStats:
    latencies: list[float] = []
    lock = threading.Lock()
    counts = {"ops": 0, "failures": 0}
    deadline = time.perf_counter() + seconds

    def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        client = target.connect()
        mine: list[float] = []
        fails = 0
        try:
            while time.perf_counter() < deadline:
                key, expected = pick_key(rng, users)
                start = time.perf_counter()
                try:
                    fails += client.lookup(key) != expected
                except Exception:  # any error is a failed lookup, counted
                    fails += 1
                mine.append(time.perf_counter() - start)
        finally:
            client.close()
        with lock:
            latencies.extend(mine)
            counts["ops"] += len(mine)
            counts["failures"] += fails

    server0 = tree_cpu(target.server_pid)
    slapd0 = cpu_seconds([target.slapd_pid]) if target.slapd_pid else 0.0
    t0 = time.perf_counter()
    run_threads(worker, threads)
    elapsed = time.perf_counter() - t0
    stats = RunStats(counts["ops"], elapsed, latencies, counts["failures"])
    stats.cpu = tree_cpu(target.server_pid) - server0
    stats.server_cpu = (cpu_seconds([target.slapd_pid]) if target.slapd_pid else 0.0) - slapd0
    return stats


def tree_cpu(pid: int | None) -> float:
    return 0.0 if pid is None else cpu_seconds(process_tree(pid))


def postmap_run(
    target: Target, users: int, procs: int, total: int, seed: int, work: Path
) -> RunStats:
    """``procs`` concurrent ``postmap -q - <table>`` sharing ``total`` keys."""
    per_proc = max(1, total // procs)
    files = []
    expected: list[dict[str, str | None]] = []
    for n in range(procs):
        rng = random.Random(seed * 1000 + n)
        keys = [pick_key(rng, users) for _ in range(per_proc)]
        path = work / f"keys-{n}.txt"
        path.write_text("".join(k + "\n" for k, _ in keys))
        files.append(path)
        expected.append(dict(keys))
    config = work / "postfix-etc"
    config.mkdir(exist_ok=True)
    (config / "main.cf").write_text("compatibility_level = 3.6\n")
    server0 = tree_cpu(target.server_pid)
    slapd0 = cpu_seconds([target.slapd_pid]) if target.slapd_pid else 0.0
    t0 = time.perf_counter()
    running = []
    for path in files:
        with path.open("rb") as stdin:
            running.append(
                subprocess.Popen(
                    [POSTMAP, "-c", str(config), "-q", "-", target.postmap_table],
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
    outputs = [p.communicate(timeout=600) for p in running]
    elapsed = time.perf_counter() - t0
    failures = 0
    for (out, _err), want in zip(outputs, expected, strict=True):
        got = dict(line.split("\t", 1) for line in out.decode().splitlines() if "\t" in line)
        for key, value in want.items():
            failures += got.get(key) != value
    stats = RunStats(procs * per_proc, elapsed, [], failures)
    stats.cpu = tree_cpu(target.server_pid) - server0
    stats.server_cpu = (cpu_seconds([target.slapd_pid]) if target.slapd_pid else 0.0) - slapd0
    return stats


# -- main ---------------------------------------------------------------------------------------


def row(name: str, driver: str, conc: int, runs: list[RunStats]) -> list[object]:
    rate = statistics.median(r.rate for r in runs)
    lat = driver == "loop"
    p50 = statistics.median(percentile_ms(r.latencies, 0.5) for r in runs) if lat else None
    p99 = statistics.median(percentile_ms(r.latencies, 0.99) for r in runs) if lat else None
    server_us = statistics.median(1e6 * r.cpu / max(1, r.ops) for r in runs)
    slapd_us = statistics.median(1e6 * r.server_cpu / max(1, r.ops) for r in runs)
    spread = f"{min(r.rate for r in runs):.0f}-{max(r.rate for r in runs):.0f}"
    return [
        name, driver, conc, f"{rate:.0f}", spread,
        "-" if p50 is None else f"{p50:.2f}", "-" if p99 is None else f"{p99:.2f}",
        "-" if name.startswith("ldap:") else f"{server_us:.0f}", f"{slapd_us:.0f}",
        sum(r.failures for r in runs),
    ]  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--seconds", type=float, default=5.0, help="per loop run")
    p.add_argument("--postmap-keys", type=int, default=1000, help="keys per postmap run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    p.add_argument("--drivers", nargs="+", default=["loop", "postmap"])
    p.add_argument("--mail-cache", action="store_true", help="keep idsvc's lookup cache on")
    args = p.parse_args(argv)
    if args.rounds < 3:
        p.error("--rounds must be at least 3 (medians)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(POSTMAP).exists():
        print(
            "postfix (postmap) must be installed; postfix-ldap for the ldap: table", file=sys.stderr
        )
        return 2
    from bench.make_embedded import build

    work = Path(tempfile.mkdtemp(prefix="idsvc-lookbench-"))
    slapd = SlapdServer(tls=False)
    try:
        t0 = time.monotonic()
        data = load_users(slapd, args.users)
        asyncio.run(build(args.users, work / "embedded.db"))
        print(f"# data: {args.users} users in slapd and in the embedded store "
              f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)  # fmt: skip
        ldap_backend = {
            "backend": "ldap", "uri": slapd.uri, "base_dn": data.base_dn,
            "bind_dn": slapd.reader_dn, "bind_pw": slapd.reader_pw,
        }  # fmt: skip
        embedded = {"backend": "embedded", "path": work / "embedded.db"}
        with contextlib.ExitStack() as stack:
            emb_sock, emb_pid = stack.enter_context(
                idsvc_socketmap(work, "emb", embedded, args.mail_cache)
            )
            ldap_sock, ldap_pid = stack.enter_context(
                idsvc_socketmap(work, "ldap", ldap_backend, args.mail_cache)
            )
            cf = ldap_table_cf(work, data)
            targets = [
                Target("idsvc embedded", lambda: SocketmapClient(emb_sock),
                       f"socketmap:unix:{emb_sock}:mailbox", emb_pid, None),
                Target("idsvc slapd", lambda: SocketmapClient(ldap_sock),
                       f"socketmap:unix:{ldap_sock}:mailbox", ldap_pid, slapd.pid),
                Target("ldap: slapd", lambda: LdapTableClient(data), f"ldap:{cf}", None,
                       slapd.pid),
            ]  # fmt: skip
            results: dict[tuple[str, str, int], list[RunStats]] = {}
            load0 = os.getloadavg()
            for rnd in range(args.rounds):
                for conc in args.concurrency:
                    order = targets[rnd % 3 :] + targets[: rnd % 3]  # rotate per round
                    for target in order:
                        for driver in args.drivers:
                            if driver == "loop":
                                stats = loop_run(target, args.users, conc, args.seconds, rnd)
                            else:
                                stats = postmap_run(
                                    target, args.users, conc, args.postmap_keys, rnd, work
                                )
                            results.setdefault((target.name, driver, conc), []).append(stats)
                            print(f"# round {rnd} {target.name} {driver} c={conc}: "
                                  f"{stats.rate:.0f}/s, {stats.failures} failures",
                                  file=sys.stderr)  # fmt: skip
            load1 = os.getloadavg()
    finally:
        slapd.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nmailbox lookups on {args.users} users ({int(UNKNOWN_SHARE * 100)} % unknown), "
        f"medians of {args.rounds} interleaved rounds, idsvc lookup cache "
        f"{'on' if args.mail_cache else 'off'}; {os.cpu_count()} CPUs shared, load average "
        f"{load0[0]:.1f} before / {load1[0]:.1f} after\n"
    )
    head = [
        "table", "driver", "conc", "lookups/s", "min-max", "p50 ms", "p99 ms",
        "idsvc CPU µs/lookup", "slapd CPU µs/lookup", "wrong/failed",
    ]  # fmt: skip
    print("\n".join(md_head(head, left=2)))
    for (name, driver, conc), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        print(md_row(row(name, driver, conc, runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
