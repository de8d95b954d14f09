"""Micro-benchmark of what items 2 and 5 of issue 7 add to or take off one authentication:

* audit: an event written inline by ``LogAuditSink`` (one log line, the pre-queue default for a
  success) vs handed to ``QueuedAuditSink.emit`` (what the request path pays now; the line is
  written by the writer thread), and the writer's cost per event;
* penalties: ``PenaltyTracker`` on its in-process tables vs on the shared-memory table the
  workers use: a success (clears the account), a failure (counts network and account).

Single process, no I/O but ``/dev/null``; bounded by ``--calls``. Prints one line per figure
(median of ``--runs`` runs, µs per call). Usage: ``.venv/bin/python bench/audit_penalty.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from idsvc.audit import AuditEvent, LogAuditSink, QueuedAuditSink  # noqa: E402
from idsvc.auth.penalty import PenaltyTracker, SharedFailureTable  # noqa: E402
from idsvc.config import LoggingSettings  # noqa: E402
from idsvc.logs import setup_logging  # noqa: E402


def per_call(fn: Callable[[int], object], calls: int, runs: int) -> float:
    """Median CPU µs of the calling thread per ``fn(i)`` over ``runs`` runs of ``calls`` calls
    (CPU, not wall time: the figures hold on a shared, loaded machine)."""
    samples = []
    for _ in range(runs):
        started = time.thread_time()
        for i in range(calls):
            fn(i)
        samples.append((time.thread_time() - started) / calls * 1e6)
    return statistics.median(samples)


def event(i: int) -> AuditEvent:
    return AuditEvent(
        "auth",
        "mismatch",
        target=f"user{i}@d{i % 100}.example",
        remote="192.0.2.7",
        service="imap",
        detail={"mechanism": "PLAIN", "protocol": "dovecot", "cached": False, "reason": "x"},
    )


def penalty_costs(shared: bool, n: int, runs: int) -> str:
    tracker = PenaltyTracker()
    if shared:
        tracker.share(SharedFailureTable())
    accounts = [(f"u{i}@x.example",) for i in range(1024)]
    networks = [f"10.0.{i >> 8 & 255}.{i & 255}" for i in range(65536)]
    ok = per_call(lambda i: tracker.record_success(accounts[i & 1023]), n, runs)
    bad = per_call(
        lambda i: tracker.record_failure(networks[i & 65535], accounts[i & 1023]), n, runs
    )
    name = "shared table" if shared else "in-process"
    return f"penalty {name}: success {ok:.2f} µs, failure {bad:.2f} µs"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    n, runs = args.calls, args.runs
    with open("/dev/null", "w") as null:
        setup_logging(LoggingSettings(), stream=null)
        events = [event(i) for i in range(1000)]
        inline = LogAuditSink(auth="all")
        cost = per_call(lambda i: inline.emit(events[i % 1000]), n, runs)
        print(f"audit inline LogAuditSink.emit (one line): {cost:.2f} µs")
        queued = QueuedAuditSink(LogAuditSink(auth="all"), max_queue=n * runs + 1)
        started = time.process_time()
        emit = per_call(lambda i: queued.emit(events[i % 1000]), n, runs)
        queued.close(timeout=120)
        total = (time.process_time() - started) / (n * runs) * 1e6
        print(f"audit QueuedAuditSink.emit (request path): {emit:.2f} µs")
        print(f"audit queued, process CPU per event incl. writer thread: {total:.2f} µs")
    for shared in (False, True):
        print(penalty_costs(shared, n, runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
