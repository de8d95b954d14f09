"""Benchmark of the auth core: Authenticator throughput and latency, with raw LDAP binds as ceiling.

What it measures (every figure is the median of ``--runs`` runs, each ``--seconds`` long):

* ``Authenticator.authenticate`` for ``{SSHA}`` users at concurrency 1 / 8 / 32 (asyncio tasks),
  cache off (every request reads the directory: account + domain lookups, inline SSHA verify) and
  cache on (a hot set of ``--hot`` users, warmed first, so the figure is the hit path);
  failure delay 0 and penalties off, as the brief asks;
  for the embedded store with ``--embedded-users`` users (default 1M, built once with
  ``bench/make_embedded.py`` and reused from ``--workdir``) and for slapd with ``--ldap-users``
  users (default 100k, loaded with ``bench/ldapdata.py``);
* raw python-ldap simple binds as each user's DN against the same slapd at the same concurrencies
  (threads, one persistent connection each): the ceiling our slapd figure is a ratio of;
* memory: RSS of a fresh process after 100k authentications (cache on, random users, 32 tasks)
  over the 1M-user and a 1k-user embedded store, and the 100k-user slapd.

Everything talks to 127.0.0.1 / files only; every loop is bounded by time and count. Prints a
markdown table. Run ``.venv/bin/python bench/auth.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    Cell,
    Meter,
    RunStats,
    md_head,
    md_row,
    rss_mib,
    summarise,
    threaded_ldap_load,
)
from idsvc.audit import AuditEvent  # noqa: E402
from idsvc.auth.engine import Authenticator  # noqa: E402
from idsvc.auth.request import AuthRequest, Outcome  # noqa: E402
from idsvc.config import AuthSettings, EmbeddedSettings, PasswordSettings  # noqa: E402
from idsvc.model import Secret  # noqa: E402
from idsvc.passwords import PasswordHasher  # noqa: E402

CONCURRENCY = (1, 8, 32)
MAX_REQUESTS_PER_RUN = 2_000_000  # count bound on top of the time bound


class NullSink:
    """The benchmark measures the engine, not a logger."""

    def emit(self, event: AuditEvent) -> None:
        pass


def login(i: int) -> str:
    """The users bench/make_embedded.py and bench/ldapdata.py create."""
    return f"user{i}@d{i % 100}.example"


def bench_settings(cache: bool) -> AuthSettings:
    return AuthSettings(failure_delay=0, penalty=False, cache=cache, cache_size=100_000)


# -- the Authenticator load loop ---------------------------------------------------------------


async def drive(
    auth: Authenticator,
    users: Sequence[int],
    password: str,
    concurrency: int,
    seconds: float,
    *,
    service: str = "imap",
    seed: int = 1,
    limit: int = MAX_REQUESTS_PER_RUN,
    server_pid: int | None = None,
) -> RunStats:
    """``concurrency`` tasks each authenticate random users from ``users`` until time is up
    or ``limit`` authentications are done."""
    latencies: list[float] = []
    counters = {"auths": 0, "failures": 0, "cached": 0}
    secret = Secret(password)
    deadline = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while time.perf_counter() < deadline and counters["auths"] < limit:
            counters["auths"] += 1
            request = AuthRequest(
                login=login(rng.choice(users)), password=secret, service=service, secured=True
            )
            start = time.perf_counter()
            result = await auth.authenticate(request)
            latencies.append(time.perf_counter() - start)
            counters["cached"] += result.cached
            if result.outcome is not Outcome.OK:
                counters["failures"] += 1

    with Meter(server_pid) as meter:
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return meter.stats(counters["auths"], latencies, counters["failures"], counters["cached"])


async def warm(auth: Authenticator, users: Sequence[int], password: str) -> None:
    """Authenticate every user once (32 at a time) so the cache holds them all."""
    secret = Secret(password)
    queue = list(users)

    async def worker() -> None:
        while queue:
            await auth.authenticate(AuthRequest(login(queue.pop()), secret, "imap", secured=True))

    await asyncio.gather(*(worker() for _ in range(32)))


async def engine_matrix(
    directory: Any,
    n_users: int,
    password: str,
    args: argparse.Namespace,
    label: str,
    server_pid: int | None = None,
) -> dict[tuple[str, int], Cell]:
    hasher = PasswordHasher(PasswordSettings())
    out: dict[tuple[str, int], Cell] = {}
    everyone = range(n_users)
    hot = random.Random(7).sample(everyone, min(args.hot, n_users))
    for cache in (False, True):
        for conc in CONCURRENCY:
            runs: list[RunStats] = []
            for run in range(args.runs):
                auth = Authenticator(directory, hasher, bench_settings(cache), audit=NullSink())
                try:
                    users: Sequence[int] = everyone
                    if cache:
                        users = hot
                        await warm(auth, hot, password)
                    runs.append(
                        await drive(
                            auth,
                            users,
                            password,
                            conc,
                            args.seconds,
                            seed=run + 1,
                            server_pid=server_pid,
                        )
                    )
                finally:
                    await auth.close()
            cell = summarise(runs)
            key = ("on" if cache else "off", conc)
            out[key] = cell
            print(
                f"  {label:9} cache {key[0]:3} c={conc:<2} {cell.rate:9.0f}/s "
                f"p50 {cell.p50:7.2f} ms p99 {cell.p99:7.2f} ms fail {cell.failures} "
                f"hits {cell.hit_ratio:.0%} cpu {cell.cpu_us:.0f} us slapd {cell.server_us:.0f} us",
                flush=True,
            )
    return out


# -- raw python-ldap simple binds (the ceiling) ------------------------------------------------


def raw_binds(
    uri: str,
    dn_of: Callable[[int], str],
    n_users: int,
    password: str,
    threads: int,
    seconds: float,
    server_pid: int | None = None,
) -> RunStats:
    """``threads`` threads, one persistent connection each, simple-bind as random users."""

    def bind(conn: Any, dn: str) -> bool:
        conn.simple_bind_s(dn, password)
        return True

    return threaded_ldap_load(
        uri, lambda rng: dn_of(rng.randrange(n_users)), bind, threads=threads, seconds=seconds,
        limit=MAX_REQUESTS_PER_RUN, server_pid=server_pid,
    )  # fmt: skip


def raw_matrix(
    uri: str,
    dn_of: Callable[[int], str],
    n_users: int,
    password: str,
    args: argparse.Namespace,
    server_pid: int | None,
) -> dict[int, Cell]:
    out: dict[int, Cell] = {}
    for conc in CONCURRENCY:
        cell = summarise(
            [
                raw_binds(uri, dn_of, n_users, password, conc, args.seconds, server_pid)
                for _ in range(args.runs)
            ]
        )
        out[conc] = cell
        print(
            f"  raw bind  c={conc:<2} {cell.rate:9.0f}/s p50 {cell.p50:7.2f} ms "
            f"p99 {cell.p99:7.2f} ms fail {cell.failures} "
            f"cpu {cell.cpu_us:.0f} us slapd {cell.server_us:.0f} us",
            flush=True,
        )
    return out


# -- memory: a fresh process per store ---------------------------------------------------------


async def open_store(kind: str, target: str) -> Any:
    """``embedded``: target is the SQLite path; ``ldap``: target is LdapSettings as JSON."""
    if kind == "embedded":
        from idsvc.directory.sqlite import SqliteDirectory

        return await SqliteDirectory.open(EmbeddedSettings(path=Path(target)))
    from idsvc.config import LdapSettings
    from idsvc.directory.ldap import LdapDirectory

    return await LdapDirectory.open(LdapSettings(**json.loads(target)))


async def memory_probe(args: argparse.Namespace) -> None:
    """Child process: open the store, run ``--count`` random authentications (cache on, 32
    tasks) in four steps, print RSS (MiB) after opening and after each step as JSON."""
    directory = await open_store(args.kind, args.target)
    try:
        auth = Authenticator(
            directory, PasswordHasher(PasswordSettings()), bench_settings(True), audit=NullSink()
        )
        rss = [rss_mib()]
        users = range(args.n_users)
        step = args.count // 4
        for i in range(4):
            stats = await drive(auth, users, args.password, 32, 3600, seed=i + 1, limit=step)
            if stats.failures:
                raise SystemExit(f"{stats.failures} authentications failed")
            del stats
            rss.append(rss_mib())
        print(json.dumps({"rss": rss, "cache_entries": len(auth.cache)}))
        await auth.close()
    finally:
        await directory.close()


def run_memory_probe(kind: str, target: str, n_users: int, password: str, count: int) -> Any:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "_memory",
            kind,
            target,
            "--n-users",
            str(n_users),
            "--password",
            password,
            "--count",
            str(count),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory probe {kind} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- orchestration -----------------------------------------------------------------------------


async def embedded_part(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from bench.make_embedded import PASSWORD, build
    from idsvc.directory.sqlite import SqliteDirectory

    path = embedded_path(args, args.embedded_users)
    if not path.exists():
        print(f"building {path} …", flush=True)
        built = await build(args.embedded_users, path)
        print(f"  {built.rows:,} users inserted in {built.insert_seconds:.1f} s", flush=True)
    directory = await SqliteDirectory.open(EmbeddedSettings(path=path))
    try:
        label = f"embedded {args.embedded_users:,}"
        results["engine"][label] = await engine_matrix(
            directory, args.embedded_users, PASSWORD, args, "embedded"
        )
    finally:
        await directory.close()


def embedded_path(args: argparse.Namespace, users: int) -> Path:
    return Path(args.workdir) / f"embedded-{users}.db"


def ldap_settings_json(data: Any, pool_size: int) -> str:
    server = data.server
    return json.dumps(
        {
            "uris": [server.uri],
            "base_dn": data.base_dn,
            "bind_dn": server.reader_dn,
            "bind_password": server.reader_pw,
            "pool_size": pool_size,
        }
    )


async def ldap_part(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from bench.ldapdata import load_users
    from idsvc.directory.filters import DN
    from idsvc.directory.ldap import LdapDirectory
    from idsvc.directory.mapping import IDSVC
    from idsvc.model import Address
    from tests.fixtures.slapd import SlapdServer

    server = SlapdServer(tls=False)
    try:
        print(f"loading {args.ldap_users:,} users into slapd …", flush=True)
        data = load_users(server, args.ldap_users)
        print(f"  loaded in {data.timings['total']:.1f} s", flush=True)
        label = f"slapd {args.ldap_users:,}"
        directory = await LdapDirectory.open(data.settings(pool_size=args.pool_size))
        try:
            results["engine"][label] = await engine_matrix(
                directory, args.ldap_users, data.password, args, "slapd", server.pid
            )
        finally:
            await directory.close()
        base = DN(data.base_dn)

        def dn_of(i: int) -> str:
            local, _, domain = data.address(i).partition("@")
            return str(IDSVC.account_dn(Address(local, domain), base))

        results["raw"] = raw_matrix(
            server.uri, dn_of, args.ldap_users, data.password, args, server.pid
        )
        results["raw_label"] = label
        if "memory" in args.parts:
            print("memory probe: slapd …", flush=True)
            results["memory"][label] = run_memory_probe(
                "ldap",
                ldap_settings_json(data, args.pool_size),
                args.ldap_users,
                data.password,
                args.memory_auths,
            )
    finally:
        server.cleanup()


async def memory_part(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from bench.make_embedded import PASSWORD, build

    for users in (args.embedded_users, 1000):
        path = embedded_path(args, users)
        if not path.exists():
            await build(users, path)
        print(f"memory probe: embedded {users:,} …", flush=True)
        results["memory"][f"embedded {users:,}"] = run_memory_probe(
            "embedded", str(path), users, PASSWORD, args.memory_auths
        )


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"Authenticator, {{SSHA}} users, failure_delay=0, penalties off; median of {args.runs} "
        f"runs x {args.seconds:g} s; cache on = hot set of {args.hot:,} users, warmed. "
        f"CPU columns: µs of CPU per authentication in this process (all threads) and in slapd; "
        f"'vs raw' = auths/s ratio, 'CPU vs raw' = (client+slapd CPU per raw bind) / "
        f"(client+slapd CPU per authentication), i.e. the ratio on an otherwise idle machine.",
        "",
        *md_head(
            ["target", "cache", "conc.", "auths/s", "p50 ms", "p99 ms", "CPU µs", "slapd µs",
             "vs raw", "CPU vs raw"],
            left=2,
        ),
    ]  # fmt: skip
    raw: dict[int, Cell] = results.get("raw", {})

    def row(label: str, cache: str, conc: int, cell: Cell, ratio: str, cpu_ratio: str) -> str:
        return md_row(
            [label, cache, conc, f"{cell.rate:,.0f}", f"{cell.p50:.2f}", f"{cell.p99:.2f}",
             f"{cell.cpu_us:.0f}", f"{cell.server_us:.0f}", ratio, cpu_ratio]
        )  # fmt: skip

    for label, cells in results["engine"].items():
        for (cache, conc), cell in cells.items():
            ratio = cpu_ratio = ""
            base = raw.get(conc) if label == results.get("raw_label") else None
            if base is not None and base.rate:
                ratio = f"{cell.rate / base.rate:.2f}x"
                cost = cell.cpu_us + cell.server_us
                cpu_ratio = f"{(base.cpu_us + base.server_us) / cost:.2f}x" if cost else ""
            lines.append(row(label, cache, conc, cell, ratio, cpu_ratio))
    for conc, cell in raw.items():
        lines.append(row(f"raw simple bind ({results['raw_label']})", "-", conc, cell, "1", "1"))
    if results["memory"]:
        lines += [
            "",
            f"RSS (MiB) of a fresh process: after opening the store, then after each quarter of "
            f"{args.memory_auths:,} authentications (cache on, random users, 32 tasks).",
            "",
            *md_head(["store", "open", "25%", "50%", "75%", "100%", "cache entries"]),
        ]
        for label, probe in results["memory"].items():
            rss = [f"{v:.0f}" for v in probe["rss"]]
            lines.append(md_row([label, *rss, f"{probe['cache_entries']:,}"]))
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"engine": {}, "memory": {}}
    if "embedded" in args.parts:
        await embedded_part(args, results)
    if "ldap" in args.parts:
        await ldap_part(args, results)
    if "memory" in args.parts:
        await memory_part(args, results)
    print()
    print(report(results, args))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_memory":
        probe = argparse.ArgumentParser(prog="auth.py _memory")
        probe.add_argument("kind", choices=("embedded", "ldap"))
        probe.add_argument("target")
        probe.add_argument("--n-users", type=int, required=True)
        probe.add_argument("--password", required=True)
        probe.add_argument("--count", type=int, required=True)
        asyncio.run(memory_probe(probe.parse_args(argv[1:])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/idsvc-authbench", help="stores are kept here")
    parser.add_argument("--embedded-users", type=int, default=1_000_000)
    parser.add_argument("--ldap-users", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--hot", type=int, default=10_000, help="users in the cache-on hot set")
    parser.add_argument("--pool-size", type=int, default=8, help="LDAP connection pool size")
    parser.add_argument("--memory-auths", type=int, default=100_000)
    parser.add_argument(
        "--parts", default="embedded,ldap,memory", help="comma list: embedded, ldap, memory"
    )
    args = parser.parse_args(argv)
    args.parts = set(args.parts.split(","))
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
