"""Benchmark: idsvc's saslauthd mux vs Cyrus ``saslauthd -a ldap``, same slapd, same users.

What it runs, all on this machine, in one go:

* one real ``slapd`` (``tests.fixtures.slapd.SlapdServer``, no TLS) loaded offline with
  ``--users`` ``{SSHA}`` accounts by ``bench/ldapdata.py``;
* **idsvc** as its own process (``idsvc serve``, LDAP backend, only the saslauthd listener,
  cache off, failure delay 0) in its **default** configuration (everything else at its default:
  penalties on, INFO logging, serve's default worker count unless ``--workers``) and, with
  ``--profiles default tuned``, the tuned one too (``bench/daemons.py``: penalties off, WARNING
  logging, wider pool) — ``auth_method`` ``search`` (read the hash, verify here) and, with
  ``--ours-bind``, ``bind``;
* **Cyrus saslauthd** 2.1.28 (Debian ``sasl2-bin``) ``-a ldap -n 5`` without ``-c`` (cache off),
  ``ldap_auth_method: bind`` and ``custom`` (read ``userPassword``, compare in saslauthd);
* all servers run side by side; for each concurrency (1, 8, 32) and each of ``--rounds`` rounds,
  each server in turn (order rotated per round) gets a warm-up and then ``bench/loadclient.py`` as
  two client processes (good/bad mix ``--bad-ratio``), bounded by ``--requests`` and
  ``--duration``. Medians over rounds are reported, with the min-max of auths/s.

Figures per run: auths/s, p50/p99 latency (client side), server CPU seconds per 1000 auths (from
``/proc/<pid>/stat`` utime+stime summed over the daemon's process tree, threads included), the
same for slapd, the client's own CPU, and correctness (a bad password answered OK, a good one
answered NO, failures). Prints a markdown table, and the throughput/p99 ratios against each Cyrus
mode.

What it does not do: pin CPUs or isolate the box (the machine is shared — run it twice and look
at the spread), or talk to anything but 127.0.0.1 and UNIX sockets. Every process it starts is
stopped by pid at the end, also on errors.

Usage: ``.venv/bin/python bench/saslauthd_vs_cyrus.py [--users 100000] [--duration 8]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import md_head, md_row, ratio  # noqa: E402
from bench.daemons import (  # noqa: E402
    Daemon,
    Profile,
    idsvc_serve,
    interleaved,
    kill_tree,
    load_cells,
    loaded_slapd,
    run_loadclient,
    summarize,
    wait_socket,
)
from bench.ldapdata import Dataset  # noqa: E402
from tests.fixtures.slapd import SlapdServer  # noqa: E402

SASLAUTHD = "/usr/sbin/saslauthd"
CONCURRENCIES = (1, 8, 32)


# -- servers under test ---------------------------------------------------------------------------


@contextlib.contextmanager
def idsvc_daemon(
    work: Path,
    slapd: SlapdServer,
    base: str,
    auth_method: str,
    *,
    cache: bool = False,
    profile: Profile = "default",
    workers: int | None = None,
) -> Iterator[Daemon]:
    cached = ", cache on" if cache else ""
    procs = "" if workers is None else f", {workers}w"
    tag = f"{auth_method}, {profile}{procs}{cached}"
    name = f"idsvc-{auth_method}-{profile}-{workers}{'-cache' if cache else ''}"
    with idsvc_serve(
        work, name, slapd, base, listener="saslauthd", auth_method=auth_method, cache=cache,
        profile=profile, workers=workers,
    ) as (mux, pid):  # fmt: skip
        yield Daemon(f"idsvc ({tag})", mux, pid)


@contextlib.contextmanager
def cyrus_daemon(
    work: Path, slapd: SlapdServer, base: str, method: str, workers: int
) -> Iterator[Daemon]:
    rundir = work / f"cyrus-{method}"
    rundir.mkdir()
    conf = work / f"cyrus-{method}.conf"
    conf.write_text(
        f"ldap_servers: {slapd.uri}/\n"
        f"ldap_bind_dn: {slapd.reader_dn}\n"
        f"ldap_bind_pw: {slapd.reader_pw}\n"
        f"ldap_search_base: {base}\n"
        "ldap_scope: sub\n"
        "ldap_filter: (&(objectClass=idsvcAccount)(idsvcAddress=%u))\n"
        f"ldap_auth_method: {method}\n"
        "ldap_version: 3\n"
        "ldap_timeout: 10\n"
        "ldap_time_limit: 10\n"
    )
    conf.chmod(0o600)
    # no -c: credential cache off; -n: preforked worker processes; it daemonizes
    subprocess.run(
        [SASLAUTHD, "-a", "ldap", "-O", str(conf), "-n", str(workers), "-m", str(rundir)],
        check=True,
        timeout=30,
    )
    pid_file = rundir / "saslauthd.pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    root = int(pid_file.read_text().split()[0])
    try:
        wait_socket(rundir / "mux")
        time.sleep(0.3)  # let the workers fork
        yield Daemon(f"cyrus saslauthd ({method}, -n {workers})", rundir / "mux", root)
    finally:
        kill_tree(root)


# -- load -----------------------------------------------------------------------------------------


def run_load(
    daemon: Daemon, data: Dataset, args: argparse.Namespace, concurrency: int, seconds: float
) -> dict[str, Any]:
    return run_loadclient(
        daemon, data, protocol="saslauthd", users=data.users, concurrency=concurrency,
        requests=args.requests, seconds=seconds, bad_ratio=args.bad_ratio,
    )  # fmt: skip


def bench_all(
    daemons: list[Daemon], data: Dataset, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Every (server, concurrency) measured ``--rounds`` times, the servers interleaved."""
    out = []
    for c in args.concurrency:

        def measure(daemon: Daemon, c: int = c) -> dict[str, Any]:
            run_load(daemon, data, args, c, args.warmup)  # connections, slapd's caches
            return run_load(daemon, data, args, c, args.duration)

        out += interleaved(daemons, args.rounds, measure)
    return out


def _row(r: dict[str, Any]) -> str:
    spread = f"({r['spread'][0]:.0f}-{r['spread'][1]:.0f})"
    return md_row(
        [r["server"], r["concurrency"], f"{r['auths_per_s']:.0f} {spread}", *load_cells(r)]
    )


def table(results: list[dict[str, Any]]) -> str:
    head = md_head(
        ["server", "conc", "auths/s (min-max)", "p50 ms", "p99 ms", "server CPU s/1k",
         "slapd CPU s/1k", "client CPU s", "attempts", "fail", "bad→OK", "good→NO"]
    )  # fmt: skip
    return "\n".join(head + [_row(r) for r in results]) + "\n"


def ratios(results: list[dict[str, Any]]) -> str:
    ours = [r for r in results if r["server"].startswith("idsvc")]
    theirs = [r for r in results if r["server"].startswith("cyrus")]
    lines = md_head(["ours", "vs", "conc", "throughput ratio", "p99 ours/theirs"], left=2)
    for o in ours:
        for t in theirs:
            if t["concurrency"] != o["concurrency"]:
                continue
            tp = ratio(o["auths_per_s"], t["auths_per_s"])
            p99 = ratio(o["p99_ms"], t["p99_ms"])
            lines.append(
                md_row([o["server"], t["server"], o["concurrency"], f"{tp:.2f}", f"{p99:.2f}"])
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="idsvc saslauthd mux vs Cyrus saslauthd -a ldap")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=1.5, help="seconds of warm-up per run")
    p.add_argument("--requests", type=int, default=1_000_000, help="cap per run")
    p.add_argument("--bad-ratio", type=float, default=0.2)
    p.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCIES))
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions per setting")
    p.add_argument("--cyrus-workers", type=int, default=5)
    p.add_argument("--ours-bind", action="store_true", help="also run idsvc with auth_method=bind")
    p.add_argument(
        "--ours-cache",
        action="store_true",
        help="also run idsvc with auth.cache on (random users: few credential hits, but the "
        "auth core then also caches domains, saving one LDAP search per auth)",
    )
    p.add_argument("--skip-cyrus", action="store_true")
    p.add_argument("--profiles", nargs="+", choices=["default", "tuned"], default=["default"])
    p.add_argument(
        "--workers", type=int, nargs="+", help="idsvc serve --workers (default: serve's own)"
    )
    p.add_argument("--json", type=Path, help="also write all results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("saslauthd needs root (it writes its pid file and socket as root)", file=sys.stderr)
        return 2
    if not Path(SASLAUTHD).exists() and not args.skip_cyrus:
        print(f"{SASLAUTHD} missing (Debian package sasl2-bin)", file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    with loaded_slapd(args.users, "idsvc-bench-") as (work, data):
        slapd = data.server
        methods = ["search", "bind"] if args.ours_bind else ["search"]
        caches = [False, True] if args.ours_cache else [False]
        with contextlib.ExitStack() as stack:
            daemons = [
                stack.enter_context(
                    idsvc_daemon(
                        work, slapd, data.base_dn, m, cache=cache, profile=profile, workers=w
                    )
                )
                for m in methods
                for cache in caches
                for profile in args.profiles
                for w in args.workers or [None]
            ]
            if not args.skip_cyrus:
                daemons += [
                    stack.enter_context(
                        cyrus_daemon(work, slapd, data.base_dn, m, args.cyrus_workers)
                    )
                    for m in ("bind", "custom")
                ]
            results = bench_all(daemons, data, args)
    print(
        f"\n{args.users} {{SSHA}} users, bad-ratio {args.bad_ratio}, "
        f"{args.duration:.0f} s per run, {os.cpu_count()} CPUs (shared)\n"
    )
    rows = summarize(results, ("concurrency",))
    print(f"medians over {args.rounds} interleaved rounds\n")
    print(table(rows))
    print(ratios(rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
