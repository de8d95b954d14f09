"""find_account against a 100k-user slapd: the old executor path vs the event-loop path vs raw
synchronous python-ldap.

Three ways to run the same point query (``(&(objectClass=idsvcAccount)(idsvcAddress=…))`` below
``ou=domains``, size limit 2, the account attributes including the hash):

* ``executor``: what ``LdapDirectory`` did before the asynchronous read path: the reader pool's
  threads (``pool.ThreadPool``, one connection per thread, ``pool_size`` threads), each call
  submitted from the loop, awaited through ``asyncio.wrap_future`` under ``wait_for`` (the old
  overall budget), the entry converted to an ``Account``;
* ``aio``: ``LdapDirectory.find_account`` as it is now (python-ldap's asynchronous API on the
  event loop, ``pool_size`` connections with several requests in flight each);
* ``aio_search``: the same event-loop search without the conversion to an ``Account`` (what
  the transport costs; compare with ``raw``);
* ``raw``: N threads, one persistent connection each, ``search_ext_s`` with the same filter and
  attributes and no conversion: the ceiling.

Concurrency 1 / 8 / 32 (asyncio tasks, or threads for ``raw``); every figure is the median of
``--runs`` runs of ``--seconds`` each, every loop bounded by time and count. Besides lookups/s and
p50/p99 latency it reports CPU per lookup in this process and in slapd (load-independent on a
shared machine). Loopback and files only. Prints a markdown table::

    .venv/bin/python bench/ldap_lookup.py --users 100000 --runs 3 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import ldap  # noqa: E402

from bench.common import (  # noqa: E402
    Cell,
    Meter,
    RunStats,
    md_head,
    md_row,
    summarise,
    threaded_ldap_load,
)
from bench.ldapdata import Dataset, load_users  # noqa: E402
from idsvc.directory.ldap import LdapDirectory  # noqa: E402
from idsvc.directory.ldap.pool import Identity, Servers, ThreadPool  # noqa: E402
from idsvc.directory.ldap.search import point  # noqa: E402
from idsvc.directory.mapping import IDSVC  # noqa: E402
from idsvc.errors import TemporaryFailure  # noqa: E402
from idsvc.model import Account, Address  # noqa: E402
from tests.fixtures.slapd import SlapdServer  # noqa: E402

CONCURRENCY = (1, 8, 32)
MODES = ("executor", "aio", "aio_search", "raw")
MAX_OPS_PER_RUN = 2_000_000


# -- the old path, rebuilt from the pieces that still exist --------------------------------------


class ExecutorLookup:
    """find_account as LdapDirectory ran it before: a thread pool per identity."""

    def __init__(self, data: Dataset, pool_size: int) -> None:
        settings = data.settings(pool_size=pool_size)
        self._settings = settings
        password = settings.bind_password.get_secret_value() if settings.bind_password else None
        self._pool = ThreadPool(
            Identity("reader", settings.bind_dn, password),
            settings,
            Servers(settings.uris, settings.retry_after),
            pool_size,
        )
        self._domains = IDSVC.domains_dn(data.base_dn)
        self._attrs = IDSVC.account_attrs(with_hash=True)
        self._budget = settings.connect_timeout * 2 + settings.timeout * 2 + 1

    async def find_account(self, address: Address) -> Account | None:
        filt = IDSVC.account_filter(address)
        timeout = self._settings.timeout

        def op(ldo: Any) -> Account | None:
            entry = point(ldo, self._domains, filt, self._attrs, timeout)
            return None if entry is None else IDSVC.account_from_entry(entry, with_hash=True)

        future = self._pool.submit(op, retry=True)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self._budget)
        except TimeoutError as exc:
            raise TemporaryFailure("LDAP request timed out") from exc

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.close)


def search_only(directory: LdapDirectory) -> Callable[[Address], Awaitable[Any]]:
    """The event-loop point search of find_account, minus the conversion to an Account."""
    reader, domains = directory._reader, directory._domains
    attrs = IDSVC.account_attrs(with_hash=True)

    async def find(address: Address) -> Any:
        return await reader.point(domains, IDSVC.account_filter(address), attrs)

    return find


# -- drivers ------------------------------------------------------------------------------------


async def drive_async(
    find: Callable[[Address], Awaitable[Account | None]],
    addresses: list[Address],
    concurrency: int,
    seconds: float,
    server_pid: int | None,
    seed: int,
) -> RunStats:
    latencies: list[float] = []
    counters = {"ops": 0, "failures": 0}
    deadline = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while time.perf_counter() < deadline and counters["ops"] < MAX_OPS_PER_RUN:
            counters["ops"] += 1
            address = rng.choice(addresses)
            start = time.perf_counter()
            try:
                found = await find(address)
            except TemporaryFailure:
                found = None
            latencies.append(time.perf_counter() - start)
            if found is None:
                counters["failures"] += 1

    with Meter(server_pid) as meter:
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return meter.stats(counters["ops"], latencies, counters["failures"])


def drive_raw(
    data: Dataset, addresses: list[Address], threads: int, seconds: float, seed: int
) -> RunStats:
    """``threads`` threads, one connection each, synchronous searches."""
    server = data.server
    domains = IDSVC.domains_dn(data.base_dn)
    attrs = IDSVC.account_attrs(with_hash=True)
    filters = [IDSVC.account_filter(a) for a in addresses]

    def search(conn: Any, filt: str) -> bool:
        found = conn.search_ext_s(domains, ldap.SCOPE_SUBTREE, filt, attrlist=attrs, sizelimit=2)
        return len(found) == 1

    return threaded_ldap_load(
        server.uri, lambda rng: rng.choice(filters), search, threads=threads, seconds=seconds,
        limit=MAX_OPS_PER_RUN, seed=seed, bind=(server.reader_dn, server.reader_pw),
        server_pid=server.pid,
    )  # fmt: skip


async def measure(data: Dataset, args: argparse.Namespace) -> dict[tuple[str, int], Cell]:
    rng = random.Random(42)
    addresses = [Address.parse(data.address(rng.randrange(data.users))) for _ in range(args.sample)]
    pid = data.server.pid
    out: dict[tuple[str, int], Cell] = {}
    for mode in args.modes:
        for conc in CONCURRENCY:
            runs: list[RunStats] = []
            for run in range(args.runs):
                if mode == "raw":
                    runs.append(
                        await asyncio.to_thread(
                            drive_raw, data, addresses, conc, args.seconds, run + 1
                        )
                    )
                    continue
                target: Any
                if mode == "executor":
                    target = ExecutorLookup(data, args.pool_size)
                else:
                    target = await LdapDirectory.open(data.settings(pool_size=args.pool_size))
                find = target.find_account if mode != "aio_search" else search_only(target)
                try:
                    for address in addresses[:50]:  # connections up, caches warm
                        await find(address)
                    stats = await drive_async(find, addresses, conc, args.seconds, pid, run + 1)
                    runs.append(stats)
                finally:
                    await target.close()
            cell = summarise(runs)
            out[(mode, conc)] = cell
            print(
                f"  {mode:9} c={conc:<2} {cell.rate:8.0f}/s p50 {cell.p50:6.2f} ms "
                f"p99 {cell.p99:6.2f} ms cpu {cell.cpu_us:5.0f} us slapd {cell.server_us:4.0f} us "
                f"fail {cell.failures}",
                flush=True,
            )
    return out


def report(cells: dict[tuple[str, int], Cell], args: argparse.Namespace, users: int) -> str:
    lines = [
        f"find_account on slapd with {users:,} users, pool_size={args.pool_size}; median of "
        f"{args.runs} runs x {args.seconds:g} s. CPU µs = CPU per lookup in this process (all "
        f"threads) / in slapd; 'vs raw' = lookups/s relative to raw python-ldap at the same "
        f"concurrency.",
        "",
        *md_head(
            ["path", "conc.", "lookups/s", "p50 ms", "p99 ms", "CPU µs", "slapd µs", "vs raw"]
        ),
    ]
    for (mode, conc), cell in cells.items():
        raw = cells.get(("raw", conc))
        ratio = f"{cell.rate / raw.rate:.2f}x" if raw and raw.rate else ""
        figures = [f"{cell.rate:,.0f}", f"{cell.p50:.2f}", f"{cell.p99:.2f}"]
        cpu = [f"{cell.cpu_us:.0f}", f"{cell.server_us:.0f}"]
        lines.append(md_row([mode, conc, *figures, *cpu, ratio]))
    if any(c.failures for c in cells.values()):
        lines.append("")
        lines.append("Some lookups failed: see the failures column of the progress lines.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument("--sample", type=int, default=20_000, help="distinct users looked up")
    parser.add_argument("--modes", default=",".join(MODES), help="comma list of " + ",".join(MODES))
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = set(args.modes) - set(MODES)
    if unknown or args.users < 1 or args.runs < 1 or args.seconds <= 0:
        parser.error(f"bad arguments (unknown modes: {sorted(unknown)})" if unknown else "bad")
    server = SlapdServer(tls=False)
    try:
        print(f"loading {args.users:,} users into slapd …", flush=True)
        data = load_users(server, args.users)
        print(f"  loaded in {data.timings['total']:.1f} s", flush=True)
        cells = asyncio.run(measure(data, args))
        print()
        print(report(cells, args, args.users))
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
