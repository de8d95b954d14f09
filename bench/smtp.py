"""Benchmark: mailsvc vs Postfix virtual(8), messages accepted *and durably delivered* per second.

What it runs, all on this machine, in one go:

* one ``idsvc serve`` (embedded store, Dovecot auth-client + socketmap) and ``mailsvc serve``
  (``tests/fixtures/mailstack.py``: the same stack the integration tests use, fsync on);
* one real **Postfix** 3.7 (``tests/fixtures/postfix.py`` plus a ``virtual`` service) delivering
  into its own Maildir base with ``virtual(8)``, asking idsvc's socketmap for
  ``virtual_mailbox_domains`` and ``virtual_alias_maps`` (``virtual_mailbox_maps`` is a texthash
  copy of idsvc's answer: virtual(8) refuses socketmap for mailbox paths);
* Postfix's **smtp-sink** as the accept-only ceiling (no delivery at all);
* for each of ``--rounds`` rounds, for each concurrency (1, 8, 32 sessions), each target in turn
  (order rotated per round): ``smtp-source -s <sessions> -m <messages> -l 10240`` to one mailbox.
  A run ends when smtp-source has finished *and* every message is in the Maildir's ``new/``
  (mailsvc answers 250 only after that; Postfix delivers after its 250, from its queue).

Figures: messages/s (median over rounds, min-max in brackets), mailsvc's RSS before and after all
runs, and mailsvc/Postfix. Durability: mailsvc fsyncs the message and ``new/`` before 250;
Postfix fsyncs its queue file before 250 and the Maildir file in virtual(8) (not the directory).

What it does not do: isolate the machine (it is shared: run it twice and look at the spread),
measure per-message latency (smtp-source does not report it), or talk to anything but 127.0.0.1.
Every process it starts is stopped by pid at the end, also on errors.

Usage: ``PYTHONPATH=. .venv/bin/python bench/smtp.py [--messages 300] [--rounds 3]`` (root:
Postfix's master must start as root).

``--rss 100000`` is a separate mode (no Postfix, no smtp-sink): ``smtp-source -s 8`` sends that
many 10 KB messages through mailsvc in ten equal batches, and mailsvc's RSS (``VmRSS`` from
``/proc``) is printed after the warm-up and after every batch, with the delivered messages
removed between batches (100k messages are about 1 GB). Flat means the last sample is within a
few MiB of the first one after a batch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    CLK_TCK,
    cpu_seconds,
    md_head,
    md_row,
    percentile_ms,
    process_tree,
    rss_mib,
    stat_fields,
)
from mailsvc.clients.socketmap import SocketmapClient  # noqa: E402
from mailsvc.config import IdentitySettings  # noqa: E402
from tests.fixtures.mailstack import BOB, MailStack, free_port, mail_stack  # noqa: E402
from tests.fixtures.postfix import PostfixSasl, PostfixServer  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
SIZE = 10240
SESSIONS = (1, 8, 32)


class VirtualPostfix(PostfixServer):
    """The test fixture's Postfix plus a ``virtual`` delivery service."""

    def _master_cf(self) -> str:
        return super()._master_cf() + "virtual unix - n n - - virtual\n"


def tree_cpu(root: int | None) -> float:
    """CPU seconds of ``root``'s live process tree plus the children it has reaped (Postfix's
    master reaps smtpd/cleanup/virtual processes that exit after ``max_use`` requests)."""
    if root is None:
        return float("nan")
    fields = stat_fields(root)
    reaped = (int(fields[13]) + int(fields[14])) / CLK_TCK if fields else 0.0  # cutime, cstime
    return cpu_seconds(process_tree(root)) + reaped


@dataclass
class Target:
    name: str
    port: int
    maildir: Path | None  # where delivered messages appear; None: accept only
    pid: int | None = None  # the server whose process tree's CPU is counted

    def delivered(self) -> int:
        if self.maildir is None:
            return 0
        try:
            return len(os.listdir(self.maildir / "new"))
        except FileNotFoundError:
            return 0

    def reset(self) -> None:
        if self.maildir is not None and (self.maildir / "new").is_dir():
            for name in os.listdir(self.maildir / "new"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.maildir / "new" / name)


def one_run(
    target: Target, sessions: int, messages: int, timeout: float | None = None
) -> tuple[float, float]:
    """(messages/s, server CPU ms per message) for one smtp-source run, counting until the last
    message is in new/."""
    target.reset()
    timeout = timeout if timeout is not None else max(120.0, messages / 50)
    cpu_before = tree_cpu(target.pid)
    argv = [
        SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(SIZE),
        "-f", "bench@remote.example", "-t", BOB, f"127.0.0.1:{target.port}",
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"smtp-source against {target.name}: {result.stderr.strip()}")
    if target.maildir is not None:
        deadline = started + timeout
        while target.delivered() < messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target.name}: {target.delivered()}/{messages} delivered")
            time.sleep(0.01)
    elapsed = time.monotonic() - started
    cpu = tree_cpu(target.pid) - cpu_before
    return messages / elapsed, 1000 * cpu / messages


async def _latency_session(port: int, count: int, out: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        line = await reader.readline()
        while line[3:4] == b"-":
            line = await reader.readline()
        return line

    body = b"Subject: latency\r\n\r\n" + (b"x" * 98 + b"\r\n") * (SIZE // 100) + b".\r\n"
    await reply()
    writer.write(b"EHLO latency.test\r\n")
    await reply()
    for _ in range(count):
        for cmd in (b"MAIL FROM:<bench@remote.example>", f"RCPT TO:<{BOB}>".encode(), b"DATA"):
            writer.write(cmd + b"\r\n")
            await reply()
        writer.write(body)
        started = time.perf_counter()
        answer = await reply()
        if not answer.startswith(b"250"):
            raise RuntimeError(f"latency run: {answer!r}")
        out.append(time.perf_counter() - started)
    writer.write(b"QUIT\r\n")
    await reply()
    writer.close()


def accept_latency(target: Target, sessions: int, messages: int) -> list[float]:
    """Seconds from the end of DATA to the 250, per message, ``sessions`` sessions at once."""
    target.reset()
    out: list[float] = []

    async def run() -> None:
        per = max(1, messages // sessions)
        await asyncio.gather(*(_latency_session(target.port, per, out) for _ in range(sessions)))

    asyncio.run(run())
    return out


@contextlib.contextmanager
def sink() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [SMTP_SINK, "-u", "root", f"127.0.0.1:{port}", "256"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.3)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def mailbox_path(stack: MailStack, address: str) -> str:
    client = SocketmapClient(f"unix:{stack.run / 'socketmap'}")
    try:
        path = await client.lookup("mailbox", address)
    finally:
        await client.close()
    assert path is not None, address
    return path


@contextlib.contextmanager
def postfix(stack: MailStack) -> Iterator[tuple[PostfixServer, Path]]:
    root = Path(tempfile.mkdtemp(prefix="idsvc-pfbench-"))
    os.chmod(root, 0o755)  # noqa: S103 - postfix daemons traverse it
    base = root / "vmail"
    base.mkdir()
    shutil.chown(base, "nobody", "nogroup")
    socketmap = f"socketmap:unix:{stack.run / 'socketmap'}"
    path = asyncio.run(mailbox_path(stack, BOB))
    mailbox_table = root / "mailbox.texthash"
    mailbox_table.write_text(f"{BOB} {path}\n", encoding="utf-8")
    server = VirtualPostfix(
        root,
        PostfixSasl.dovecot(stack.run / "auth-client"),
        extra_main={
            "virtual_mailbox_domains": f"{socketmap}:domain",
            # virtual(8) refuses socketmap for mailbox paths ("not allowed for security-sensitive
            # data"), with or without proxy:, so the path idsvc's mailbox map answers is copied
            # into a texthash table; domains and aliases still come from socketmap
            "virtual_mailbox_maps": f"texthash:{mailbox_table}",
            "virtual_alias_maps": f"{socketmap}:alias",
            "virtual_mailbox_base": str(base),
            "virtual_uid_maps": "static:65534",
            "virtual_gid_maps": "static:65534",
            "virtual_minimum_uid": "100",
            "virtual_transport": "virtual",
        },
    )
    try:
        server.start()
        yield server, base
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def bench_stack() -> contextlib.AbstractContextManager[MailStack]:
    return mail_stack(
        smtp={"max_connections_per_ip": 128, "max_message_size": 1_000_000},
        # mailsvc's default lookup cache (the test stack turns it off)
        identity={"cache_ttl": IdentitySettings.model_fields["cache_ttl"].default},
        idsvc_extra={
            "socketmap.socket": {"mode": 0o666},
            "dovecot_auth.socket": {"mode": 0o666},
            "mail": {"cache_ttl": 30.0},  # idsvc's default (the test stack turns it off)
        },
    )


def rss_run(total: int, sessions: int, samples: int = 10) -> int:
    """Send ``total`` messages through mailsvc in ``samples`` batches; mailsvc's RSS after each."""
    batch = max(1, total // samples)
    rows: list[tuple[int, float, float]] = []  # (messages so far, RSS MiB, batch msgs/s)
    with bench_stack() as stack:
        assert stack.mailsvc is not None
        pid = stack.mailsvc.proc.pid
        target = Target("mailsvc", stack.mx, stack.maildir(BOB), pid)
        one_run(target, 1, 5)  # warm-up: the maildir exists, connections to idsvc are open
        target.reset()
        rows.append((0, rss_mib(pid), float("nan")))
        sent = 0
        for _ in range(samples):
            rate, _ms = one_run(target, sessions, batch)
            sent += batch
            target.reset()  # 10 KB x batch on disk at most
            rows.append((sent, rss_mib(pid), rate))
            print(f"{sent} messages: RSS {rows[-1][1]:.1f} MiB, {rate:.0f}/s", file=sys.stderr,
                  flush=True)  # fmt: skip
        peak = hwm_mib(pid)
    print(f"\nmailsvc RSS over {sent:,} messages of {SIZE} bytes, {sessions} sessions "
          "(smtp-source, one connection per message)\n")  # fmt: skip
    for line in md_head(["messages delivered", "mailsvc RSS MiB", "batch msgs/s"]):
        print(line)
    for done, rss, rate in rows:
        print(md_row([f"{done:,}", f"{rss:.1f}", "warm-up" if done == 0 else f"{rate:,.0f}"]))
    growth = rows[-1][1] - rows[1][1]
    print(f"\ngrowth from the first batch to the last: {growth:+.1f} MiB; peak (VmHWM) "
          f"{peak:.1f} MiB")  # fmt: skip
    return 0


def hwm_mib(pid: int) -> float:
    """Peak resident set size (``VmHWM``) of ``pid`` in MiB; NaN when unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return float("nan")
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300, help="messages per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rss", type=int, default=0, metavar="N",
        help="instead: send N messages through mailsvc and sample its RSS every N/10",
    )  # fmt: skip
    parser.add_argument("--rss-sessions", type=int, default=8)
    args = parser.parse_args()
    # SIGTERM (e.g. from timeout) unwinds like Ctrl-C, so every started process is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.rss > 0:
        return rss_run(args.rss, args.rss_sessions)
    results: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    with bench_stack() as stack, sink() as sink_port:
        stack.workdir.chmod(0o711)
        stack.run.chmod(0o755)
        with postfix(stack) as (pf, pf_base):
            assert stack.mailsvc is not None
            pid = stack.mailsvc.proc.pid
            targets = [
                Target("smtp-sink", sink_port, None),
                Target("mailsvc", stack.mx, stack.maildir(BOB), pid),
                Target(
                    "Postfix virtual",
                    pf.port,
                    pf_base / "example.org" / "bob" / "Maildir",
                    pf.master_pid(),
                ),
            ]
            for target in targets[1:]:  # warm-up: maildirs exist, connections to idsvc open
                one_run(target, 1, 5)
            rss_before = rss_mib(pid)
            for rnd in range(args.rounds):
                order = targets[rnd % 3 :] + targets[: rnd % 3]
                for sessions in SESSIONS:
                    for target in order:
                        rate, ms = one_run(target, sessions, args.messages)
                        results.setdefault((target.name, sessions), []).append(rate)
                        cpu.setdefault((target.name, sessions), []).append(ms)
                        print(f"round {rnd + 1} {target.name} s={sessions}: {rate:.0f}/s",
                              file=sys.stderr, flush=True)  # fmt: skip
            latencies: dict[tuple[str, int], list[float]] = {}
            for rnd in range(args.rounds):
                for sessions in (1, 8):
                    for target in targets[rnd % 3 :] + targets[: rnd % 3]:
                        latencies.setdefault((target.name, sessions), []).extend(
                            accept_latency(target, sessions, args.messages)
                        )
            rss_after = rss_mib(pid)
    print(f"\n{args.messages} messages of {SIZE} bytes per run, {args.rounds} rounds, medians "
          "(min-max); a run ends when the last message is in new/\n")  # fmt: skip

    def cell(name: str, sessions: int) -> str:
        runs = results[(name, sessions)]
        return f"{statistics.median(runs):,.0f} ({min(runs):,.0f}-{max(runs):,.0f})"

    med: Callable[[str, int], float] = lambda n, s: statistics.median(results[(n, s)])  # noqa: E731
    for line in md_head(["sessions", "smtp-sink (accept only)", "mailsvc", "Postfix virtual(8)",
                         "mailsvc / Postfix"]):  # fmt: skip
        print(line)
    for s in SESSIONS:
        ratio = med("mailsvc", s) / med("Postfix virtual", s)
        print(md_row([s, cell("smtp-sink", s), cell("mailsvc", s), cell("Postfix virtual", s),
                      f"{ratio:.2f}x"]))  # fmt: skip
    print("\nserver CPU per message (ms, medians; load-independent unlike the rates; Postfix: "
          "its whole process tree, idsvc not counted for either)\n")  # fmt: skip
    for line in md_head(["sessions", "mailsvc", "Postfix virtual(8)"]):
        print(line)
    for s in SESSIONS:
        print(md_row([s] + [f"{statistics.median(cpu[(n, s)]):.2f}"
                            for n in ("mailsvc", "Postfix virtual")]))  # fmt: skip
    print("\naccept latency, end of DATA to 250 (ms, all rounds; asyncio client, one message "
          "after another per session)\n")  # fmt: skip
    for line in md_head(["sessions", "target", "p50", "p99"], left=2):
        print(line)
    for (name, s), lat in sorted(latencies.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(
            md_row([s, name, f"{percentile_ms(lat, 0.5):.2f}", f"{percentile_ms(lat, 0.99):.2f}"])
        )
    print(f"\nmailsvc RSS: {rss_before:.1f} MiB after warm-up, {rss_after:.1f} MiB after "
          f"{sum(len(v) for k, v in results.items() if k[0] == 'mailsvc') * args.messages} "
          "messages")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
