"""``idsvc serve`` starts the mail lookup listeners from their config sections (socketmap,
tcp_table, policy, Dovecot dict) next to the others; real clients answer through them; a CLI
change reaches their lookup cache at once (through the control socket), on both backends."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from idsvc.wire.framing import netstring
from tests.integration.lookup_support import postmap_config
from tests.integration.test_cli import PASSWORD, Cli, cli_fixture
from tests.integration.test_cli_serve import (
    Served,
    each_worker,
    free_port,
    serving,
    sockdir,
    worker_pids,
)

__all__ = ["cli_fixture", "serving", "sockdir"]  # fixtures


def socketmap_query(path: Path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(netstring(request))
        data = b""
        while not data.endswith(b",") and len(data) < 100_000:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def exchange(path: Path, data: bytes, end: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(data)
        out = b""
        while not out.endswith(end) and len(out) < 100_000:
            chunk = sock.recv(4096)
            if not chunk:
                break
            out += chunk
    return out


def postmap_q(config: Path, key: str, table: str) -> str:
    import subprocess

    result = subprocess.run(
        ["/usr/sbin/postmap", "-c", str(config), "-q", key, table],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.stdout.strip()


def dict_lookup(sockdir: Path, db: str) -> bytes:
    """Dovecot's dict lookup of alice in ``db`` (``userdb`` or ``passdb``)."""
    return exchange(
        sockdir / "dovecot_dict",
        f"H3\t2\t0\t\tauth\nLshared/{db}/alice@example.org\talice@example.org\n".encode(),
        b"\n",
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_runs_every_mail_listener(
    cli: Cli, sockdir: Path, serving: list[Served], workers: int
) -> None:
    """With two workers, every shared listener is asked on each worker (the other one paused),
    so each worker's own lookup cache is shown to drop a CLI change."""
    cli.ok("domain", "add", "example.org", "--alias-domain", "example.net")
    cli.ok("user", "add", "alice@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    cli.ok("alias", "add", "team@example.org", "alice@example.org")
    tcp_port = free_port()
    cli.config["api"]["enabled"] = False
    cli.config["saslauthd.socket"] = {"enabled": False, "path": str(sockdir / "mux")}
    cli.config["dovecot_auth.socket"] = {"enabled": False, "path": str(sockdir / "auth")}
    cli.config["control.socket"] = {"path": str(sockdir / "control")}
    cli.config["mail"] = {"vmail_root": "/srv/vmail", "cache_ttl": 3600}
    for name in ("socketmap", "policy", "dovecot_dict"):
        cli.config[f"{name}.socket"] = {"enabled": True, "path": str(sockdir / name), "mode": 0o666}
    cli.config["tcp_table"] = {"tcp": f"127.0.0.1:{tcp_port}", "map": "alias"}
    cli.config["serve"] = {"workers": workers}
    served = Served(cli)
    serving.append(served)
    served.wait_for(r"ready: 5 listener\(s\)")
    for name in ("socketmap", "policy", "dovecot-dict"):
        assert f"{name}: listening on {sockdir / name.replace('-', '_')}" in served.log
    assert f"tcp-table: listening on tcp {tcp_port}" in served.log or str(tcp_port) in served.log

    assert len(worker_pids(served)) == (0 if workers == 1 else workers)
    socketmap = f"socketmap:unix:{sockdir / 'socketmap'}"
    tcp = f"tcp:127.0.0.1:{tcp_port}"
    with postmap_config() as config:
        for only in each_worker(served):
            with only:
                assert postmap_q(config, "example.net", f"{socketmap}:domain") == "example.net"
                mailbox = postmap_q(config, "alice+x@example.net", f"{socketmap}:mailbox")
                assert mailbox == "example.org/alice/Maildir/"
                team = postmap_q(config, "team@example.org", f"{socketmap}:alias")
                assert team == "alice@example.org"
                assert postmap_q(config, "team@example.org", tcp) == "alice@example.org"
                # cached "none" (cache_ttl one hour)
                assert postmap_q(config, "sales@example.org", f"{socketmap}:alias") == ""
                assert postmap_q(config, "sales@example.org", tcp) == ""
                userdb = dict_lookup(sockdir, "userdb")
                assert userdb.startswith(b'O{"user":"alice@example.org","home":')
                assert dict_lookup(sockdir, "passdb").startswith(b'O{"user":"alice@example.org"')

        # a CLI change (another process) reaches every worker's lookup cache at once
        cli.ok("alias", "add", "sales@example.org", "alice@example.org")
        cli.ok("user", "disable", "alice@example.org")
        for only in each_worker(served):
            with only:
                sales = postmap_q(config, "sales@example.org", f"{socketmap}:alias")
                assert sales == "alice@example.org"
                assert postmap_q(config, "sales@example.org", tcp) == "alice@example.org"
                assert postmap_q(config, "alice@example.org", f"{socketmap}:mailbox") == ""
                assert dict_lookup(sockdir, "passdb") == b"N\n"  # disabled

    policy = exchange(
        sockdir / "policy",
        b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=x@external.test\n"
        b"recipient=alice@example.org\ninstance=1.2.3\n\n",
        b"\n\n",
    )
    assert policy == b"action=550 5.2.1 Recipient mailbox is disabled\n\n"
    assert served.stop() == 0
    assert "Traceback" not in served.log
    for name in ("socketmap", "policy", "dovecot_dict"):
        assert not (sockdir / name).exists()
