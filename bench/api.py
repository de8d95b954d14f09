"""REST API benchmark: user creation rate, read/list latency and API process memory.

What it measures, on each backend (embedded SQLite, OpenLDAP with our schema):

1. **Create rate**: ``--users`` (default 10 000) ``POST /api/v1/domains/{d}/users`` calls with a
   plaintext password, ``--concurrency`` clients over keep-alive HTTP/1.1 on 127.0.0.1, against a
   fresh store with 100 domains. Password hashing must not dominate: the API process is configured
   with ``SHA512-CRYPT`` at its minimum 1000 rounds (``SSHA512`` is refused as a *configured*
   scheme by ``idsvc.passwords``; the per-hash cost is printed apart). For LDAP, the ceiling is a
   bulk ``ldapadd`` (one connection, root DN) of the same entries with ready ``{SSHA}`` hashes
   into the same slapd; the table shows API rate ÷ ldapadd rate (target ≥ 0.5).
2. **Latency with ``--big`` users** (default 100 000, loaded offline: ``slapadd`` via
   ``bench.ldapdata`` / ``bench.make_embedded``): p50/p99 of ``GET /api/v1/users/{address}`` for
   random users and of one page (``limit=100``) of ``GET /api/v1/domains/{d}/users`` walking the
   cursor, one request at a time.
3. **RSS** of the API process (``VmRSS``) after the same read workload with ``--small`` (1 000)
   and ``--big`` users present.

The API runs in its own process (``multiprocessing`` spawn) through the production wiring:
``build_runtime`` + ``StateStore`` + ``ApiServer`` on ``127.0.0.1:0``; the client runs in
this process: a minimal keep-alive HTTP/1.1 client on asyncio streams (``RawClient``), so the
figures are the server's and not a heavy Python client's sharing the same two cores. Everything
talks to loopback only, every loop is bounded. Prints a markdown table.

Usage: ``.venv/bin/python -m bench.api [--users N] [--big N] [--small N] [--concurrency C]
[--samples S] [--backends embedded,ldap]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.common import md_head, md_row, percentile_ms, rss_mib

DOMAINS = 100
PASSWORD = "bench-Passw0rd"
SCHEME = {"scheme": "SHA512-CRYPT", "sha_crypt_rounds": 1000}
REQUEST_TIMEOUT = 30.0
PHASE_LIMIT = 1800.0  # seconds; no phase runs longer than this


def address(i: int) -> str:
    return f"user{i}@d{i % DOMAINS}.example"


# -- the API process ----------------------------------------------------------------------------


def _serve(conf: dict[str, Any], conn: Connection) -> None:
    """Child process: run ApiServer on the configured backend until told to stop."""
    asyncio.run(_serve_async(conf, conn))


async def _serve_async(conf: dict[str, Any], conn: Connection) -> None:
    from idsvc.api.server import ApiServer
    from idsvc.config import Settings
    from idsvc.runtime import build_runtime
    from idsvc.state import StateStore, create_token, runtime_audit

    settings = Settings.model_validate(conf)
    state = await StateStore.open_for(settings)
    runtime = await build_runtime(settings, audit=runtime_audit(state))
    _, token = await create_token(state, name="bench", scope="admin", created_by="bench")
    server = ApiServer(settings, runtime, state)
    await server.start()
    conn.send((server.url, token))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # any message: stop
    await server.close()
    await runtime.close()
    await state.close()


@dataclass
class ApiProcess:
    proc: Any
    conn: Connection
    url: str
    token: str

    @classmethod
    def start(cls, conf: dict[str, Any]) -> ApiProcess:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(conf, child), daemon=True)
        proc.start()
        if not parent.poll(60):
            proc.kill()
            raise SystemExit("the API process did not start within 60 s")
        url, token = parent.recv()
        return cls(proc, parent, url, token)

    def rss_mib(self) -> float:
        return rss_mib(self.proc.pid)

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send("stop")
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def _conf(work: Path, directory: dict[str, Any]) -> dict[str, Any]:
    return {
        "directory": directory,
        "passwords": SCHEME,
        "api": {
            "listen": "127.0.0.1:0",
            "state_path": str(work / "state.db"),
            "bootstrap_token_file": str(work / "admin.token"),
        },
    }


def _embedded(path: Path) -> dict[str, Any]:
    return {"backend": "embedded", "embedded": {"path": str(path)}}


def _ldap(server: Any, base: str) -> dict[str, Any]:
    return {
        "backend": "ldap",
        "ldap": {
            "uris": [server.uri],
            "base_dn": base,
            "bind_dn": server.reader_dn,
            "bind_password": server.reader_pw,
            "writer_dn": server.writer_dn,
            "writer_password": server.writer_pw,
            "pool_size": 16,
        },
    }


# -- client side ------------------------------------------------------------------------------


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams, so that the benchmark measures
    the server rather than a heavy Python client sharing its two cores. It understands only
    what the API sends: a status line, headers and a ``Content-Length`` body."""

    def __init__(self, api: ApiProcess) -> None:
        host, _, port = api.url.removeprefix("http://").rpartition(":")
        self._host, self._port = host, int(port)
        self._auth = f"Authorization: Bearer {api.token}\r\n".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawClient:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        assert self._reader is not None
        assert self._writer is not None
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(payload)}\r\n"
        ).encode()
        if payload:
            head += b"Content-Type: application/json\r\n"
        self._writer.write(head + self._auth + b"\r\n" + payload)
        raw = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        data = await asyncio.wait_for(self._reader.readexactly(length), REQUEST_TIMEOUT)
        return status, data


async def _create_domains(api: ApiProcess) -> None:
    async with RawClient(api) as client:
        for d in range(DOMAINS):
            status, data = await client.request(
                "POST", "/api/v1/domains", {"name": f"d{d}.example"}
            )
            if status not in (201, 409):
                raise SystemExit(f"domain create failed: {status} {data[:200]!r}")


async def _create_users(api: ApiProcess, users: int, concurrency: int) -> float:
    """Create ``users`` accounts with ``concurrency`` connections; returns users per second."""
    todo = iter(range(users))
    errors: list[str] = []
    deadline = time.monotonic() + PHASE_LIMIT

    async def worker() -> None:
        async with RawClient(api) as client:
            for i in todo:
                if time.monotonic() > deadline or errors:
                    return
                addr = address(i)
                status, data = await client.request(
                    "POST",
                    f"/api/v1/domains/{addr.rpartition('@')[2]}/users",
                    {"address": addr, "password": PASSWORD},
                )
                if status != 201:
                    errors.append(f"{addr}: {status} {data[:200]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"user create failed: {errors[0]}")
    return users / elapsed


@dataclass
class Reads:
    get_ms: list[float] = field(default_factory=list)
    page_ms: list[float] = field(default_factory=list)

    def row(self) -> tuple[float, float, float, float]:
        return (
            statistics.median(self.get_ms) * 1000,
            percentile_ms(self.get_ms, 0.99),
            statistics.median(self.page_ms) * 1000,
            percentile_ms(self.page_ms, 0.99),
        )


async def _reads(api: ApiProcess, users: int, samples: int) -> Reads:
    """``samples`` random GETs, then listing pages of 100 (cursor walk) ``samples // 4`` times."""
    out = Reads()
    rng = random.Random(7)
    deadline = time.monotonic() + PHASE_LIMIT
    async with RawClient(api) as client:
        for _ in range(min(20, samples)):  # warm up connection and caches
            await client.request("GET", f"/api/v1/users/{address(rng.randrange(users))}")
        for _ in range(samples):
            addr = address(rng.randrange(users))
            t0 = time.perf_counter()
            status, data = await client.request("GET", f"/api/v1/users/{addr}")
            out.get_ms.append(time.perf_counter() - t0)
            if status != 200:
                raise SystemExit(f"GET {addr}: {status} {data[:200]!r}")
            if time.monotonic() > deadline:
                break
        cursor: str | None = None
        domain = f"d{rng.randrange(DOMAINS)}.example"
        for _ in range(max(samples // 4, 10)):
            query = "limit=100" + (f"&cursor={quote(cursor)}" if cursor else "")
            t0 = time.perf_counter()
            status, data = await client.request("GET", f"/api/v1/domains/{domain}/users?{query}")
            out.page_ms.append(time.perf_counter() - t0)
            if status != 200:
                raise SystemExit(f"listing {domain}: {status} {data[:200]!r}")
            cursor = json.loads(data)["next_cursor"]
            if cursor is None:  # next domain
                domain = f"d{rng.randrange(DOMAINS)}.example"
            if time.monotonic() > deadline:
                break
    return out


# -- LDAP ceiling -----------------------------------------------------------------------------


def _ldapadd_rate(server: Any, users: int, work: Path) -> float:
    """Users per second of one bulk ``ldapadd`` of the same entries into the same slapd."""
    from bench.ldapdata import write_ldif

    ldif = work / "ceiling.ldif"
    base = f"o=ceiling,{server.suffix}"
    write_ldif(ldif, base, users, domains=DOMAINS, password=PASSWORD, name="ceiling")
    started = time.perf_counter()
    subprocess.run(
        ["ldapadd", "-x", "-H", server.uri, "-D", server.root_dn, "-w", server.root_pw,
         "-f", str(ldif)],
        check=True,
        capture_output=True,
        timeout=PHASE_LIMIT,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    ldif.unlink()
    return users / elapsed  # user entries only (below 100 users there are fewer domains)


def _hash_cost_ms() -> float:
    from idsvc.config import PasswordSettings
    from idsvc.passwords import PasswordHasher

    hasher = PasswordHasher(PasswordSettings(**SCHEME))  # type: ignore[arg-type]
    started = time.perf_counter()
    for _ in range(200):
        hasher.hash(PASSWORD)
    return (time.perf_counter() - started) / 200 * 1000


# -- phases -----------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    create_rate: float = float("nan")
    ceiling: float = float("nan")
    reads: tuple[float, float, float, float] = (float("nan"),) * 4
    rss_small: float = float("nan")
    rss_big: float = float("nan")


def _run_api(conf: dict[str, Any], fn: Any) -> Any:
    api = ApiProcess.start(conf)
    try:
        return fn(api)
    finally:
        api.stop()


def bench_embedded(args: argparse.Namespace, work: Path) -> Row:
    from bench.make_embedded import build

    row = Row("embedded (SQLite)")
    w = work / "emb-create"
    w.mkdir()

    def create(api: ApiProcess) -> float:
        asyncio.run(_create_domains(api))
        return asyncio.run(_create_users(api, args.users, args.concurrency))

    row.create_rate = _run_api(_conf(w, _embedded(w / "idsvc.db")), create)
    for size in (args.small, args.big):
        w = work / f"emb-{size}"
        w.mkdir()
        asyncio.run(build(size, w / "idsvc.db", password=PASSWORD))

        def reads(api: ApiProcess, size: int = size) -> tuple[Reads, float]:
            result = asyncio.run(_reads(api, size, args.samples))
            return result, api.rss_mib()

        result, rss = _run_api(_conf(w, _embedded(w / "idsvc.db")), reads)
        if size == args.big:
            row.reads, row.rss_big = result.row(), rss
        else:
            row.rss_small = rss
    return row


def bench_ldap(args: argparse.Namespace, work: Path) -> Row:
    from bench.ldapdata import load_users
    from tests.fixtures.slapd import SlapdServer

    row = Row("OpenLDAP (slapd)")
    server = SlapdServer(tls=False)
    try:
        server.start()
        row.ceiling = _ldapadd_rate(server, args.users, work)
        base = server.new_subtree("apicreate")
        w = work / "ldap-create"
        w.mkdir()

        def create(api: ApiProcess) -> float:
            asyncio.run(_create_domains(api))
            return asyncio.run(_create_users(api, args.users, args.concurrency))

        row.create_rate = _run_api(_conf(w, _ldap(server, base)), create)
        for size in (args.small, args.big):
            data = load_users(server, size, domains=DOMAINS, password=PASSWORD, name=f"n{size}")
            w = work / f"ldap-{size}"
            w.mkdir()

            def reads(api: ApiProcess, size: int = size) -> tuple[Reads, float]:
                result = asyncio.run(_reads(api, size, args.samples))
                return result, api.rss_mib()

            result, rss = _run_api(_conf(w, _ldap(server, data.base_dn)), reads)
            if size == args.big:
                row.reads, row.rss_big = result.row(), rss
            else:
                row.rss_small = rss
    finally:
        server.cleanup()
    return row


def _table(rows: list[Row], args: argparse.Namespace, hash_ms: float) -> Iterator[str]:
    yield (
        f"API benchmark: {args.users} creates at concurrency {args.concurrency}; reads with "
        f"{args.big} users ({args.samples} GETs, paged listing limit=100); "
        f"RSS at {args.small} vs {args.big} users. Hash: SHA512-CRYPT rounds=1000 "
        f"({hash_ms:.2f} ms each)."
    )
    yield ""
    yield from md_head(
        ["backend", "creates/s (API)", "bulk ldapadd/s", "API ÷ ldapadd", "GET user p50 / p99 ms",
         "list page p50 / p99 ms", f"RSS MiB @{args.small}", f"RSS MiB @{args.big}"]
    )  # fmt: skip
    for r in rows:
        ratio = r.create_rate / r.ceiling if r.ceiling == r.ceiling else float("nan")
        ceiling = f"{r.ceiling:.0f}" if r.ceiling == r.ceiling else "n/a"
        ratio_s = f"{ratio:.2f}" if ratio == ratio else "n/a"
        g50, g99, p50, p99 = r.reads
        reads = [f"{g50:.1f} / {g99:.1f}", f"{p50:.1f} / {p99:.1f}"]
        rss = [f"{r.rss_small:.0f}", f"{r.rss_big:.0f}"]
        yield md_row([r.backend, f"{r.create_rate:.0f}", ceiling, ratio_s, *reads, *rss])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=10_000, help="users created through the API")
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--samples", type=int, default=2_000)
    parser.add_argument("--backends", default="embedded,ldap")
    args = parser.parse_args(argv)
    if min(args.users, args.big, args.small, args.concurrency, args.samples) < 1:
        parser.error("all sizes must be positive")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not set(backends) <= {"embedded", "ldap"}:
        parser.error("--backends takes embedded and/or ldap")
    if "ldap" in backends and shutil.which("ldapadd") is None:
        parser.error("ldapadd (ldap-utils) is needed for the LDAP ceiling")
    hash_ms = _hash_cost_ms()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="idsvc-bench-api-") as tmp:
        work = Path(tmp)
        if "embedded" in backends:
            rows.append(bench_embedded(args, work))
        if "ldap" in backends:
            rows.append(bench_ldap(args, work))
    print("\n".join(_table(rows, args, hash_ms)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
