"""python-ldap vs ldap3 on loopback: the evidence behind the LDAP client choice.

Starts a slapd with N users (``bench/ldapdata.py``) and measures, for each library, one
synchronous connection doing (a) simple binds as a user and (b) an equality search for one user
returning its attributes (what a password lookup costs). Medians of ``--rounds`` rounds.

    .venv/bin/python -m bench.ldap_clients --users 10000 --ops 2000 --rounds 5

ldap3 is only needed here (``pip install ldap3``); it is not a dependency of idsvc.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import ldap

from bench.ldapdata import load_users
from tests.fixtures.slapd import SlapdServer


def _rate(op: Callable[[int], None], ops: int) -> float:
    started = time.perf_counter()
    for i in range(ops):
        op(i)
    return ops / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    import ldap3  # bench-only dependency

    server = SlapdServer(tls=False)
    try:
        data = load_users(server, args.users)
        base = data.base_dn
        uri = server.uri
        dn = [
            f"cn={data.address(i)},idsvcDomainName=d{i % data.domains}.example,ou=domains,{base}"
            for i in range(args.users)
        ]

        pl = ldap.initialize(uri)
        pl.protocol_version = 3
        pl_search = ldap.initialize(uri)
        pl_search.simple_bind_s(server.root_dn, server.root_pw)

        host, port = uri.removeprefix("ldap://").rsplit(":", 1)
        l3_server = ldap3.Server(host, port=int(port), get_info=ldap3.NONE)
        l3 = ldap3.Connection(l3_server, authentication=ldap3.SIMPLE)
        l3.open()
        l3_search = ldap3.Connection(l3_server, server.root_dn, server.root_pw, auto_bind=True)

        def pl_bind(i: int) -> None:
            pl.simple_bind_s(dn[i % args.users], data.password)

        def l3_bind(i: int) -> None:
            l3.user, l3.password = dn[i % args.users], data.password
            assert l3.bind()

        def pl_find(i: int) -> None:
            res = pl_search.search_s(
                base, ldap.SCOPE_SUBTREE, f"(idsvcAddress={data.address(i % args.users)})"
            )
            assert len(res) == 1

        def l3_find(i: int) -> None:
            l3_search.search(
                base, f"(idsvcAddress={data.address(i % args.users)})", attributes=["*"]
            )
            assert len(l3_search.entries) == 1

        results: dict[str, list[float]] = {
            k: [] for k in ("pl_bind", "l3_bind", "pl_find", "l3_find")
        }
        for _ in range(args.rounds):
            for name, op in (("pl_bind", pl_bind), ("l3_bind", l3_bind),
                             ("pl_find", pl_find), ("l3_find", l3_find)):  # fmt: skip
                results[name].append(_rate(op, args.ops))
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"users={args.users} ops/round={args.ops} rounds={args.rounds} (medians, ops/s)\n")
        print("| operation | python-ldap | ldap3 | ratio |")
        print("|---|---:|---:|---:|")
        for what, a, b in (("simple bind", "pl_bind", "l3_bind"),
                           ("search one user + parse", "pl_find", "l3_find")):  # fmt: skip
            print(f"| {what} | {med[a]:,.0f} | {med[b]:,.0f} | {med[a] / med[b]:.1f}x |")
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
