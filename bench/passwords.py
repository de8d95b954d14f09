"""Benchmark: password verifications per second per scheme, 1 and 2 threads.

Run from the repository root:  ``.venv/bin/python -m bench.passwords [--runs 5] [--seconds 1]``

Each cell is the median over ``--runs`` runs, taken round-robin over all cells. One run
verifies the correct password against one stored hash in a loop for ``--seconds`` (each thread
its own loop, all sharing one ``PasswordHasher``) and counts completed verifications; the last
column divides by the process's CPU time instead of wall time, which a busy shared machine
disturbs much less. Schemes: SSHA, SHA512-CRYPT (5000 rounds), BLF-CRYPT (cost 10), ARGON2ID
(m=64 MiB, t=3, p=1). ``--compare-backends`` adds the alternatives that were measured to choose
the libraries (libpass's pure-Python sha512_crypt, pyca/bcrypt) — the only place outside
idsvc.passwords that touches them.
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


def _rate(fn: Callable[[], object], threads: int, seconds: float) -> tuple[float, float]:
    """(verifies per wall-clock second, verifies per CPU second of this process)."""
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
    started, cpu_started = time.perf_counter(), time.process_time()
    deadline = started + seconds
    start_gate.wait()
    for w in workers:
        w.join()
    wall = time.perf_counter() - started
    cpu = max(time.process_time() - cpu_started, 1e-9)
    return sum(counts) / wall, sum(counts) / cpu


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
    cases = _cases(args.compare_backends)
    # round-robin over cases and thread counts, so that load from elsewhere hits all cells alike
    samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(runs):
        for label, fn in cases:
            for threads in (1, 2):
                samples.setdefault((label, threads), []).append(_rate(fn, threads, seconds))
    print(f"median of {runs} runs of {seconds:g} s each; verifies per second\n")
    print("| scheme | 1 thread | 2 threads | speed-up | per CPU-second (1 thread) |")
    print("|---|---:|---:|---:|---:|")
    for label, _ in cases:
        one = statistics.median(w for w, _ in samples[(label, 1)])
        two = statistics.median(w for w, _ in samples[(label, 2)])
        cpu = statistics.median(c for _, c in samples[(label, 1)])
        print(f"| {label} | {one:,.1f} | {two:,.1f} | {two / one:.2f}x | {cpu:,.1f} |")
    print(f"\nload average before/after: {load[0]:.2f} / {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
