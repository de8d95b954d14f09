"""Build an embedded store (SQLite) with N users for benchmarks, and print how fast it was built.

Usage: ``.venv/bin/python bench/make_embedded.py N PATH [--password P] [--batch B] [--force]``

Users are ``user<i>@d<i % 100>.example`` (i = 0 … N-1) in the domains ``d0.example`` …
``d99.example``, each with its own ``{SSHA}`` hash (4-byte salt, as Dovecot makes them) of one
known password (``PASSWORD`` unless ``--password``). The accounts are generated lazily and go in
through ``SqliteDirectory.bulk_add_accounts``; the rate printed is users per wall-clock second of
that whole call (generation and hashing overlap with the inserts), and the share of it spent making
the hashes is printed apart. ``build()`` is the same thing for other benchmarks to import.

It refuses to touch an existing non-empty PATH unless ``--force`` (which deletes it first).
``--lookups K`` then times K random ``find_account`` calls (16 concurrent tasks, 4 worker
threads) on the new store and checks that a stored hash verifies against the password.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from idsvc.config import EmbeddedSettings
from idsvc.directory.sqlite import SqliteDirectory
from idsvc.model import Account, Address, Domain, utcnow

PASSWORD = "secret"
DOMAINS = 100


def login(i: int) -> str:
    return f"user{i}@d{i % DOMAINS}.example"


def ssha(password: str, salt: bytes) -> str:
    """``{SSHA}`` = base64(sha1(password ‖ salt) ‖ salt) (RFC 2307 style, as OpenLDAP/Dovecot)."""
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 - the format asks SHA-1
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


@dataclass(frozen=True)
class BuildResult:
    rows: int
    seconds: float  # wall clock of bulk_add_accounts, generation included
    hash_seconds: float  # of which spent computing {SSHA} hashes
    bytes_on_disk: int

    @property
    def insert_seconds(self) -> float:
        """Alias of ``seconds`` (the name bench/auth.py reads)."""
        return self.seconds

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def _accounts(n: int, password: str, seed: int, timing: list[float]) -> Iterator[Account]:
    """The N accounts, generated lazily; the time spent hashing is added to ``timing[0]``."""
    rng = random.Random(seed)
    now = utcnow()
    for i in range(n):
        started = time.perf_counter()
        pw_hash = ssha(password, rng.randbytes(4))
        timing[0] += time.perf_counter() - started
        # the generated names are canonical already; Address.parse would only cost time here
        yield Account(
            address=Address(f"user{i}", f"d{i % DOMAINS}.example"),
            password_hash=pw_hash,
            created=now,
            updated=now,
        )


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def build(
    n: int, path: Path, *, password: str = PASSWORD, batch: int = 20_000, force: bool = False
) -> BuildResult:
    """Create PATH with ``n`` users (see the module docstring) and return the timings."""
    if n < 0:
        raise ValueError("N must be >= 0")
    if path.exists() and path.stat().st_size > 0:
        if not force:
            raise FileExistsError(f"{path} exists; use --force to replace it")
        _remove(path)
    assert str(Address.parse(login(n - 1 if n else 0))) == login(n - 1 if n else 0)
    store = await SqliteDirectory.open(EmbeddedSettings(path=path, workers=1, busy_timeout=30))
    try:
        for d in range(DOMAINS):
            await store.add_domain(Domain(name=f"d{d}.example"))
        timing = [0.0]
        started = time.perf_counter()
        rows = await store.bulk_add_accounts(_accounts(n, password, 1, timing), batch=batch)
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    size = sum(
        Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists()
    )
    return BuildResult(rows, elapsed, timing[0], size)


def ssha_matches(stored: str, password: str) -> bool:
    raw = base64.b64decode(stored.removeprefix("{SSHA}"))
    return ssha(password, raw[20:]) == stored


async def lookups(path: Path, n_users: int, count: int, concurrency: int = 16) -> float:
    """Random ``find_account`` calls per second on an existing store of ``n_users`` users."""
    store = await SqliteDirectory.open(EmbeddedSettings(path=path, workers=4))
    try:
        first = await store.find_account(Address.parse(login(0)))
        if first is None or first.password_hash is None:
            raise RuntimeError("user0 is missing from the store")
        if not ssha_matches(first.password_hash, PASSWORD):
            print("make_embedded: note: user0's hash does not match the default password")
        rng = random.Random(2)
        todo = [rng.randrange(n_users) for _ in range(count)]

        async def worker() -> None:
            while todo:
                i = todo.pop()
                if await store.find_account(Address(f"user{i}", f"d{i % DOMAINS}.example")) is None:
                    raise RuntimeError(f"user{i} is missing from the store")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="number of users")
    parser.add_argument("path", type=Path, help="SQLite file to create")
    parser.add_argument("--password", default=PASSWORD, help="the password of every user")
    parser.add_argument("--batch", type=int, default=20_000, help="accounts per transaction")
    parser.add_argument("--force", action="store_true", help="replace an existing PATH")
    parser.add_argument("--lookups", type=int, default=0, help="then time this many lookups")
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(
            build(args.n, args.path, password=args.password, batch=args.batch, force=args.force)
        )
    except (FileExistsError, ValueError) as exc:
        print(f"make_embedded: {exc}", file=sys.stderr)
        return 2
    print("| users | bulk_add_accounts s | rows/s | of which hashing s | file MB |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {result.rows:,} | {result.seconds:.2f} | {result.rate:,.0f} "
        f"| {result.hash_seconds:.2f} | {result.bytes_on_disk / 1e6:.1f} |"
    )
    if args.lookups > 0 and result.rows > 0:
        rate = asyncio.run(lookups(args.path, result.rows, args.lookups))
        print(f"\nfind_account: {rate:,.0f} lookups/s ({args.lookups:,} random users, 16 tasks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
