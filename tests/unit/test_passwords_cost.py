"""idsvc.passwords: dummy_verify costs what a real verify costs; verify is thread-safe.

Timings are medians of interleaved runs of the calling thread's CPU time (``time.thread_time``:
the hashes run in the calling thread), so load from other processes does not skew the ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from idsvc.config import PasswordSettings
from idsvc.passwords import PasswordHasher


def _median_pair(
    a: Callable[[], object], b: Callable[[], object], runs: int
) -> tuple[float, float]:
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(runs):
        for fn, sink in ((a, ta), (b, tb)):
            start = time.thread_time()
            fn()
            sink.append(time.thread_time() - start)
    return statistics.median(ta), statistics.median(tb)


@pytest.mark.parametrize(
    "settings",
    [
        PasswordSettings(),  # ARGON2ID m=64 MiB t=3 p=1: the default
        PasswordSettings(scheme="BLF-CRYPT", bcrypt_cost=8),
        PasswordSettings(scheme="SHA512-CRYPT", sha_crypt_rounds=20000),
    ],
    ids=["argon2id-default", "blf-crypt-8", "sha512-crypt-20000"],
)
def test_dummy_verify_costs_like_a_real_verify(settings: PasswordSettings) -> None:
    hasher = PasswordHasher(settings)
    stored = hasher.hash("the real password")
    hasher.dummy_verify("warm-up")  # creates the dummy hash once
    real, dummy = _median_pair(
        lambda: hasher.verify("a wrong password", stored),
        lambda: hasher.dummy_verify("a wrong password"),
        runs=7,
    )
    assert 0.5 <= dummy / real <= 2.0, (real, dummy)


def test_dummy_verify_accepts_unusable_input_at_full_cost() -> None:
    hasher = PasswordHasher(PasswordSettings(scheme="BLF-CRYPT", bcrypt_cost=8))
    hasher.dummy_verify("warm-up")
    empty, normal = _median_pair(
        lambda: hasher.dummy_verify(""), lambda: hasher.dummy_verify("pw"), runs=5
    )
    assert 0.5 <= empty / normal <= 2.0, (empty, normal)


def test_verify_is_thread_safe() -> None:
    hasher = PasswordHasher(
        PasswordSettings(argon2_memory_kib=2048, argon2_time_cost=1, bcrypt_cost=4)
    )
    schemes = ("ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "SSHA512", "SSHA")
    cases = []
    for i in range(24):
        pw = f"password-{i}-é"
        cases.append((pw, hasher.hash(pw, schemes[i % len(schemes)])))
    jobs = [
        (pw if n % 2 else pw + "!", stored, n % 2 == 1) for n, (pw, stored) in enumerate(cases * 8)
    ]

    def check(job: tuple[str, str, bool]) -> bool:
        pw, stored, expected = job
        return hasher.verify(pw, stored) is expected

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(check, jobs))
    assert len(results) == len(jobs)
    assert all(results)


def test_hash_is_thread_safe() -> None:
    hasher = PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        hashes = list(pool.map(lambda i: hasher.hash(f"pw{i}"), range(64)))
    assert len(set(hashes)) == 64
    assert all(hasher.verify(f"pw{i}", h) for i, h in enumerate(hashes))
