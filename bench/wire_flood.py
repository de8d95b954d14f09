"""Abuse figures for the auth sockets: connection squatting and pipelined Dovecot requests.

Two scenarios, each against a listener running in a child process of its own (the real
``SaslauthdServer`` / ``DovecotAuthServer`` over a real ``Authenticator`` on an embedded store):

* ``squat``: ``--squatters`` local connections (default 600, more than the default
  ``max_connections`` of 512) each send half a request and stay silent; whenever the server closes
  one, it is reopened at once (the flood is renewed). Meanwhile ``--logins`` real logins run one
  after another with a 5 s client timeout. Prints the success rate and the latency percentiles of
  the real logins, per protocol (saslauthd, dovecot).
* ``pipeline``: one Dovecot auth connection, handshake, then ``--requests`` (default 2000) AUTH
  lines written back to back, ``--fail-share`` (default 0.3) of them with a wrong password
  (the auth core's default 2 s failure delay applies to those). Prints how many got an answer,
  how long it took and the server's peak RSS (``VmHWM``) growth.

Run it against any tree: ``PYTHONPATH=<tree> python bench/wire_flood.py squat`` (the listener
code comes from ``PYTHONPATH``). Loopback / local sockets only; every run stops by itself and the
child server is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOOD, GOOD_PW = "bob@example.org", "s3cret-Bob"


# -- the server child ---------------------------------------------------------------------------


async def _serve(kind: str, sock: Path, state: Path, failure_delay: float) -> None:
    from idsvc.audit import LogAuditSink
    from idsvc.auth.engine import Authenticator
    from idsvc.config import (
        AuthSettings,
        DovecotAuthSettings,
        EmbeddedSettings,
        PasswordSettings,
        SaslauthdSettings,
        SocketSettings,
    )
    from idsvc.directory.sqlite import SqliteDirectory
    from idsvc.model import Account, Address, Domain
    from idsvc.passwords import PasswordHasher

    hasher = PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT", sha_crypt_rounds=1000))
    directory = await SqliteDirectory.open(EmbeddedSettings(path=state / "idsvc.db"))
    await directory.add_domain(Domain(name="example.org"))
    await directory.add_account(
        Account(address=Address.parse(GOOD), password_hash=hasher.hash(GOOD_PW))
    )
    auth = Authenticator(
        directory,
        hasher,
        AuthSettings(failure_delay=failure_delay, penalty=False),
        audit=LogAuditSink(),
    )
    server: Any
    sockset = SocketSettings(path=sock, mode=0o666)
    if kind == "saslauthd":
        from idsvc.wire.saslauthd.server import SaslauthdServer

        server = SaslauthdServer(SaslauthdSettings(socket=sockset), auth)
    else:
        from idsvc.wire.dovecot_auth import DovecotAuthServer

        server = DovecotAuthServer(DovecotAuthSettings(socket=sockset), auth)
    await server.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.close()
    await auth.close()
    await directory.close()


class Child:
    """The listener in a child process; stopped by PID."""

    def __init__(self, kind: str, tmp: Path, failure_delay: float = 2.0) -> None:
        self.sock = tmp / "s"
        argv = [sys.executable, __file__, "_serve", kind, str(self.sock), str(tmp)]
        argv.append(str(failure_delay))
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.stop()
            raise RuntimeError(f"server child did not start: {line!r}")

    def hwm_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return -1

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- clients ------------------------------------------------------------------------------------


def _counted(*fields: str) -> bytes:
    out = b""
    for field in fields:
        raw = field.encode()
        out += len(raw).to_bytes(2, "big") + raw
    return out


def _plain(login: str, password: str) -> str:
    return base64.b64encode(f"\0{login}\0{password}".encode()).decode()


async def _saslauthd_login(path: Path) -> bool:
    reader, writer = await asyncio.open_unix_connection(os.fspath(path))
    try:
        writer.write(_counted(GOOD, GOOD_PW, "smtp", ""))
        return (await reader.read()).endswith(b"OK")
    finally:
        writer.close()


async def _handshake(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(os.fspath(path), limit=1 << 20)
    writer.write(b"VERSION\t1\t0\nCPID\t4242\n")
    while (await reader.readline()).rstrip(b"\n") != b"DONE":
        pass
    return reader, writer


async def _dovecot_login(path: Path) -> bool:
    reader, writer = await _handshake(path)
    try:
        writer.write(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={_plain(GOOD, GOOD_PW)}\n".encode())
        return (await reader.readline()).startswith(b"OK\t1\t")
    finally:
        writer.close()


async def _squatter(path: Path, partial: bytes, stop: asyncio.Event) -> int:
    """Hold one half-written connection open, reopening it whenever the server closes it."""
    opened = 0
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_unix_connection(os.fspath(path))
        except OSError:
            await asyncio.sleep(0.01)
            continue
        opened += 1
        try:
            writer.write(partial)
            read = asyncio.ensure_future(reader.read())
            halt = asyncio.ensure_future(stop.wait())
            await asyncio.wait({read, halt}, return_when=asyncio.FIRST_COMPLETED)
            for fut in (read, halt):
                fut.cancel()
            await asyncio.gather(read, halt, return_exceptions=True)
        except OSError:
            pass
        finally:
            writer.close()
    return opened


async def _flood(kind: str, path: Path, squatters: int) -> None:
    """The squatters (a process of their own, like a real attacker): run until SIGTERM."""
    partial = _counted(GOOD)[:4] if kind == "saslauthd" else b"VERSION\t1"
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    flood = [asyncio.create_task(_squatter(path, partial, stop)) for _ in range(squatters)]
    print("flooding", flush=True)
    print(sum(await asyncio.gather(*flood)), flush=True)


async def squat(kind: str, squatters: int, logins: int, user: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wf-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - the squatters may run as another user
        child = Child(kind, Path(tmp))
        path = child.sock
        # the squatters need only the standard library: another user may not reach the venv
        python = sys.executable if user is None else "/usr/bin/python3"
        argv = [python, __file__, "_flood", kind, str(path), str(squatters)]
        flood = subprocess.Popen(argv, stdout=subprocess.PIPE, user=user)
        try:
            assert flood.stdout is not None
            assert flood.stdout.readline().strip() == b"flooding"
            await asyncio.sleep(2.0)  # let the flood fill every slot
            login = _saslauthd_login if kind == "saslauthd" else _dovecot_login
            ok, latencies, errors = 0, [], {}
            for _ in range(logins):
                t0 = time.perf_counter()
                try:
                    if await asyncio.wait_for(login(path), 5.0):
                        ok += 1
                        latencies.append(time.perf_counter() - t0)
                except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            flood.send_signal(signal.SIGTERM)
            reopened = int(flood.stdout.readline() or 0)
        finally:
            if flood.poll() is None:
                flood.kill()
            flood.wait()
            child.stop()
    latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * latencies[int(q * (len(latencies) - 1))], 1) if latencies else -1.0

    return {
        "scenario": "squat",
        "protocol": kind,
        "squatters": squatters,
        "squatter_user": user or "same as the real clients",
        "squat_connections_opened": reopened,
        "logins": logins,
        "ok": ok,
        "success_rate": round(ok / logins, 3),
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "max_ms": pct(1.0),
        "errors": errors,
    }


async def pipeline(requests: int, fail_share: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wf-") as tmp:
        child = Child("dovecot", Path(tmp))
        try:
            base_kib = child.hwm_kib()
            reader, writer = await _handshake(child.sock)
            lines, wrong = [], 0
            for rid in range(1, requests + 1):
                # failures spread evenly: floor(requests * fail_share) of them in all
                fails = int(rid * fail_share) != int((rid - 1) * fail_share)
                pw = "Wr0ng-Pa55" if fails else GOOD_PW
                wrong += fails
                lines.append(f"AUTH\t{rid}\tPLAIN\tservice=smtp\tresp={_plain(GOOD, pw)}\n")
            t0 = time.perf_counter()
            writer.write("".join(lines).encode())
            answered, ok, fail = 0, 0, 0
            with contextlib.suppress(TimeoutError, ConnectionError):
                while answered < requests:
                    line = await asyncio.wait_for(reader.readline(), 30)
                    if not line:
                        break
                    answered += 1
                    ok += line.startswith(b"OK\t")
                    fail += line.startswith(b"FAIL\t")
            elapsed = time.perf_counter() - t0
            peak_kib = child.hwm_kib()
            writer.close()
        finally:
            child.stop()
    return {
        "scenario": "pipeline",
        "requests": requests,
        "sent_failing": wrong,
        "answered": answered,
        "ok": ok,
        "fail": fail,
        "seconds": round(elapsed, 2),
        "server_peak_rss_growth_mib": round((peak_kib - base_kib) / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.CRITICAL)
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "_serve":
        asyncio.run(_serve(args[1], Path(args[2]), Path(args[3]), float(args[4])))
        return 0
    if args and args[0] == "_flood":
        asyncio.run(_flood(args[1], Path(args[2]), int(args[3])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sq = sub.add_parser("squat")
    sq.add_argument("--protocol", choices=["saslauthd", "dovecot", "both"], default="both")
    sq.add_argument("--squatters", type=int, default=600)
    sq.add_argument("--logins", type=int, default=100)
    sq.add_argument("--squatter-user", help="run the squatters as this user (default: same)")
    pl = sub.add_parser("pipeline")
    pl.add_argument("--requests", type=int, default=2000)
    pl.add_argument("--fail-share", type=float, default=0.3)
    opts = parser.parse_args(args)
    if opts.cmd == "squat":
        kinds = ["saslauthd", "dovecot"] if opts.protocol == "both" else [opts.protocol]
        for kind in kinds:
            result = squat(kind, opts.squatters, opts.logins, opts.squatter_user)
            print(json.dumps(asyncio.run(result)))
    else:
        print(json.dumps(asyncio.run(pipeline(opts.requests, opts.fail_share))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
