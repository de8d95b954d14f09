"""Benchmark: password verifications per second per scheme, 1 and 2 threads.

Run from the repository root:  ``.venv/bin/python -m bench.passwords [--runs 5] [--seconds 1]``

Each cell is the median over ``--runs`` runs; one run verifies the correct password against one
stored hash in a loop for ``--seconds`` (each thread its own loop, all sharing one
``PasswordHasher``), and counts completed verifications. Schemes: SSHA, SHA512-CRYPT (5000
rounds), BLF-CRYPT (cost 10), ARGON2ID (m=64 MiB, t=3, p=1). ``--compare-backends`` adds the
alternatives that were measured to choose the libraries (libpass's pure-Python sha512_crypt,
pyca/bcrypt) — the only place outside idsvc.passwords that touches them.
Bounded: runs ≤ 20, seconds ≤ 10 per cell.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import threading
import time
from collections.abc import Callable

from idsvc.config import PasswordSettings
from idsvc.passwords import PasswordHasher

PW = "correct horse battery staple"


def _rate(fn: Callable[[], object], threads: int, seconds: float) -> float:
    counts = [0] * threads
    start_gate = threading.Barrier(threads + 1)
    deadline = 0.0

    def loop(slot: int) -> None:
        start_gate.wait()
        n = 0
        while time.perf_counter() < deadline:
            fn()
            n += 1
        counts[slot] = n

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    started = time.perf_counter()
    deadline = started + seconds
    start_gate.wait()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - started)


def _cases(compare: bool) -> list[tuple[str, Callable[[], object]]]:
    hasher = PasswordHasher(PasswordSettings(bcrypt_cost=10))
    cases: list[tuple[str, Callable[[], object]]] = []
    for label, scheme in (
        ("SSHA", "SSHA"),
        ("SHA512-CRYPT (5000 rounds)", "SHA512-CRYPT"),
        ("BLF-CRYPT (cost 10)", "BLF-CRYPT"),
        ("ARGON2ID (m=64MiB,t=3,p=1)", "ARGON2ID"),
    ):
        stored = hasher.hash(PW, scheme)
        assert hasher.verify(PW, stored)
        cases.append((label, functools.partial(hasher.verify, PW, stored)))
    if compare:
        import bcrypt
        from passlib.hash import sha512_crypt

        sha = hasher.hash(PW, "SHA512-CRYPT").removeprefix("{SHA512-CRYPT}")
        assert sha512_crypt.verify(PW, sha)
        cases.append(("SHA512-CRYPT via libpass builtin", lambda: sha512_crypt.verify(PW, sha)))
        blf = hasher.hash(PW, "BLF-CRYPT").removeprefix("{BLF-CRYPT}").encode()
        assert bcrypt.checkpw(PW.encode(), blf)
        cases.append(("BLF-CRYPT via pyca/bcrypt", lambda: bcrypt.checkpw(PW.encode(), blf)))
    return cases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--compare-backends", action="store_true")
    args = parser.parse_args(argv)
    runs = max(1, min(args.runs, 20))
    seconds = max(0.1, min(args.seconds, 10.0))
    load = os.getloadavg()
    print(f"median of {runs} runs of {seconds:g} s each; verifies per second\n")
    print("| scheme | 1 thread | 2 threads | speed-up |")
    print("|---|---:|---:|---:|")
    for label, fn in _cases(args.compare_backends):
        ones: list[float] = []
        twos: list[float] = []
        for _ in range(runs):  # interleaved, so that load from elsewhere hits both alike
            ones.append(_rate(fn, 1, seconds))
            twos.append(_rate(fn, 2, seconds))
        one, two = statistics.median(ones), statistics.median(twos)
        print(f"| {label} | {one:,.1f} | {two:,.1f} | {two / one:.2f}x |", flush=True)
    print(f"\nload average before/after: {load[0]:.2f} / {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
