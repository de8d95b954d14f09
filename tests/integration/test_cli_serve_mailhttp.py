"""``idsvc serve`` with the mail HTTP listeners ([nginx_auth], [dovecot_policy], [dovecot_lua]):
each starts with its own socket and mode, answers curl sending exactly what nginx / Dovecot /
idsvc.lua send, and goes away cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_cli import PASSWORD, Cli, cli_fixture, embedded_cli_fixture
from tests.integration.test_cli_serve import Served, free_port, serving, sockdir

__all__ = ["cli_fixture", "embedded_cli_fixture", "serving", "sockdir"]


def curl(*args: str) -> tuple[str, dict[str, str], str]:
    """(status line, lower-cased headers, body) of one curl request (HTTP/1.0 like nginx)."""
    binary = shutil.which("curl")
    if binary is None:
        pytest.fail("curl is not installed")
    result = subprocess.run(
        [binary, "-sS", "--http1.0", "-i", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    head, _, body = result.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


def test_serve_runs_the_mail_http_listeners(
    embedded_cli: Cli, sockdir: Path, serving: list[Served]
) -> None:
    cli = embedded_cli
    if os.environ.get("PYTHONPATH"):  # run this tree's idsvc, not the installed one
        cli.extra_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", "alice@example.org", "--password-stdin", stdin=PASSWORD + "\n")
    policy_port = free_port()
    cli.config["saslauthd.socket"] = {"enabled": False, "path": str(sockdir / "mux")}
    cli.config["dovecot_auth.socket"] = {"enabled": False, "path": str(sockdir / "ac")}
    cli.config["control.socket"] = {"path": str(sockdir / "control")}
    cli.config["api"]["enabled"] = False
    cli.config["auth"] = {"failure_delay": 0.0}
    cli.config["nginx_auth"] = {
        "enabled": True,
        "listen": f"unix:{sockdir / 'nginx-auth'}",
        "mode": 0o600,
        "secret": "ngx",
        "imap_backend": "127.0.0.1:143",
    }
    cli.config["dovecot_policy"] = {"enabled": True, "listen": f"127.0.0.1:{policy_port}"}
    cli.config["dovecot_lua"] = {"enabled": True, "listen": f"unix:{sockdir / 'lua'}"}
    served = Served(cli)
    serving.append(served)
    served.wait_for(r"ready: 4 listener\(s\)")
    assert f"nginx-auth: listening on unix:{sockdir / 'nginx-auth'}" in served.log
    assert f"dovecot-policy: listening on http://127.0.0.1:{policy_port}" in served.log
    assert stat.S_IMODE(os.stat(sockdir / "nginx-auth").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sockdir / "lua").st_mode) == 0o660

    nginx = [
        "--unix-socket",
        str(sockdir / "nginx-auth"),
        "http://localhost/auth",
        "-H",
        "Auth-Method: plain",
        "-H",
        "Auth-User: alice%40example.org",
        "-H",
        "Auth-Protocol: imap",
        "-H",
        "Auth-Login-Attempt: 1",
        "-H",
        "Client-IP: 192.0.2.1",
        "-H",
        "Auth-SSL: on",
    ]
    status, headers, _ = curl(*nginx, "-H", f"Auth-Pass: {PASSWORD}", "-H", "X-Idsvc-Secret: ngx")
    assert status.startswith("HTTP/1.0 200")
    assert headers["auth-status"] == "OK"
    assert (headers["auth-server"], headers["auth-port"]) == ("127.0.0.1", "143")
    status, headers, _ = curl(*nginx, "-H", f"Auth-Pass: {PASSWORD}")  # no secret
    assert status.startswith("HTTP/1.0 403")
    assert "auth-status" not in headers
    status, headers, _ = curl(*nginx, "-H", "Auth-Pass: wrong", "-H", "X-Idsvc-Secret: ngx")
    assert headers["auth-status"] == "[AUTHENTICATIONFAILED] Authentication failed."

    lua = ["--unix-socket", str(sockdir / "lua"), "-H", "Content-Type: application/json"]
    body = json.dumps(
        {"user": "Alice@example.org", "password": PASSWORD, "service": "imap", "secured": True}
    )
    _, _, reply = curl(*lua, "--data-binary", body, "http://localhost/passdb")
    assert json.loads(reply) == {"result": "ok", "user": "alice@example.org"}
    _, _, reply = curl(*lua, "--data-binary", '{"user": "alice@example.org"}', "http://x/userdb")
    fields = json.loads(reply)["fields"]
    assert fields["home"] == "/var/vmail/example.org/alice"

    url = f"http://127.0.0.1:{policy_port}/policy?command=allow"
    status, _, reply = curl("--data-binary", '{"login": "alice@example.org"}', url)
    assert json.loads(reply) == {"status": 0, "msg": ""}

    assert served.stop() == 0
    assert "Traceback" not in served.log
    assert PASSWORD not in served.log
    assert not (sockdir / "nginx-auth").exists()
    assert not (sockdir / "lua").exists()
