"""TLS for the SMTP listeners: the configured certificate, or a self-signed one made on first
run for development (``openssl req``, RSA 2048, 825 days, CN = the SMTP hostname)."""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
from pathlib import Path

from mailsvc.config import ConfigError, TlsSettings

log = logging.getLogger("mailsvc.tls")


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """``cert.pem``/``key.pem`` under ``directory``, created (0600 key) when missing."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cn = "".join(c for c in hostname if c.isalnum() or c in ".-") or "localhost"
    tmp_key = directory / f".key.{os.getpid()}.pem"
    tmp_cert = directory / f".cert.{os.getpid()}.pem"
    try:
        argv = [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "825",
            "-subj", f"/CN={cn}", "-addext", f"subjectAltName=DNS:{cn}",
            "-keyout", str(tmp_key), "-out", str(tmp_cert),
        ]  # fmt: skip
        subprocess.run(
            argv,
            check=True,
            capture_output=True,
            timeout=60,
        )
        os.chmod(tmp_key, 0o600)
        os.replace(tmp_key, key)
        os.replace(tmp_cert, cert)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"cannot create a self-signed certificate: {exc}") from exc
    finally:
        for leftover in (tmp_key, tmp_cert):
            leftover.unlink(missing_ok=True)
    log.warning("created a self-signed certificate for %s in %s (development only)", cn, directory)
    return cert, key


def server_context(settings: TlsSettings, hostname: str) -> ssl.SSLContext | None:
    if settings.cert is not None and settings.key is not None:
        cert, key = settings.cert, settings.key
    elif settings.self_signed:
        cert, key = ensure_self_signed(settings.self_signed_dir, hostname)
    else:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert}: {exc}") from exc
    return context
