"""``idsvc serve --workers 2`` as real processes: one accept queue per socket shared by two
workers, a change refused by every worker within a second (CLI through the control socket, REST
through worker 0), one penalty brain, the embedded store written in one worker and read in the
other, a crashed worker restarted while the other keeps serving, and a graceful stop that answers
the request in flight."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from idsvc.auth.penalty import delay_for
from tests.integration.test_cli import PASSWORD, Cli, embedded_cli_fixture
from tests.integration.test_cli_serve import (
    Served,
    dovecot_handshake,
    only_worker,
    run_testsaslauthd,
    serving,
    sockdir,
    with_listeners,
    worker_pids,
)

__all__ = ["embedded_cli_fixture", "serving", "sockdir"]

AUDIT_LINE = r"\[w(\d+)\] idsvc\.audit: \{{\"action\":\"auth\",.*\"target\":\"{user}\""


def start_two_workers(cli: Cli, sockdir: Path, **auth: object) -> tuple[Served, int]:
    port = with_listeners(cli, sockdir)
    cli.config["serve"] = {"workers": 2}
    cli.config["logging"] = {"auth_log": "all"}
    cli.config["passwords"] = {"scheme": "SHA512-CRYPT", "sha_crypt_rounds": 1000}
    cli.config["auth"] = {"failure_delay": 0, "cache_ttl": 3600, **auth}
    served = Served(cli)
    served.wait_for(r"ready: 4 listener\(s\): control, saslauthd, dovecot-auth, api; 2 workers")
    return served, port


def attempt(served: Served, sockdir: Path, user: str, password: str) -> tuple[int, bool, float]:
    """One authentication over a new connection: (the worker that answered, OK?, seconds)."""
    started = time.monotonic()
    reply = run_testsaslauthd(sockdir / "mux", user, password)
    elapsed = time.monotonic() - started
    line = served.wait_for(AUDIT_LINE.format(user=re.escape(user)), timeout=10)
    match = re.search(r"\[w(\d+)\]", line)
    assert match is not None
    return int(match.group(1)), reply.startswith("0: OK"), elapsed


def on_each_worker(
    served: Served, sockdir: Path, user: str, password: str
) -> dict[int, list[bool]]:
    """Authenticate once on each worker; the verdicts by worker."""
    seen: dict[int, list[bool]] = {}
    for index in sorted(worker_pids(served)):
        with only_worker(served, index):
            worker, ok, _ = attempt(served, sockdir, user, password)
        assert worker == index, (worker, index)
        seen.setdefault(worker, []).append(ok)
    assert len(seen) == 2, seen
    return seen


def all_ok(verdicts: dict[int, list[bool]]) -> bool:
    return all(all(each) for each in verdicts.values())


def test_a_change_is_refused_by_every_worker_within_a_second(
    embedded_cli: Cli, sockdir: Path, serving: list[Served]
) -> None:
    cli = embedded_cli
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "dora@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    served, port = start_two_workers(cli, sockdir, penalty=False)
    serving.append(served)
    assert all_ok(on_each_worker(served, sockdir, "dora@example.org", PASSWORD))
    # both workers now hold dora's OK in their cache (cache_ttl one hour)

    new = "a brand new passphrase"
    cli.ok("user", "passwd", "dora@example.org", "--password-stdin", stdin=new + "\n")
    # the CLI returns once every worker confirmed: no attempt may pass from here on
    old = on_each_worker(served, sockdir, "dora@example.org", PASSWORD)
    assert not any(ok for verdicts in old.values() for ok in verdicts), old
    assert all_ok(on_each_worker(served, sockdir, "dora@example.org", new))

    # through the REST API (served by worker 0): the other worker drops its entry too
    token = Path(cli.config["api"]["bootstrap_token_file"]).read_text(encoding="utf-8").strip()
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ) as http:
        changed = time.monotonic()
        got = http.patch("/api/v1/users/dora@example.org", json={"enabled": False})
        assert got.status_code == 200, got.text
        time.sleep(max(0.0, changed + 1.0 - time.monotonic()))
        disabled = on_each_worker(served, sockdir, "dora@example.org", new)
        assert not any(ok for verdicts in disabled.values() for ok in verdicts), disabled

        # the embedded store: written by worker 0 (the API), read by worker 1
        created = http.post(
            "/api/v1/domains/example.org/users",
            json={"address": "erin@example.org", "password": PASSWORD},
        )
        assert created.status_code == 201, created.text
    fresh = on_each_worker(served, sockdir, "erin@example.org", PASSWORD)
    assert all(all(v) for v in fresh.values()), fresh
    assert served.stop() == 0
    assert "did not confirm" not in served.log
    assert "Traceback" not in served.log


def test_penalties_are_one_brain_across_workers(
    embedded_cli: Cli, sockdir: Path, serving: list[Served]
) -> None:
    """An attacker reconnecting until another worker answers meets the same escalation: the
    k-th failure overall waits what the k-th failure earns, whichever worker counts it."""
    cli = embedded_cli
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "bob@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    # capped at 1 s: from the 2nd failure on, every failure waits 1 s; with a brain per worker,
    # the first failure another worker counts would wait nothing
    served, _port = start_two_workers(cli, sockdir, penalty=True, penalty_max=1.0)
    serving.append(served)
    # the failures alternate between the workers: 0, 1, 0, 1 ...
    for k in range(1, 7):
        with only_worker(served, k % 2):
            worker, ok, elapsed = attempt(served, sockdir, "bob@example.org", "wrong guess")
        assert (worker, ok) == (k % 2, False)
        expected = delay_for(k, 1.0)
        assert expected - 0.1 <= elapsed <= expected + 3.0, (k, worker, elapsed)
    assert served.stop() == 0


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    return [int(p) for p in text.split()]


def test_a_crashed_worker_is_restarted_and_the_other_keeps_serving(
    embedded_cli: Cli, sockdir: Path, serving: list[Served]
) -> None:
    cli = embedded_cli
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "carl@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    served, _port = start_two_workers(cli, sockdir, penalty=False)
    serving.append(served)
    pids = children(served.proc.pid)
    assert len(pids) == 2
    victim = pids[1]
    os.kill(victim, signal.SIGKILL)
    served.wait_for(rf"worker 1 \(pid {victim}\) killed by signal 9; restarting it")
    for _ in range(5):  # the shared accept queue is still served meanwhile
        assert run_testsaslauthd(sockdir / "mux", "carl@example.org", PASSWORD).startswith("0: OK")
    served.wait_for(r"worker 1 \(pid \d+\) ready")
    after = children(served.proc.pid)
    assert len(after) == 2
    assert victim not in after
    assert all_ok(on_each_worker(served, sockdir, "carl@example.org", PASSWORD))
    assert served.stop() == 0


def test_sigterm_answers_the_request_in_flight_then_removes_the_sockets(
    embedded_cli: Cli, sockdir: Path, serving: list[Served]
) -> None:
    cli = embedded_cli
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "dana@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    with_listeners(cli, sockdir)
    cli.config["serve"] = {"workers": 2}
    cli.config["auth"] = {"failure_delay": 1.5, "penalty": False}
    served = Served(cli)
    serving.append(served)
    served.wait_for(r"ready: .*; 2 workers")
    client = subprocess.Popen(
        ["testsaslauthd", "-f", str(sockdir / "mux"), "-u", "dana@example.org", "-p", "wrong"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # the request is in flight: its worker sleeps off the failure delay
    assert served.stop() == 0
    out, _ = client.communicate(timeout=30)
    assert out.startswith("0: NO"), out
    assert not (sockdir / "mux").exists()
    assert not (sockdir / "auth-client").exists()
    assert not (sockdir / "control").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_uvloop(
    embedded_cli: Cli, sockdir: Path, serving: list[Served], workers: int
) -> None:
    cli = embedded_cli
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "fay@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    with_listeners(cli, sockdir)
    cli.config["serve"] = {"workers": workers, "loop": "uvloop"}
    cli.config["auth"] = {"failure_delay": 0}
    served = Served(cli)
    serving.append(served)
    served.wait_for("ready:")
    assert "event loop: uvloop" in served.log
    mux = sockdir / "mux"
    assert run_testsaslauthd(mux, "fay@example.org", PASSWORD).startswith("0: OK")
    assert run_testsaslauthd(mux, "fay@example.org", "wrong").startswith("0: NO")
    assert dovecot_handshake(sockdir / "auth-client").startswith("VERSION\t1\t")
    assert cli.ok("auth", "flush", "fay@example.org").startswith("flushed")
    assert served.stop() == 0
    assert "Traceback" not in served.log


# what systemd does for a .socket unit: the socket at fd 3, LISTEN_PID/LISTEN_FDS set for the
# exec'ed process (exec keeps the pid)
SYSTEMD_LIKE = (
    "import os, sys\n"
    "os.dup2(int(sys.argv[1]), 3)\n"
    "os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "os.environ['LISTEN_FDS'] = '1'\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_restart_under_socket_activation_loses_no_request(
    embedded_cli: Cli, sockdir: Path, serving: list[Served], workers: int
) -> None:
    """The socket outlives idsvc (systemd holds it): requests made while one ``idsvc serve``
    stops and the next starts wait in its queue and are all answered."""
    cli = embedded_cli
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "gil@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    with_listeners(cli, sockdir)
    cli.config["api"]["enabled"] = False
    cli.config["serve"] = {"workers": workers}
    cli.config["auth"] = {"failure_delay": 0}
    mux = sockdir / "mux"
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.bind(str(mux))
    held.listen(128)
    prefix = (sys.executable, "-c", SYSTEMD_LIKE, str(held.fileno()))

    def serve() -> Served:
        served = Served(cli, prefix=prefix, pass_fds=(held.fileno(),))
        serving.append(served)
        served.wait_for("ready:")
        assert f"using the socket passed by systemd for {mux}" in served.log
        return served

    replies: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set() and len(replies) < 5000:  # bounded; stopped after the restart
            replies.append(run_testsaslauthd(mux, "gil@example.org", PASSWORD))

    try:
        first = serve()
        thread = threading.Thread(target=client)
        thread.start()
        time.sleep(0.5)
        assert first.stop() == 0
        assert mux.exists()  # systemd's socket file: never unlinked by idsvc
        during = len(replies)
        second = serve()
        time.sleep(0.5)
        stop.set()
        thread.join(timeout=60)
        assert second.stop() == 0
    finally:
        stop.set()
        held.close()
    assert len(replies) > during  # requests went on across the restart
    assert replies
    assert all(reply.startswith("0: OK") for reply in replies), replies
