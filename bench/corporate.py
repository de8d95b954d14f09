"""Benchmark: bind-through authentication against a read-only directory, with its ceiling and
its peer in the same run, plus app passwords on top of it.

What it runs, all on this machine, in one go:

* one real ``slapd`` (``tests.fixtures.slapd.SlapdServer``, no TLS, ``olcLogLevel: 0``) loaded
  offline with ``--users`` accounts by ``bench/ldapdata.py`` (one password for all);
* **raw binds** — python-ldap simple binds as random users' DNs, one persistent connection per
  thread (the ceiling: no search, no protocol, no decision);
* **Dovecot 2.3** ``passdb ldap`` with ``auth_bind = yes`` (its LDAP bind-through), cache off,
  ``auth_failure_delay = 0``;
* **idsvc** in its default configuration (cache off, failure delay 0, every other setting at its
  default) reading the directory **read-only** through a corporate profile (``inetorgperson``
  with ``mapping`` overrides naming our bench schema's attributes), ``auth_method = "bind"``:
  search the user's DN, bind as it on the binder pool — the corporate/AD code path;
* **idsvc, app passwords**: the same daemon, each of ``--app-users`` users with an app password
  made through the overlay, logging in with it (no bind: the overlay answers).

For each concurrency (1, 8, 32) and each of ``--rounds`` rounds the four take turns (the order
rotated every round); Dovecot and idsvc are driven by ``bench/loadclient.py --protocol dovecot``
in two processes; the raw binds run in this process's threads. Medians over rounds; server and
slapd CPU per 1000 auths from ``/proc``; the load client's CPU is reported.

Usage: ``.venv/bin/python bench/corporate.py [--users 100000] [--duration 6]`` (root: Dovecot).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import md_head, md_row, ratio, threaded_ldap_load  # noqa: E402
from bench.daemons import Daemon, idsvc_serve, loaded_slapd, run_loadclient  # noqa: E402
from bench.dovecot_compare import dovecot_daemon  # noqa: E402
from bench.ldapdata import Dataset  # noqa: E402
from idsvc.overlay import OverlayStore  # noqa: E402

CONCURRENCIES = (1, 8, 32)
MAPPING = (
    'mapping = { user_filter = "(&(objectClass=idsvcAccount)(idsvcAddress=%u))", '
    'address_filter = "(&(objectClass=idsvcAccount)(idsvcAddress=%u))", '
    'list_filter = "(objectClass=idsvcAccount)", primary = "idsvcAddress", stable_id = "" }'
)


def corporate_ldap(data: Dataset) -> str:
    domains = ", ".join(f'"d{d}.example"' for d in range(data.domains))
    return f'profile = "inetorgperson"\nmail_domains = [{domains}]\n{MAPPING}\n'


def dn_of(data: Dataset, i: int) -> str:
    addr = data.address(i)
    return f"cn={addr},idsvcDomainName=d{i % data.domains}.example,ou=domains,{data.base_dn}"


async def make_app_passwords(path: Path, data: Dataset, count: int) -> list[str]:
    """One app password for each of the first ``count`` users (subject = address: the mapping
    sets ``stable_id = ""`` so the bench can make them offline); their secrets in user order."""
    store = await OverlayStore.open(path)
    try:
        secrets = []
        for i in range(count):
            addr = data.address(i)
            _app, secret = await store.create(addr, addr, "bench")
            secrets.append(secret)
        return secrets
    finally:
        await store.close()


def raw_row(data: Dataset, concurrency: int, seconds: float) -> dict[str, Any]:
    """Raw python-ldap binds in threads (this process), as a loadclient-shaped result."""

    def bind(conn: Any, dn: str) -> bool:
        conn.simple_bind_s(dn, data.password)
        return True

    stats = threaded_ldap_load(
        data.server.uri, lambda rng: dn_of(data, rng.randrange(data.users)), bind,
        threads=concurrency, seconds=seconds, limit=2_000_000, server_pid=data.server.pid,
    )  # fmt: skip
    n = max(1, stats.ops)
    return {
        "server": "raw python-ldap binds", "concurrency": concurrency,
        "auths_per_s": stats.rate, "p50_ms": stats.pct(0.50), "p99_ms": stats.pct(0.99),
        "server_cpu_per_1k": 0.0, "slapd_cpu_per_1k": stats.server_cpu * 1000 / n,
        "client_cpu_s": stats.cpu, "attempts": stats.ops, "fail": stats.failures,
    }  # fmt: skip


def load(daemon: Daemon, data: Dataset, args: argparse.Namespace, c: int, seconds: float,
         users: int, password_file: Path | None = None) -> dict[str, Any]:  # fmt: skip
    result = run_loadclient(
        daemon, data, protocol="dovecot", users=users, concurrency=c, requests=args.requests,
        seconds=seconds, bad_ratio=0.0, password_file=password_file,
    )  # fmt: skip
    result["fail"] = result["verdicts"]["fail"] + result["wrong_no"]
    return result


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["server"], r["concurrency"]), []).append(r)
    rows = []
    for (server, c), runs in groups.items():
        row: dict[str, Any] = {"server": server, "concurrency": c, "rounds": len(runs)}
        for key in ("auths_per_s", "p50_ms", "p99_ms", "server_cpu_per_1k", "slapd_cpu_per_1k",
                    "client_cpu_s"):  # fmt: skip
            row[key] = statistics.median(float(r[key]) for r in runs)
        row["attempts"] = sum(int(r["attempts"]) for r in runs)
        row["fail"] = sum(int(r["fail"]) for r in runs)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = md_head(["server", "conc", "auths/s", "p50 ms", "p99 ms", "server CPU s/1k",
                     "slapd CPU s/1k", "client CPU s", "attempts", "fail"])  # fmt: skip
    for r in rows:
        lines.append(md_row([
            r["server"], r["concurrency"], f"{r['auths_per_s']:.0f}", f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}", f"{r['server_cpu_per_1k']:.3f}",
            f"{r['slapd_cpu_per_1k']:.3f}", f"{r['client_cpu_s']:.2f}", r["attempts"], r["fail"],
        ]))  # fmt: skip
    return "\n".join(lines) + "\n"


def ratios(rows: list[dict[str, Any]]) -> str:
    by = {(r["server"], r["concurrency"]): r for r in rows}
    lines = md_head(["conc", "idsvc / Dovecot auth_bind", "idsvc / raw binds",
                     "app passwords / bind-through"], left=1)  # fmt: skip
    for c in sorted({r["concurrency"] for r in rows}):
        ours = by.get(("idsvc bind-through (default)", c))
        dove = by.get(("dovecot (auth_bind, cache off)", c))
        raw = by.get(("raw python-ldap binds", c))
        apps = by.get(("idsvc app passwords (default)", c))
        if ours is None:
            continue

        def r(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
            return (
                "—"
                if a is None or b is None
                else f"{ratio(a['auths_per_s'], b['auths_per_s']):.2f}"
            )

        lines.append(md_row([c, r(ours, dove), r(ours, raw), r(apps, ours)]))
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="bind-through vs Dovecot auth_bind vs raw binds")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--app-users", type=int, default=2_000, help="users given an app password")
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=1_000_000)
    p.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCIES))
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("dovecot's master needs root", file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    with loaded_slapd(args.users, "idsvc-corpbench-") as (work, data):
        os.chmod(work, 0o755)  # noqa: S103 - dovecot's unprivileged auth process reads its config
        with contextlib.ExitStack() as stack:
            sock, pid = stack.enter_context(
                idsvc_serve(
                    work, "idsvc-corp", data.server, data.base_dn, listener="dovecot_auth",
                    auth_method="bind", cache=False, ldap_extra=corporate_ldap(data),
                )
            )  # fmt: skip
            # the running server reads app passwords made now by this process (SQLite WAL)
            count = min(args.app_users, data.users)
            secrets = asyncio.run(make_app_passwords(sock.parent / "overlay.db", data, count))
            pwfile = Path(tempfile.mkstemp(prefix="apppw-", dir=work)[1])
            pwfile.write_text("\n".join(secrets) + "\n")
            ours = Daemon("idsvc bind-through (default)", sock, pid)
            apps = Daemon("idsvc app passwords (default)", sock, pid)
            dove = stack.enter_context(
                dovecot_daemon(work, data.server, data.base_dn, bind=True, cache=False)
            )
            for c in args.concurrency:
                targets = ["raw", "dovecot", "idsvc", "apps"]
                for rnd in range(args.rounds):
                    shift = rnd % len(targets)
                    for t in targets[shift:] + targets[:shift]:
                        if t == "raw":
                            raw_row(data, c, args.warmup)
                            result = raw_row(data, c, args.duration)
                        elif t == "apps":
                            n = len(secrets)
                            load(apps, data, args, c, args.warmup, n, pwfile)
                            result = load(apps, data, args, c, args.duration, n, pwfile)
                        else:
                            d = dove if t == "dovecot" else ours
                            load(d, data, args, c, args.warmup, data.users)
                            result = load(d, data, args, c, args.duration, data.users)
                        result["round"] = rnd
                        print(json.dumps(result), file=sys.stderr)
                        results.append(result)
    rows = summarize(results)
    print(
        f"\n{args.users} users, {args.app_users} with an app password, {args.duration:.0f} s "
        f"per run, medians of {args.rounds} interleaved rounds, {os.cpu_count()} CPUs\n"
    )
    print(table(rows))
    print(ratios(rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
