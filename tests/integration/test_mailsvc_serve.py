"""Starting mailsvc: ``idsvc serve`` with ``[mailsvc] enabled`` brings up the SMTP front end as
its child (the README's quick start: add a domain and a user with the CLI, send with swaks), stops
it on SIGTERM, and refuses a start it cannot honour; ``mailsvc`` itself refuses a relay-open or
TLS-less configuration with one clear message."""

from __future__ import annotations

import imaplib
import poplib
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.mailstack import (
    IDSVC,
    PASSWORD,
    REPO,
    MailStack,
    Process,
    short_workdir,
    swaks,
    toml,
)


def quickstart(workdir: Path) -> tuple[dict[str, str], Path]:
    stack = MailStack(workdir)
    config = stack.idsvc_config()
    config["mailsvc"] = {"enabled": True}
    path = workdir / "idsvc.toml"
    path.write_text(toml(config), encoding="utf-8")
    (workdir / "run").mkdir(exist_ok=True)
    env = {
        **stack.env(),
        "IDSVC_CONFIG": str(path),
        "MAILSVC_MX__LISTEN": "127.0.0.1:0",  # the real ports are in the log (no port races)
        "MAILSVC_SUBMISSION__LISTEN": "127.0.0.1:0",
        "MAILSVC_SUBMISSIONS__LISTEN": "127.0.0.1:0",
        "MAILSVC_POP3__LISTEN": "127.0.0.1:0",
        "MAILSVC_POP3S__LISTEN": "127.0.0.1:0",
        "MAILSVC_IMAP__LISTEN": "127.0.0.1:0",
        "MAILSVC_IMAPS__LISTEN": "127.0.0.1:0",
        "MAILSVC_TLS__SELF_SIGNED_DIR": str(workdir / "tls"),
        "MAILSVC_SMTP__HOSTNAME": "mx.example.org",
    }
    return env, stack.vmail


def idsvc_cli(env: dict[str, str], *args: str, stdin: str = "") -> str:
    result = subprocess.run(
        [str(IDSVC), *args], input=stdin, capture_output=True, text=True, env=env, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_idsvc_serve_runs_mailsvc_and_the_readme_quickstart_works() -> None:
    with short_workdir() as workdir:
        env, vmail = quickstart(workdir)
        served = Process([str(IDSVC), "serve"], env, "idsvc")
        try:
            line = served.wait_for(r"mailsvc.serve: mx: listening on 127\.0\.0\.1:\d+")
            mx = int(line.rpartition(":")[2])
            # the two processes log concurrently: both lines, in either order
            for pattern in (r"mailsvc.serve: ready: 7 listener",
                            r"idsvc.serve: mailsvc: listening on child process \d+"):  # fmt: skip
                if not re.search(pattern, served.log):
                    served.wait_for(pattern)
            # the README's three commands
            idsvc_cli(env, "domain", "add", "example.org")
            idsvc_cli(env, "user", "add", "alice@example.org", "--password-stdin",
                      stdin=PASSWORD + "\n")  # fmt: skip
            out = await swaks(mx, "--to", "alice@example.org", "--from", "me@remote.example")
            assert "250 2.0.0" in out, out
            delivered = list((vmail / "example.org" / "alice" / "Maildir" / "new").iterdir())
            assert len(delivered) == 1
            raw = delivered[0].read_bytes()
            # ... and Alice reads it over IMAP, flags it, then takes it over POP3
            ports = dict(re.findall(r"mailsvc.serve: (\w+): listening on 127\.0\.0\.1:(\d+)",
                                    served.log))  # fmt: skip
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            with imaplib.IMAP4_SSL("127.0.0.1", int(ports["imaps"]), ssl_context=context) as imap:
                imap.login("alice@example.org", PASSWORD)
                assert imap.select("INBOX") == ("OK", [b"1"])
                fetched = imap.fetch("1", "(BODY.PEEK[])")[1][0]
                assert isinstance(fetched, tuple)
                assert fetched[1] == raw
                assert imap.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK"
            pop = poplib.POP3("127.0.0.1", int(ports["pop3"]), timeout=30)
            pop.stls(context=context)
            pop.user("alice@example.org")
            pop.pass_(PASSWORD)
            assert b"\r\n".join(pop.retr(1)[1]) + b"\r\n" == raw
            pop.dele(1)
            pop.quit()
            assert not any((vmail / "example.org" / "alice" / "Maildir" / "cur").iterdir())
            assert served.stop() == 0
            assert not port_open(mx)  # the child went down with idsvc
        finally:
            served.stop()


async def test_idsvc_refuses_mailsvc_without_socketmap() -> None:
    with short_workdir() as workdir:
        env, _ = quickstart(workdir)
        config = MailStack(workdir).idsvc_config()
        config["socketmap.socket"]["enabled"] = False
        config["mailsvc"] = {"enabled": True}
        Path(env["IDSVC_CONFIG"]).write_text(toml(config), encoding="utf-8")
        served = Process([str(IDSVC), "serve"], env, "idsvc")
        try:
            code = served.wait_exit(timeout=30)
        finally:
            served.stop()
        assert code != 0
        assert "socketmap.socket.enabled" in served.log


def mailsvc_check(tmp: Path, text: str) -> subprocess.CompletedProcess[str]:
    config = tmp / "mailsvc.toml"
    config.write_text(text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "mailsvc", "--config", str(config), "check-config"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp)},
    )  # fmt: skip


def test_relay_open_configurations_are_refused(tmp_path: Path) -> None:
    for networks in ('["0.0.0.0/0"]', '["10.0.0.0/8"]', '["::/0"]', '["2001:db8::/32"]'):
        result = mailsvc_check(tmp_path, f"[smtp]\nrelay_networks = {networks}\n")
        assert result.returncode == 2, result
        assert "open relay" in result.stderr
        assert "Traceback" not in result.stderr
    ok = mailsvc_check(tmp_path, '[smtp]\nrelay_networks = ["192.0.2.0/24", "::1/128"]\n')
    assert ok.returncode == 0, ok.stderr


def test_submission_without_tls_is_refused(tmp_path: Path) -> None:
    result = mailsvc_check(tmp_path, "[tls]\nself_signed = false\n")
    assert result.returncode == 2
    assert "submission needs TLS" in result.stderr
    mx_only = (
        "[tls]\nself_signed = false\n[submission]\nenabled = false\n"
        "[submissions]\nenabled = false\n[pop3s]\nenabled = false\n[imaps]\nenabled = false\n"
    )
    assert mailsvc_check(tmp_path, mx_only).returncode == 0


def test_mailsvc_serve_fails_cleanly_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "m.toml"
        config.write_text(
            toml({
                "store": {"root": str(tmp_path / "vmail")},
                "tls": {"self_signed_dir": str(tmp_path / "tls")},
                "mx": {"listen": f"127.0.0.1:{port}"},
                "submission": {"enabled": False},
                "submissions": {"enabled": False},
                "pop3": {"enabled": False},
                "pop3s": {"enabled": False},
                "imap": {"enabled": False},
                "imaps": {"enabled": False},
            }),
            encoding="utf-8",
        )  # fmt: skip
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "mailsvc", "--config", str(config), "serve"],
            capture_output=True, text=True, timeout=60, check=False,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )  # fmt: skip
    assert result.returncode == 1
    assert "cannot start: mx: cannot listen on" in result.stderr
    assert time.monotonic() - started < 30


def test_readme_run_command_gives_a_valid_configuration(tmp_path: Path) -> None:
    """The environment of the README's mail quick-start command, taken from the README itself."""
    import shlex

    from idsvc.config import load_settings

    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("IDSVC_MAILSVC__ENABLED=")
    command = text[start : text.index("./scripts/serve", start)].replace("\\\n", " ")
    env = dict(word.split("=", 1) for word in shlex.split(command.replace("$HOME", str(tmp_path))))
    settings, _ = load_settings(None, env=env)
    assert settings.mailsvc.enabled
    assert settings.socketmap.socket.enabled
    assert settings.mail.vmail_root == tmp_path / "vmail"
