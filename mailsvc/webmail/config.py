"""Webmail settings (environment ``MAILSVC_WEBMAIL_*`` or the constructor; docs/webmail.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

Tls = Literal["none", "starttls", "tls"]


@dataclass(frozen=True)
class WebmailSettings:
    imap_host: str = "127.0.0.1"
    imap_port: int = 143
    imap_tls: Literal["none", "tls"] = "none"  # implicit TLS (993) or none (loopback only)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 587
    smtp_tls: Tls = "starttls"
    ca_file: str | None = None  # CA bundle for the servers' certificates (default: system)
    tls_check_hostname: bool = True  # off only for a server reached by a name not in its cert
    # seconds a page's logged-in IMAP conversation waits for the session's next page (0: one
    # conversation per page; mailsvc.webmail.park)
    imap_keep: float = 30.0
    session_idle: float = 900.0
    session_absolute: float = 28800.0
    max_sessions: int = 2000
    page_size: int = 50
    max_upload: int = 10 * 1024 * 1024  # bytes of attachments per message
    mail_domain: str = "localhost"  # right-hand side of generated Message-IDs

    @classmethod
    def from_env(cls) -> WebmailSettings:
        env = os.environ
        pre = "MAILSVC_WEBMAIL_"

        def tls(name: str, default: Tls) -> Tls:
            value = env.get(pre + name, default)
            if value not in ("none", "starttls", "tls"):
                raise ValueError(f"{pre}{name}: none, starttls or tls")
            return value  # type: ignore[return-value]

        return cls(
            imap_host=env.get(pre + "IMAP_HOST", cls.imap_host),
            imap_port=int(env.get(pre + "IMAP_PORT", cls.imap_port)),
            imap_tls="tls" if tls("IMAP_TLS", cls.imap_tls) == "tls" else "none",
            smtp_host=env.get(pre + "SMTP_HOST", cls.smtp_host),
            smtp_port=int(env.get(pre + "SMTP_PORT", cls.smtp_port)),
            smtp_tls=tls("SMTP_TLS", cls.smtp_tls),
            ca_file=env.get(pre + "CA_FILE") or None,
            mail_domain=env.get(pre + "MAIL_DOMAIN", cls.mail_domain),
            imap_keep=float(env.get(pre + "IMAP_KEEP", cls.imap_keep)),
        )
