"""Benchmark: idsvc's Dovecot auth-client listener vs Dovecot's own auth service, same slapd,
same users, same protocol, same load client.

What it runs, all on this machine, in one go:

* one real ``slapd`` (``tests.fixtures.slapd.SlapdServer``, no TLS) loaded offline with
  ``--users`` ``{SSHA}`` accounts by ``bench/ldapdata.py``;
* **idsvc** as its own process (``idsvc serve``, LDAP backend, only the Dovecot auth listener,
  ``auth_method = search`` (and ``bind`` with ``--ours-bind``), failure delay 0) in its
  **default** configuration (penalties on, INFO logging, serve's default worker count) and, with
  ``--profiles default tuned``, the tuned one (``bench/daemons.py``), with ``--workers`` counts
  when given; with the compiled hot path when it is built (``idsvc/_native.py``; rows say
  "compiled" or "pure"), and with ``--native on off`` also as pure Python; with the decision
  cache off, then on;
* **Dovecot** (Debian ``dovecot-core`` + ``dovecot-ldap``) started standalone with
  ``dovecot -F -c <temp conf>`` (no protocols, only the ``auth`` service and its
  ``auth-client`` listener), ``passdb ldap`` in two variants — password lookup
  (``pass_attrs = …userPassword=password``, Dovecot verifies the ``{SSHA}`` itself) and
  ``auth_bind = yes`` (with ``--peer-bind``) — each with ``auth_cache_size = 0`` then with a
  cache, and
  ``auth_failure_delay = 0``; requests carry ``no-penalty`` so Dovecot's anvil penalty is off too;
* all servers of one cache setting run side by side (idle ones cost nothing) and take turns:
  for each good/bad mix (``--bad-ratio``, default 0.0), each concurrency (1, 8, 32), ``--rounds``
  times (default 3, the order rotated each round), each server: a warm-up, then
  ``bench/loadclient.py --protocol dovecot`` in two processes (one persistent connection per
  worker, as Postfix's smtpd keeps one; PLAIN with ``resp=``), bounded by ``--requests`` and
  ``--duration``. Medians over the rounds are reported, with the min-max of auths/s. Cache-off
  runs pick among all users; cache-on runs among ``--hot-users`` (a working set that fits any
  cache, otherwise a cache on 100k random users measures nothing).

Why two mixes: Dovecot 2.3 never answers a failure at once. Even with ``auth_failure_delay = 0``
it queues every FAIL and flushes the queue from a 500 ms timer (``AUTH_FAILURE_DELAY_CHECK_MSECS``
in ``src/auth/auth-request-handler.c``; the passdb field ``nodelay`` would skip it but is rolled
back on a password mismatch). With bad passwords in the mix, Dovecot's throughput is bounded by
that timer, not by its work; the good-only mix (0.0) measures its real capacity.

Figures per run: auths/s, p50/p99 latency (client side), server CPU seconds per 1000 auths
(utime+stime of the daemon's whole process tree from ``/proc``), slapd CPU per 1000, the client's
own CPU, and correctness (bad password → OK, good → FAIL, no answer). Prints a markdown table and
the idsvc/Dovecot ratios for the like-for-like pairs (cache off vs off, on vs on).

What it does not do: pin CPUs or isolate the box (the machine is shared — run it twice and look
at the spread), or talk to anything but 127.0.0.1 and UNIX sockets. Every process it starts is
stopped by pid at the end, also on errors.

Usage: ``.venv/bin/python bench/dovecot_compare.py [--users 100000] [--duration 8]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
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
from idsvc import _native  # noqa: E402
from tests.fixtures.slapd import SlapdServer  # noqa: E402

DOVECOT = "/usr/sbin/dovecot"
DOVECOT_LDAP_MODULE = Path("/usr/lib/dovecot/modules/auth/libauthdb_ldap.so")
CONCURRENCIES = (1, 8, 32)
FILTER = "(&(objectClass=idsvcAccount)(idsvcAddress=%u))"


@contextlib.contextmanager
def idsvc_daemon(
    work: Path,
    slapd: SlapdServer,
    base: str,
    *,
    cache: bool,
    method: str = "search",
    profile: Profile = "default",
    workers: int | None = None,
    native: bool = True,
) -> Iterator[Daemon]:
    """``native``: the compiled hot path when it is built (else pure Python, and the row says
    so); False runs it as pure Python (``IDSVC_NATIVE=off``)."""
    on = "on" if cache else "off"
    build = "compiled" if native and _native.check() is None else "pure"
    tag = f"idsvc-{method}-{profile}-{workers}-{build}-cache-{on}"
    procs = "" if workers is None else f", {workers}w"
    with idsvc_serve(
        work, tag, slapd, base, listener="dovecot_auth", auth_method=method, cache=cache,
        profile=profile, workers=workers, env={} if native else {"IDSVC_NATIVE": "off"},
    ) as (sock, pid):  # fmt: skip
        yield Daemon(f"idsvc ({method}, {profile}{procs}, {build}, cache {on})", sock, pid, cache)


def dovecot_conf(
    work: Path, tag: str, slapd: SlapdServer, base: str, *, bind: bool, cache: bool
) -> Path:
    root = work / tag
    root.mkdir()
    ldap_conf = root / "dovecot-ldap.conf.ext"
    attrs = "idsvcAddress=user" if bind else "idsvcAddress=user,userPassword=password"
    ldap_conf.write_text(
        f"uris = {slapd.uri}\n"
        f"dn = {slapd.reader_dn}\n"
        f"dnpass = {slapd.reader_pw}\n"
        f"base = {base}\n"
        "scope = subtree\n"
        "ldap_version = 3\n"
        f"pass_filter = {FILTER}\n"
        f"pass_attrs = {attrs}\n"
        f"auth_bind = {'yes' if bind else 'no'}\n"
        "default_pass_scheme = SSHA\n"
    )
    ldap_conf.chmod(0o600)
    conf = root / "dovecot.conf"
    conf.write_text(
        f"""
base_dir = {root}/run
state_dir = {root}/state
instance_name = idsvc-bench-{tag}
log_path = {root}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_cache_size = {"64M" if cache else "0"}
auth_cache_ttl = 1 hour
auth_cache_negative_ttl = 1 hour
auth_verbose = no
passdb {{
  driver = ldap
  args = {ldap_conf}
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  client_limit = 1100
  unix_listener auth-client {{
    path = {root}/auth-client
    mode = 0666
  }}
}}
"""
    )
    return conf


@contextlib.contextmanager
def dovecot_daemon(
    work: Path, slapd: SlapdServer, base: str, *, bind: bool, cache: bool
) -> Iterator[Daemon]:
    tag = f"dovecot-{'bind' if bind else 'lookup'}-cache-{'on' if cache else 'off'}"
    conf = dovecot_conf(work, tag, slapd, base, bind=bind, cache=cache)
    log_path = conf.parent / "foreground.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_socket(conf.parent / "auth-client", proc, conf.parent / "dovecot.log")
            name = (
                f"dovecot ({'auth_bind' if bind else 'lookup'}, cache {'on' if cache else 'off'})"
            )
            yield Daemon(name, conf.parent / "auth-client", proc.pid, cache)
        finally:
            kill_tree(proc.pid, proc)


# -- load -----------------------------------------------------------------------------------------


def run_load(
    daemon: Daemon,
    data: Dataset,
    args: argparse.Namespace,
    concurrency: int,
    seconds: float,
    bad_ratio: float,
) -> dict[str, Any]:
    users = min(args.hot_users, data.users) if daemon.cache else data.users
    result = run_loadclient(
        daemon, data, protocol="dovecot", users=users, concurrency=concurrency,
        requests=args.requests, seconds=seconds, bad_ratio=bad_ratio,
    )  # fmt: skip
    result["cache"] = daemon.cache
    result["users_picked_from"] = users
    result["bad_ratio"] = bad_ratio
    return result


def bench_cache_setting(
    daemons: list[Daemon], data: Dataset, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Every (mix, concurrency) cell ``--rounds`` times, the daemons interleaved per cell."""
    out = []
    for bad_ratio in args.bad_ratio:
        for c in args.concurrency:

            def measure(daemon: Daemon, c: int = c, bad: float = bad_ratio) -> dict[str, Any]:
                run_load(daemon, data, args, c, args.warmup, bad)  # connections, caches
                return run_load(daemon, data, args, c, args.duration, bad)

            out += interleaved(daemons, args.rounds, measure)
    return out


def _row(r: dict[str, Any]) -> str:
    spread = f"({r['spread'][0]:.0f}-{r['spread'][1]:.0f})"
    cells = [r["server"], f"{r['bad_ratio']:.1f}", r["concurrency"]]
    cells.append(f"{r['auths_per_s']:.0f} {spread}")
    return md_row([*cells, *load_cells(r)])


def table(results: list[dict[str, Any]]) -> str:
    head = md_head(
        ["server", "bad", "conc", "auths/s (min-max)", "p50 ms", "p99 ms", "server CPU s/1k",
         "slapd CPU s/1k", "client CPU s", "attempts", "no answer", "bad→OK", "good→FAIL"]
    )  # fmt: skip
    return "\n".join(head + [_row(r) for r in results]) + "\n"


def ratios(results: list[dict[str, Any]]) -> str:
    """idsvc / Dovecot for the same cache setting and concurrency (>1 = idsvc faster)."""
    ours = [r for r in results if r["server"].startswith("idsvc")]
    theirs = [r for r in results if r["server"].startswith("dovecot")]
    lines = md_head(
        ["ours", "vs", "bad", "conc", "throughput ours/theirs", "p99 ours/theirs",
         "CPU/1k ours/theirs"],
        left=2,
    )  # fmt: skip
    for o in ours:
        for t in theirs:
            same = ("concurrency", "cache", "bad_ratio")
            if any(t[k] != o[k] for k in same):
                continue
            tp = ratio(o["auths_per_s"], t["auths_per_s"])
            p99 = ratio(o["p99_ms"], t["p99_ms"])
            cpu = ratio(o["server_cpu_per_1k"], t["server_cpu_per_1k"])
            cells = [o["server"], t["server"], f"{o['bad_ratio']:.1f}", o["concurrency"]]
            lines.append(md_row([*cells, f"{tp:.2f}", f"{p99:.2f}", f"{cpu:.2f}"]))
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="idsvc Dovecot auth listener vs Dovecot auth (LDAP)")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--hot-users", type=int, default=2_000, help="working set of cache-on runs")
    p.add_argument("--duration", type=float, default=6.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run")
    p.add_argument("--requests", type=int, default=1_000_000, help="cap per run")
    p.add_argument("--bad-ratio", type=float, nargs="+", default=[0.0])
    p.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCIES))
    p.add_argument(
        "--only", choices=["idsvc", "dovecot"], help="run one side only (profiling, quick checks)"
    )
    p.add_argument("--ours-bind", action="store_true", help="also run idsvc with auth_method=bind")
    p.add_argument("--peer-bind", action="store_true", help="also run Dovecot with auth_bind=yes")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions per cell")
    p.add_argument("--profiles", nargs="+", choices=["default", "tuned"], default=["default"])
    p.add_argument(
        "--workers", type=int, nargs="+", help="idsvc serve --workers (default: serve's own)"
    )
    p.add_argument(
        "--native",
        nargs="+",
        choices=["on", "off"],
        default=["on"],
        help="idsvc's hot path compiled (on: when built, the default) and/or pure Python (off)",
    )
    p.add_argument("--cache", choices=["off", "on", "both"], default="both")
    p.add_argument("--json", type=Path, help="also write all results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only != "idsvc":
        if os.geteuid() != 0:
            print("dovecot's master needs root", file=sys.stderr)
            return 2
        if not Path(DOVECOT).exists() or not DOVECOT_LDAP_MODULE.exists():
            print("dovecot-core and dovecot-ldap must be installed", file=sys.stderr)
            return 2
    results: list[dict[str, Any]] = []
    with loaded_slapd(args.users, "idsvc-dvbench-") as (work, data):
        os.chmod(work, 0o755)  # noqa: S103 - dovecot's unprivileged auth process reads its config
        slapd = data.server
        caches = {"off": [False], "on": [True], "both": [False, True]}[args.cache]
        for cache in caches:
            with contextlib.ExitStack() as stack:
                daemons: list[Daemon] = []
                if args.only != "dovecot":
                    for method in ("search", "bind") if args.ours_bind else ("search",):
                        for profile in args.profiles:
                            for workers in args.workers or [None]:
                                for native in args.native:
                                    daemons.append(
                                        stack.enter_context(
                                            idsvc_daemon(
                                                work, slapd, data.base_dn, cache=cache,
                                                method=method, profile=profile, workers=workers,
                                                native=native == "on",
                                            )
                                        )
                                    )  # fmt: skip
                if args.only != "idsvc":
                    for bind in (False, True) if args.peer_bind else (False,):
                        daemons.append(
                            stack.enter_context(
                                dovecot_daemon(work, slapd, data.base_dn, bind=bind, cache=cache)
                            )
                        )
                results += bench_cache_setting(daemons, data, args)
    print(
        f"\n{args.users} {{SSHA}} users (cache-on runs: {args.hot_users} hot users), "
        f"bad-ratio {args.bad_ratio}, {args.duration:.0f} s per run, {os.cpu_count()} CPUs "
        "(shared)\n"
    )
    rows = summarize(results, ("cache", "bad_ratio", "concurrency"))
    print(f"medians over {args.rounds} interleaved rounds\n")
    print(table(rows))
    print(ratios(rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
