"""Load client for idsvc's auth sockets, run as its own process so it never shares a CPU budget
with the server under test.

What it does: ``--concurrency`` workers each loop "pick a user, pick a good or bad password
(``--bad-ratio``), ask the server, time it" until ``--requests`` attempts are done or
``--duration`` seconds have passed, whichever comes first (both are required bounds). It prints
one JSON object: attempts per verdict, *wrong* answers (a bad password that got OK, a good one
that got NO), auths/s, latency p50/p90/p99/max in milliseconds, and its own CPU seconds
(``getrusage``), so a reader can tell a saturated client from a slow server. With
``--latency-file`` it also writes every latency (seconds, native float64) there, so a driver that
runs several client processes at once (``bench/daemons.py``) can merge their percentiles.

Protocols are plug-ins: :data:`PROTOCOLS` maps a name to a factory that builds one
:class:`AuthClient` per worker from the parsed arguments. ``saslauthd`` (one connection per
attempt, as libsasl does) is here; a Dovecot auth-client plug-in adds a factory and its options
in :func:`add_protocol_options` without touching the loop.

Users: ``--user-template`` / ``--password-template`` are ``str.format`` templates over ``n``
(0 ≤ n < ``--users``) and ``d`` (``n % --domains``), e.g. ``user{n}@d{d}.example`` and
``pw-{n}``; or ``--password-file`` (line ``n`` is user ``n``'s password, e.g. app passwords that
cannot be derived from ``n``). A bad password is the good one with ``-wrong`` appended.

What it does not do: talk to anything but loopback / UNIX sockets, or retry. A FAIL (connection
closed without a reply, refused, timeout) is counted, never hidden.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import random
import resource
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

MAX_REPLY = 1023


class Verdict(Enum):
    OK = "ok"  # server said yes
    NO = "no"  # server said no
    FAIL = "fail"  # no usable answer: closed, refused, timeout, garbage


class AuthClient(Protocol):
    async def check(self, login: str, password: str) -> Verdict: ...

    async def close(self) -> None: ...


# -- saslauthd ---------------------------------------------------------------------------------


def _counted(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


class SaslauthdClient:
    """libsasl's behaviour: connect, write the 4 (or 5) counted strings, read one reply."""

    def __init__(self, path: str, service: str, realm: str, timeout: float) -> None:
        self.path = path
        self.service = service
        self.realm = realm
        self.timeout = timeout

    async def check(self, login: str, password: str) -> Verdict:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_unix_connection(self.path)
                try:
                    writer.write(
                        _counted(login)
                        + _counted(password)
                        + _counted(self.service)
                        + _counted(self.realm)
                    )
                    await writer.drain()
                    head = await reader.readexactly(2)
                    (length,) = struct.unpack("!H", head)
                    if length < 2 or length > MAX_REPLY:
                        return Verdict.FAIL
                    text = await reader.readexactly(length)
                finally:
                    writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return Verdict.FAIL
        return Verdict.OK if text.startswith(b"OK") else Verdict.NO

    async def close(self) -> None:
        return None


def _saslauthd(args: argparse.Namespace) -> AuthClient:
    return SaslauthdClient(args.target, args.service, args.realm, args.timeout)


class _DovecotAdapter:
    """Maps ``bench.dovecot_client``'s True/False/None onto :class:`Verdict`."""

    def __init__(self, args: argparse.Namespace) -> None:
        try:
            from bench.dovecot_client import DovecotClient
        except ImportError:  # run as a script from inside bench/
            from dovecot_client import DovecotClient  # type: ignore[no-redef]

        self._client = DovecotClient(args.target, args.service, args.timeout)

    async def check(self, login: str, password: str) -> Verdict:
        answer = await self._client.check(login, password)
        return Verdict.FAIL if answer is None else Verdict.OK if answer else Verdict.NO

    async def close(self) -> None:
        await self._client.close()


PROTOCOLS: dict[str, Callable[[argparse.Namespace], AuthClient]] = {
    "saslauthd": _saslauthd,
    "dovecot": _DovecotAdapter,
}


def add_protocol_options(parser: argparse.ArgumentParser) -> None:
    """Options specific to a protocol; each plug-in adds its own here."""
    parser.add_argument("--service", default="smtp", help="saslauthd / dovecot service field")
    parser.add_argument("--realm", default="", help="saslauthd realm field")


# -- the loop ----------------------------------------------------------------------------------


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=lambda: {v.value: 0 for v in Verdict})
    wrong_ok: int = 0  # bad password answered OK: a security bug
    wrong_no: int = 0  # good password answered NO
    good: int = 0
    bad: int = 0


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def run(args: argparse.Namespace) -> dict[str, object]:
    factory = PROTOCOLS[args.protocol]
    tally = Tally()
    budget = args.requests
    deadline = time.monotonic() + args.duration
    rng = random.Random(args.seed)
    passwords: list[str] | None = None
    if args.password_file is not None:
        with open(args.password_file, encoding="utf-8") as f:
            passwords = f.read().splitlines()[: args.users]

    async def worker() -> None:
        nonlocal budget
        client = factory(args)
        try:
            while budget > 0 and time.monotonic() < deadline:
                budget -= 1
                n = rng.randrange(args.users)
                d = n % args.domains
                login = args.user_template.format(n=n, d=d)
                if passwords is not None:
                    password = passwords[n]
                else:
                    password = args.password_template.format(n=n, d=d)
                bad = rng.random() < args.bad_ratio
                if bad:
                    password += "-wrong"
                t0 = time.perf_counter()
                verdict = await client.check(login, password)
                tally.latencies.append(time.perf_counter() - t0)
                tally.verdicts[verdict.value] += 1
                if bad:
                    tally.bad += 1
                    tally.wrong_ok += verdict is Verdict.OK
                else:
                    tally.good += 1
                    tally.wrong_no += verdict is Verdict.NO
        finally:
            await client.close()

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    lat = sorted(tally.latencies)
    done = len(lat)
    if args.latency_file is not None:
        with open(args.latency_file, "wb") as out:
            array.array("d", lat).tofile(out)
    return {
        "protocol": args.protocol,
        "concurrency": args.concurrency,
        "attempts": done,
        "good": tally.good,
        "bad": tally.bad,
        "verdicts": tally.verdicts,
        "wrong_ok": tally.wrong_ok,
        "wrong_no": tally.wrong_no,
        "wall_s": round(wall, 4),
        "auths_per_s": round(done / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(_percentile(lat, 0.50) * 1000, 3),
        "p90_ms": round(_percentile(lat, 0.90) * 1000, 3),
        "p99_ms": round(_percentile(lat, 0.99) * 1000, 3),
        "max_ms": round(lat[-1] * 1000, 3) if lat else 0.0,
        "client_cpu_s": round((cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime), 4),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="saslauthd")
    p.add_argument("--target", required=True, help="socket path (or protocol-specific address)")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--requests", type=int, required=True, help="stop after this many attempts")
    p.add_argument("--duration", type=float, required=True, help="stop after this many seconds")
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--domains", type=int, default=1, help="template key d = n %% domains")
    p.add_argument("--user-template", default="user{n:06d}@bench.example")
    p.add_argument("--password-template", default="pw-{n}")
    p.add_argument("--bad-ratio", type=float, default=0.2)
    p.add_argument("--timeout", type=float, default=10.0, help="per attempt")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--latency-file", help="write every latency (float64 seconds) here")
    p.add_argument("--password-file", help="line n is user n's password (not the template)")
    add_protocol_options(p)
    args = p.parse_args(argv)
    if not 1 <= args.concurrency <= 1024:
        p.error("--concurrency must be 1..1024")
    if args.requests < 1 or args.duration <= 0 or args.users < 1 or args.domains < 1:
        p.error("--requests, --duration, --users and --domains must be positive")
    if not 0.0 <= args.bad_ratio <= 1.0:
        p.error("--bad-ratio must be within 0..1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
