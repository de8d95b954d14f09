"""``ApiServer`` on real sockets, driven by curl: TCP loopback, a UNIX socket and TLS; the
bootstrap token (file 0600 in a 0700 directory, never logged) and start-up errors."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from idsvc.api.server import ApiServer, parse_listen
from idsvc.config import Settings
from idsvc.errors import ConfigError
from tests.api.conftest import api_settings, build_runtime_over
from tests.conftest import IN_CI

CURL = shutil.which("curl")


def _need_curl() -> str:
    if CURL is None:
        if IN_CI:
            pytest.fail("curl is required under CI=true")
        pytest.skip("curl is not installed")
    return CURL


async def curl(*args: str) -> tuple[int, str]:
    """Run curl; returns (HTTP status, body)."""
    proc = await asyncio.create_subprocess_exec(
        _need_curl(),
        "-sS",
        "--max-time",
        "10",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    body, _, code = out.decode().rpartition("\n")
    return int(code), body


def _with(settings: Settings, **api: Any) -> Settings:
    return settings.model_copy(update={"api": settings.api.model_copy(update=api)})


async def test_tcp_bootstrap_token_and_restart(
    embedded_directory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _with(api_settings(tmp_path), listen="127.0.0.1:0")
    runtime = await build_runtime_over(settings, embedded_directory)
    server = ApiServer(settings, runtime)
    caplog.set_level(logging.DEBUG)
    try:
        await server.start()
        token_file = settings.api.bootstrap_token_file
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
        token = token_file.read_text().strip()
        assert token.startswith("idsvc_")
        assert token not in caplog.text
        assert str(token_file) in caplog.text
        assert server.url is not None
        assert server.url.startswith("http://127.0.0.1:")

        code, body = await curl(f"{server.url}/healthz")
        assert (code, json.loads(body)) == (200, {"status": "ok"})
        code, _ = await curl(f"{server.url}/api/v1/domains")
        assert code == 401
        code, body = await curl(
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"name": "curl.example"}',
            f"{server.url}/api/v1/domains",
        )
        assert code == 201, body
        code, body = await curl(f"{server.url}/metrics")  # loopback: public by default
        assert code == 200
        assert "idsvc_api_requests_total" in body
    finally:
        await server.close()

    token_file.unlink()
    again = ApiServer(settings, runtime)  # the store already holds a token: no new bootstrap
    try:
        await again.start()
        assert not token_file.exists()
    finally:
        await again.close()
        await runtime.authenticator.close()


async def test_unix_socket(embedded_directory: Any, tmp_path: Path) -> None:
    sock = tmp_path / "run" / "api.sock"
    sock.parent.mkdir()
    settings = _with(api_settings(tmp_path), listen=f"unix:{sock}")
    runtime = await build_runtime_over(settings, embedded_directory)
    server = ApiServer(settings, runtime)
    try:
        await server.start()
        assert server.url == f"unix:{sock}"
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660
        token = settings.api.bootstrap_token_file.read_text().strip()
        code, body = await curl(
            "--unix-socket",
            str(sock),
            "-H",
            f"Authorization: Bearer {token}",
            "http://localhost/api/v1/domains",
        )
        assert code == 200, body
        assert json.loads(body)["items"] == []
    finally:
        await server.close()
        await runtime.authenticator.close()
    assert not sock.exists()  # removed on close


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls(embedded_directory: Any, tmp_path: Path) -> None:
    if shutil.which("openssl") is None and not IN_CI:
        pytest.skip("openssl is not installed")
    cert, key = _self_signed(tmp_path)
    settings = _with(api_settings(tmp_path), listen="127.0.0.1:0", tls_cert=cert, tls_key=key)
    runtime = await build_runtime_over(settings, embedded_directory)
    server = ApiServer(settings, runtime)
    try:
        await server.start()
        assert server.url is not None
        assert server.url.startswith("https://")
        code, body = await curl("--cacert", str(cert), f"{server.url}/healthz")
        assert code == 200, body
        plain = server.url.replace("https://", "http://")
        proc = await asyncio.create_subprocess_exec(
            _need_curl(),
            "-sS",
            "--max-time",
            "5",
            f"{plain}/healthz",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        assert b'"ok"' not in out  # no cleartext HTTP on the TLS port
    finally:
        await server.close()
        await runtime.authenticator.close()


async def test_start_up_errors(embedded_directory: Any, tmp_path: Path) -> None:
    for bad in ("8080", "localhost", "unix:relative.sock", "host:99999", ":80"):
        with pytest.raises(ConfigError):
            parse_listen(bad)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    base = api_settings(tmp_path)
    runtime = await build_runtime_over(base, embedded_directory)
    try:
        only_cert = _with(base, listen="127.0.0.1:0", tls_cert=tmp_path / "missing.pem")
        with pytest.raises(ConfigError):
            await ApiServer(only_cert, runtime).start()
        first = ApiServer(_with(base, listen="127.0.0.1:0"), runtime)
        await first.start()
        try:
            assert first.url is not None
            port = first.url.rsplit(":", 1)[1]
            clash = ApiServer(_with(base, listen=f"127.0.0.1:{port}"), runtime)
            with pytest.raises(ConfigError):
                await clash.start()
            await clash.close()
        finally:
            await first.close()
    finally:
        await runtime.authenticator.close()
