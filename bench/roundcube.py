"""Webmails as separate processes on loopback, for ``bench/web.py --compare``: ours
(``python -m mailsvc.webmail`` under uvicorn, with and without parking the IMAP conversation
between pages) and Debian's Roundcube 1.6 (PHP's built-in server, ``php -S``, one process,
OPcache on as under PHP-FPM: the CLI default is off), all pointed at the same IMAP server, plus a
logged-in HTTP client for each that times one view at a time and reads the server process's CPU
from ``/proc``.

The views timed (say exactly which requests):

* open inbox — ours ``GET /mail`` (the page with the newest 50); Roundcube
  ``GET /?_task=mail&_action=list&_mbox=INBOX&_page=1&_remote=1`` with ``X-Roundcube-Request``
  (the AJAX request whose JSON carries the 50 rendered list rows; the inbox page shell around it
  is not counted);
* open message — ours ``GET /read`` (headers, text, the frame) plus ``GET /body`` (the sanitised
  HTML the frame loads), timed together; Roundcube ``GET /?_task=mail&_action=show&_uid=…``
  (one page with the washed HTML inline).

What it does not do: TLS (both listen on plain loopback HTTP; the session cookies are sent by
hand since ours is ``Secure``). How it fails: a server that does not start within 20 s, or a
login that does not succeed, raises ``RuntimeError``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import process_cpu
from tests.fixtures.roundcube import ROUNDCUBE, roundcube_config

PHP = ("php", "-d", "opcache.enable_cli=1", "-d", "opcache.validate_timestamps=0")
ROOT = Path(__file__).resolve().parents[1]
TOKEN_FIELD = re.compile(r'name="_token" value="([^"]+)"')
REQUEST_TOKEN = re.compile(r'"request_token":"([^"]+)"')
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


@dataclass
class Server:
    """A webmail process and a client logged in to it."""

    name: str
    proc: subprocess.Popen[bytes]
    base: str
    cookies: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def request(self, method: str, path: str, **kw: object) -> httpx.Response:
        """One request with the session's cookies (kept by hand: ours are ``Secure``)."""
        headers = {**self.headers, **kw.pop("headers", {})}  # type: ignore[dict-item]
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        answer = self.client.request(method, self.base + path, headers=headers, **kw)  # type: ignore[arg-type]
        for line in answer.headers.get_list("set-cookie"):
            name, _, rest = line.partition("=")
            value = rest.split(";", 1)[0]
            if value in ("", "deleted") or "max-age=0" in line.lower():
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value
        return answer

    def timed(self, *paths: str) -> tuple[float, float]:
        """Wall seconds of ``paths`` one after the other, and the server's CPU seconds."""
        cpu = process_cpu(self.proc.pid)
        started = time.perf_counter()
        for path in paths:
            answer = self.request("GET", path)
            if answer.status_code != 200:
                raise RuntimeError(f"{self.name} {path}: {answer.status_code}")
        return time.perf_counter() - started, process_cpu(self.proc.pid) - cpu

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _launch(
    name: str, what: str, argv: list[str], env: dict[str, str], port: int,
    log_in: Callable[[Server], None],
) -> Server:  # fmt: skip
    """Start ``what`` listening on ``port`` and log its client in (``log_in`` raises
    ``RuntimeError`` when that fails); the process is stopped again on any failure."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(name, proc, f"http://127.0.0.1:{port}")
    try:
        wait_listening(port, proc, what)
        log_in(server)
    except BaseException:
        server.close()
        raise
    return server


def start_ours(imap_port: int, user: str, password: str, *, keep: float) -> Server:
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "MAILSVC_WEBMAIL_LISTEN": f"127.0.0.1:{port}",
        "MAILSVC_WEBMAIL_IMAP_HOST": "127.0.0.1",
        "MAILSVC_WEBMAIL_IMAP_PORT": str(imap_port),
        "MAILSVC_WEBMAIL_IMAP_TLS": "none",
        "MAILSVC_WEBMAIL_IMAP_KEEP": str(keep),
    }

    def log_in(server: Server) -> None:
        found = CSRF.search(server.request("GET", "/login").text)
        if found is None:
            raise RuntimeError("our login form has no CSRF token")
        answer = server.request(
            "POST",
            "/login",
            data={"address": user, "password": password, "csrf": found.group(1)},
            headers={"Origin": server.base, "Sec-Fetch-Site": "same-origin"},
        )
        if answer.status_code != 303:
            raise RuntimeError(f"our webmail login: {answer.status_code}")

    argv = [sys.executable, "-m", "mailsvc.webmail"]
    return _launch("ours", "the webmail", argv, env, port, log_in)


def start_roundcube(imap_port: int, work: Path, user: str, password: str) -> Server:
    conf = roundcube_config(
        work,
        {
            "imap_host": f"'127.0.0.1:{imap_port}'",
            "smtp_host": "'127.0.0.1:25'",
            "des_key": "'bench-only-24-byte-key!!'",
            "mail_pagesize": "50",
        },
    )
    port = free_port()

    def log_in(server: Server) -> None:
        found = TOKEN_FIELD.search(server.request("GET", "/").text)
        if found is None:
            raise RuntimeError("Roundcube's login form has no _token")
        server.request(
            "POST",
            "/?_task=login",
            data={
                "_token": found.group(1), "_task": "login", "_action": "login",
                "_timezone": "UTC", "_url": "", "_user": user, "_pass": password,
            },
        )  # fmt: skip
        inbox = server.request("GET", "/?_task=mail&_mbox=INBOX")
        token = REQUEST_TOKEN.search(inbox.text)
        if token is None:
            raise RuntimeError("Roundcube login failed (no request_token on the inbox page)")
        server.headers["X-Roundcube-Request"] = token.group(1)

    argv = [*PHP, "-S", f"127.0.0.1:{port}", "-t", str(ROUNDCUBE / "public_html")]
    env = {"ROUNDCUBE_CONFIG_DIR": str(conf), "PATH": "/usr/bin:/bin"}
    return _launch("roundcube", "php -S", argv, env, port, log_in)


def views(uid: int) -> dict[str, dict[str, tuple[str, ...]]]:
    """The requests of each view, per webmail (see the module docstring)."""
    return {
        "open inbox": {
            "ours": ("/mail",),
            "roundcube": ("/?_task=mail&_action=list&_mbox=INBOX&_page=1&_remote=1",),
        },
        "open message": {
            "ours": (f"/read?folder=INBOX&uid={uid}", f"/body?folder=INBOX&uid={uid}"),
            "roundcube": (f"/?_task=mail&_action=show&_uid={uid}&_mbox=INBOX",),
        },
    }


def check_views(ours: Server, roundcube: Server, uid: int) -> None:
    """Both answer each view with the content asked for (not an error page)."""
    inbox = ours.request("GET", "/mail").text
    if inbox.count('href="/read?') != 50:
        raise RuntimeError("our inbox page does not list 50 messages")
    listed = roundcube.request("GET", views(uid)["open inbox"]["roundcube"][0]).text
    if listed.count("add_message_row") != 50:
        raise RuntimeError(f"Roundcube's list does not carry 50 rows: {listed[:300]}")
    shown = roundcube.request("GET", views(uid)["open message"]["roundcube"][0]).text
    if "Paragraph 399" not in shown and "Paragraph 300" not in shown:
        raise RuntimeError("Roundcube's message page lacks the HTML body")
    body = ours.request("GET", f"/body?folder=INBOX&uid={uid}").text
    if "Paragraph 300" not in body:
        raise RuntimeError("our message frame lacks the HTML body")


def env_ok() -> str | None:
    """Why the comparison cannot run here, or None."""
    if shutil.which("php") is None:
        return "php-cli is not installed"
    if not (ROUNDCUBE / "public_html").is_dir():
        return "roundcube-core is not installed"
    if os.environ.get("ROUNDCUBE_CONFIG_DIR"):
        return "unset ROUNDCUBE_CONFIG_DIR"
    return None
