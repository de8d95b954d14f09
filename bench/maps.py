"""Benchmark of the Postfix socketmap listener over a real UNIX socket (embedded store).

What it measures: lookups per second through ``SocketmapServer`` for a mix of the four maps
Postfix asks most (``alias``, ``mailbox`` with a recipient extension through an alias domain,
``domain``, ``senderlogin``), ``--connections`` persistent connections each pipelining
``--requests`` requests, with the lookup cache on (``cache_ttl`` 30 s, warmed by one pass: the
steady state of a busy MX) and off (every request reads the directory). One small dataset:
2 domains (one with an alias domain), ``--users`` accounts, one alias per ten accounts.

Everything is local (a temp directory, one UNIX socket); every loop is bounded by count.
Run ``.venv/bin/python bench/maps.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from idsvc.config import EmbeddedSettings, MailSettings, SocketmapSettings, SocketSettings
from idsvc.directory.sqlite import SqliteDirectory
from idsvc.lookups import MailLookups
from idsvc.model import Account, Address, Alias, Domain
from idsvc.wire.framing import netstring
from idsvc.wire.socketmap.server import SocketmapServer

HASH = "{SSHA}d14l+Z9NxT7CNv9vgUcYN2BAzoMBAgME"


async def populate(directory: SqliteDirectory, users: int) -> None:
    await directory.add_domain(Domain(name="example.org", alias_domains=("example.net",)))
    await directory.add_domain(Domain(name="other.example"))
    for i in range(users):
        await directory.add_account(Account(Address.parse(f"user{i}@example.org"), HASH))
        if i % 10 == 0:
            await directory.add_alias(
                Alias(f"list{i}@example.org", (f"user{i}@example.org", f"user{i + 1}@example.org"))
            )


def requests(users: int, count: int) -> list[bytes]:
    out = []
    for n in range(count):
        i = (n * 7919) % users
        out.append(
            (
                f"alias list{i - i % 10}@example.org",
                f"mailbox user{i}+tag@example.net",
                "domain example.org",
                f"senderlogin user{i}@example.org",
            )[n % 4].encode()
        )
    return out


async def client(path: Path, reqs: list[bytes]) -> None:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"".join(netstring(r) for r in reqs))
    await writer.drain()
    for _ in reqs:
        head = await reader.readuntil(b":")
        await reader.readexactly(int(head[:-1]) + 1)
    writer.close()


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="idsvc-bench-maps-"))
    directory = await SqliteDirectory.open(EmbeddedSettings(path=tmp / "idsvc.db"))
    try:
        await populate(directory, args.users)
        print("| lookup cache | connections | lookups | seconds | lookups/s |")
        print("|---|---|---|---|---|")
        for ttl in (30.0, 0.0):
            mail = MailLookups(directory, MailSettings(cache_ttl=ttl))
            path = tmp / f"sm-{int(ttl)}"
            settings = SocketmapSettings(socket=SocketSettings(path=path))
            server = SocketmapServer(settings, mail)
            await server.start()
            try:
                reqs = requests(args.users, args.requests)
                await client(path, reqs)  # warm up: with the cache on, the steady state
                started = time.perf_counter()
                await asyncio.gather(*(client(path, reqs) for _ in range(args.connections)))
                elapsed = time.perf_counter() - started
            finally:
                await server.close()
            total = args.connections * args.requests
            state = f"on ({ttl:g} s)" if ttl else "off"
            rate = total / elapsed
            print(f"| {state} | {args.connections} | {total} | {elapsed:.2f} | {rate:,.0f} |")
    finally:
        await directory.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--requests", type=int, default=5000, help="per connection")
    asyncio.run(main(parser.parse_args()))
