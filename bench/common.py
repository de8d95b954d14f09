"""Measuring helpers every benchmark here shares: CPU and memory from ``/proc``, process trees,
latency percentiles, per-run statistics and their medians, threads started and joined together,
a raw python-ldap connection, and markdown table lines.

What it does not do: start servers (``bench/daemons.py``, ``bench/ldapdata.py``) or print
anything. How it fails: reading ``/proc`` of a vanished process counts 0 CPU seconds (a daemon
that exits mid-run shows up as a suspiciously low figure, not as an exception); ``rss_mib`` of a
vanished process is NaN; a percentile of no latencies is NaN.

Linux only (``/proc/<pid>/stat`` fields 14/15 are utime/stime in clock ticks, all threads).
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- /proc accounting -----------------------------------------------------------------------------


def stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (``[0]`` is the state letter,
    ``[1]`` the ppid), or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (by ppid), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime+stime (all threads) of ``pids``; a vanished pid counts 0."""
    total = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (0.0 when None)."""
    return 0.0 if pid is None else cpu_seconds([pid])


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size (``VmRSS``) of ``pid`` in MiB; NaN when unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- statistics -----------------------------------------------------------------------------------


def percentile_ms(latencies: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1, nearest rank rounding down) of latencies in seconds, in ms."""
    if not latencies:
        return float("nan")
    data = sorted(latencies)
    return data[min(len(data) - 1, int(q * len(data)))] * 1000


@dataclass
class RunStats:
    """One timed run: operations, their latencies (seconds), and the CPU it cost."""

    ops: int
    seconds: float
    latencies: list[float]
    failures: int
    cpu: float = 0.0  # CPU seconds of this process (all threads) during the run
    server_cpu: float = 0.0  # CPU seconds of the server (slapd) during the run, 0 if none
    cached: int = 0  # answers served from a cache

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return percentile_ms(self.latencies, q)


@dataclass
class Cell:
    """Medians over the runs of one benchmark setting."""

    rate: float
    p50: float
    p99: float
    failures: int
    cpu_us: float  # our CPU per operation, µs (load-independent, unlike the rate)
    server_us: float  # server CPU per operation, µs
    hit_ratio: float = 0.0


def summarise(runs: Sequence[RunStats]) -> Cell:
    return Cell(
        rate=statistics.median(r.rate for r in runs),
        p50=statistics.median(r.pct(0.50) for r in runs),
        p99=statistics.median(r.pct(0.99) for r in runs),
        failures=sum(r.failures for r in runs),
        cpu_us=statistics.median(1e6 * r.cpu / max(1, r.ops) for r in runs),
        server_us=statistics.median(1e6 * r.server_cpu / max(1, r.ops) for r in runs),
        hit_ratio=sum(r.cached for r in runs) / max(1, sum(r.ops for r in runs)),
    )


class Meter:
    """Wall time, this process's CPU and a server's CPU over a ``with`` block::

    with Meter(slapd_pid) as m:
        ...
    stats = m.stats(ops, latencies, failures)
    """

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self.seconds = self.cpu = self.server_cpu = 0.0

    def __enter__(self) -> Meter:
        self._cpu0, self._server0 = time.process_time(), process_cpu(self.server_pid)
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.seconds = time.perf_counter() - self._start
        self.cpu = time.process_time() - self._cpu0
        self.server_cpu = process_cpu(self.server_pid) - self._server0

    def stats(self, ops: int, latencies: list[float], failures: int, cached: int = 0) -> RunStats:
        return RunStats(ops, self.seconds, latencies, failures, self.cpu, self.server_cpu, cached)


def run_threads(worker: Callable[[int], None], count: int) -> None:
    """Start ``worker(0)`` … ``worker(count - 1)`` in threads and join them all."""
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(count)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def threaded_ldap_load(
    uri: str,
    pick: Callable[[random.Random], T],
    op: Callable[[Any, T], bool],
    *,
    threads: int,
    seconds: float,
    limit: int,
    seed: int = 0,
    bind: tuple[str, str] | None = None,
    server_pid: int | None = None,
) -> RunStats:
    """``threads`` threads, one persistent python-ldap connection each (bound as ``bind`` when
    given), each repeating "``pick`` an argument, time ``op(conn, argument)``" until ``seconds``
    have passed or it did ``limit`` operations. ``op`` returns False, or raises
    ``ldap.LDAPError``, for a failure. Thread ``n`` draws from ``random.Random(seed * 1000 + n)``;
    only ``op`` is timed."""
    import ldap

    latencies: list[float] = []
    lock = threading.Lock()
    counters = {"ops": 0, "failures": 0}
    deadline = time.perf_counter() + seconds

    def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        conn = ldap_connection(uri)
        if bind is not None:
            conn.simple_bind_s(*bind)
        mine: list[float] = []
        fails = 0
        try:
            while time.perf_counter() < deadline and len(mine) < limit:
                argument = pick(rng)
                start = time.perf_counter()
                try:
                    fails += not op(conn, argument)
                except ldap.LDAPError:
                    fails += 1
                mine.append(time.perf_counter() - start)
        finally:
            conn.unbind_s()
        with lock:
            latencies.extend(mine)
            counters["ops"] += len(mine)
            counters["failures"] += fails

    with Meter(server_pid) as meter:
        run_threads(worker, threads)
    return meter.stats(counters["ops"], latencies, counters["failures"])


def ratio(ours: float, theirs: float) -> float:
    """``ours / theirs``; infinity when ``theirs`` is 0."""
    return ours / theirs if theirs else float("inf")


# -- clients and output ---------------------------------------------------------------------------


def ldap_connection(uri: str) -> Any:
    """A plain python-ldap connection (LDAPv3, referrals not chased), not bound yet."""
    import ldap

    conn = ldap.initialize(uri)
    conn.protocol_version = 3
    conn.set_option(ldap.OPT_REFERRALS, 0)
    return conn


def md_row(cells: Iterable[object]) -> str:
    """One markdown table row: ``| a | b |``."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def md_head(names: Sequence[str], left: int = 1) -> list[str]:
    """The header and the alignment line of a markdown table; the first ``left`` columns are
    left-aligned, the rest right-aligned (numbers)."""
    align = ["---"] * left + ["---:"] * (len(names) - left)
    return [md_row(names), "|" + "|".join(align) + "|"]
