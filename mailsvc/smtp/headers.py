"""Trace headers mailsvc adds: ``Return-Path:`` (final delivery) and ``Received:`` (RFC 5321 §4.4,
protocol names from RFC 3848). Pure."""

from __future__ import annotations

import email.utils
import re

_UNSAFE = re.compile(r"[^\x21-\x7e ]|[()\\]")


def _clean(text: str, limit: int = 120) -> str:
    """Client-supplied text made safe for a header comment (no CR/LF, no parentheses)."""
    return _UNSAFE.sub("?", text)[:limit] or "unknown"


def protocol(esmtp: bool, tls: bool, authenticated: bool) -> str:
    base = "ESMTP" if esmtp else "SMTP"
    return base + ("S" if tls else "") + ("A" if authenticated and esmtp else "")


def received(
    *,
    helo: str | None,
    client_ip: str,
    by: str,
    proto: str,
    queue_id: str,
    login: str | None,
    recipient: str | None,
    when: float | None = None,
    tls: str | None = None,
) -> bytes:
    lines = [f"Received: from {_clean(helo or 'unknown')} ([{_clean(client_ip, 64)}])"]
    lines.append(f"\tby {_clean(by)} (mailsvc) with {proto} id {queue_id}")
    if tls:
        lines.append(f"\t({_clean(tls)})")
    if login:
        lines.append(f"\t(authenticated sender: {_clean(login, 256)})")
    date = email.utils.formatdate(when, localtime=False)
    if recipient:
        lines.append(f"\tfor <{_clean(recipient, 256)}>; {date}")
    else:
        lines[-1] += f"; {date}"
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def return_path(sender: str) -> bytes:
    return f"Return-Path: <{_clean(sender, 256) if sender else ''}>\r\n".encode("ascii")


def has_bare_cr_or_lf(data: bytes) -> bool:
    """True when ``data`` holds a CR not followed by LF or an LF not preceded by CR."""
    return b"\r" in data.replace(b"\r\n", b"") or b"\n" in data.replace(b"\r\n", b"")
