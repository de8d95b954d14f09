"""Benchmark data for LDAP: start a ``SlapdServer`` and load N users fast (offline slapadd).

Users are ``user<i>@d<i % domains>.example`` (``domains`` defaults to 100), each with an
``{SSHA}`` hash (random 4-byte salt) of one known password, in our schema's DIT below
``o=<name>,<suffix>``. Loading writes an LDIF file and runs ``slapadd -q`` into the *stopped*
server (roughly two orders of magnitude faster than ldapadd over the wire), then starts it again.

Library use (other benchmarks import this)::

    from bench.ldapdata import load_users
    from tests.fixtures.slapd import SlapdServer, ssha

    server = SlapdServer(tls=False)
    data = load_users(server, 100_000)      # server is running afterwards
    settings = data.settings(pool_size=16)  # LdapSettings for LdapDirectory.open
    data.address(42), data.password         # a user that exists and its password
    server.cleanup()

CLI: ``python -m bench.ldapdata --users 100000`` loads, checks a few users through
``LdapDirectory`` (lookup + bind), prints the timings and stops the server.

Fails with ``SlapdError`` (from the fixture) if slapd/slapadd fail; nothing runs afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures.slapd import SlapdServer, ssha

PASSWORD = "bench-Passw0rd"
DEFAULT_DOMAINS = 100
STAMP = "20260101000000Z"


def address(i: int, domains: int = DEFAULT_DOMAINS) -> str:
    """The address of user ``i``."""
    return f"user{i}@d{i % domains}.example"


def _entries(base: str, users: int, domains: int, password: str, name: str) -> Iterator[str]:
    yield f"dn: {base}\nobjectClass: organization\no: {name}\n"
    yield f"dn: ou=domains,{base}\nobjectClass: organizationalUnit\nou: domains\n"
    meta = f"idsvcEnabled: TRUE\nidsvcRevision: 1\nidsvcCreated: {STAMP}\nidsvcUpdated: {STAMP}\n"
    for d in range(min(domains, max(users, 1))):
        yield (
            f"dn: idsvcDomainName=d{d}.example,ou=domains,{base}\nobjectClass: idsvcDomain\n"
            f"idsvcDomainName: d{d}.example\nidsvcDefaultQuota: 0\n{meta}"
        )
    services = "".join(f"idsvcService: {s}\n" for s in ("imap", "pop3", "smtp", "submission"))
    for i in range(users):
        addr = address(i, domains)
        yield (
            f"dn: cn={addr},idsvcDomainName=d{i % domains}.example,ou=domains,{base}\n"
            f"objectClass: idsvcAccount\ncn: {addr}\nidsvcAddress: {addr}\n"
            f"userPassword: {ssha(password)}\nidsvcQuota: 0\n{services}{meta}"
        )


def write_ldif(
    path: Path, base: str, users: int, *, domains: int = DEFAULT_DOMAINS,
    password: str = PASSWORD, name: str = "bench",
) -> int:  # fmt: skip
    """Write the subtree (base, ou=domains, domains, users) to ``path``; returns entry count."""
    count = 0
    with path.open("w", encoding="utf-8", buffering=1 << 20) as fh:
        for entry in _entries(base, users, domains, password, name):
            fh.write(entry)
            fh.write("\n")
            count += 1
    return count


@dataclass
class Dataset:
    """What ``load_users`` loaded, with its timings (seconds)."""

    server: SlapdServer
    base_dn: str
    users: int
    domains: int
    password: str
    entries: int
    timings: dict[str, float] = field(default_factory=dict)

    def address(self, i: int) -> str:
        return address(i, self.domains)

    def settings(self, **overrides: Any) -> Any:
        """``LdapSettings`` (reader + writer) for this data set."""
        return self.server.settings(self.base_dn, **overrides)


def load_users(
    server: SlapdServer,
    users: int,
    *,
    domains: int = DEFAULT_DOMAINS,
    password: str = PASSWORD,
    name: str = "bench",
) -> Dataset:
    """Load ``users`` accounts below ``o=<name>,<suffix>`` offline and (re)start the server.

    The server is stopped for the load if it runs; ``name`` must be new in this server.
    """
    if users < 0 or domains < 1:
        raise ValueError("users must be >= 0 and domains >= 1")
    base = f"o={name},{server.suffix}"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    server.build()
    ldif = server.workdir / f"{name}.ldif"
    entries = write_ldif(ldif, base, users, domains=domains, password=password, name=name)
    timings["ldif"] = time.perf_counter() - t0
    server.stop()
    t1 = time.perf_counter()
    server.slapadd(ldif)
    timings["slapadd"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    server.start()
    timings["start"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    ldif.unlink()
    return Dataset(server, base, users, domains, password, entries, timings)


async def _check(data: Dataset, samples: int) -> dict[str, float]:
    """Look up and bind a few random users through LdapDirectory; returns timings."""
    from idsvc.directory.base import BindResult
    from idsvc.directory.ldap import LdapDirectory
    from idsvc.model import Address

    directory = await LdapDirectory.open(data.settings())
    try:
        started = time.perf_counter()
        for _ in range(samples):
            i = random.randrange(max(data.users, 1))
            account = await directory.find_account(Address.parse(data.address(i)))
            if account is None:
                raise SystemExit(f"user {data.address(i)} is missing")
            if await directory.bind_check(account, data.password) is not BindResult.OK:
                raise SystemExit(f"bind as {data.address(i)} failed")
        per_check = (time.perf_counter() - started) / max(samples, 1)
        page = await directory.list_domains(limit=5)
        if data.users and page.total != min(data.domains, data.users):
            raise SystemExit(f"expected {data.domains} domains, listing says {page.total}")
    finally:
        await directory.close()
    return {"lookup+bind (ms)": per_check * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--domains", type=int, default=DEFAULT_DOMAINS)
    parser.add_argument("--samples", type=int, default=50, help="users to look up and bind")
    args = parser.parse_args(argv)
    server = SlapdServer(tls=False)
    try:
        data = load_users(server, args.users, domains=args.domains)
        checks = asyncio.run(_check(data, args.samples))
        rate = data.entries / data.timings["slapadd"] if data.timings["slapadd"] else 0.0
        print(f"users={data.users} domains={data.domains} entries={data.entries}")
        print(f"{'step':<20}{'seconds':>10}")
        for step, seconds in data.timings.items():
            print(f"{step:<20}{seconds:>10.2f}")
        print(f"{'slapadd rate':<20}{rate:>10.0f} entries/s")
        for what, value in checks.items():
            print(f"{what:<20}{value:>10.2f}")
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
