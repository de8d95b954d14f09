"""mailsvc settings: its own TOML file (``mailsvc.toml``) plus ``MAILSVC_*`` environment overrides
(``MAILSVC_SMTP__HOSTNAME=mx.example.org`` sets ``[smtp] hostname``), validated once at start.

mailsvc shares nothing with idsvc but the addresses of idsvc's public sockets: the defaults are
idsvc's own default socket paths (``/run/idsvc`` as root, else ``$XDG_RUNTIME_DIR/idsvc`` or
``/tmp/idsvc-<uid>``), so both come up together without configuration.

Refused at start (:class:`ConfigError`): a relay-open configuration (``relay_networks`` wider than
a /16 for IPv4 or a /48 for IPv6, or containing a catch-all network), a submission listener
without TLS, an invalid listen address or target.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mailsvc.clients.target import Target

MIN_V4_PREFIX = 16
MIN_V6_PREFIX = 48


class ConfigError(Exception):
    pass


def default_runtime_dir() -> Path:
    """Where idsvc puts its sockets by default (the same rule idsvc uses)."""
    if os.getuid() == 0:
        return Path("/run/idsvc")
    base = os.environ.get("XDG_RUNTIME_DIR")
    return Path(base) / "idsvc" if base else Path(f"/tmp/idsvc-{os.getuid()}")  # noqa: S108


def default_state_dir() -> Path:
    if os.getuid() == 0:
        return Path("/var/lib/mailsvc")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mailsvc"


def _target(value: str) -> str:
    Target.parse(value)  # ValueError explains
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentitySettings(_Section):
    """Where idsvc answers: Dovecot auth-client, socketmap and (optional) policy."""

    auth: str = Field(default_factory=lambda: f"unix:{default_runtime_dir() / 'auth-client'}")
    socketmap: str = Field(default_factory=lambda: f"unix:{default_runtime_dir() / 'socketmap'}")
    policy: str | None = None  # e.g. unix:/run/idsvc/policy; None: no policy checks
    timeout: float = Field(10.0, gt=0, le=120)  # socketmap/policy reply timeout
    auth_timeout: float = Field(30.0, gt=0, le=120)  # idsvc delays failures by ~2 s
    pool_size: int = Field(8, ge=1, le=256)
    # seconds a socketmap answer (found or not) is reused; changes reach mailsvc this much later
    cache_ttl: float = Field(1.0, ge=0, le=300)
    cache_size: int = Field(10_000, ge=0, le=1_000_000)  # answers kept at most

    _check = field_validator("auth", "socketmap")(_target)

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str | None) -> str | None:
        return None if not value else _target(value)


class StoreSettings(_Section):
    root: Path = Field(default_factory=lambda: default_state_dir() / "vmail")
    fsync: bool = True  # only benchmarks of the non-durable ceiling turn this off
    workers: int = Field(8, ge=1, le=128)  # threads doing file-system work


class ListenerSettings(_Section):
    enabled: bool = True
    listen: str
    proxy_trusted: tuple[str, ...] = ()  # PROXY protocol required, from these networks only

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"listen: expected host:port, got {value!r}")
        return value

    @field_validator("proxy_trusted")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class MxSettings(ListenerSettings):
    listen: str = "127.0.0.1:2525"


class SubmissionSettings(ListenerSettings):
    listen: str = "127.0.0.1:5870"  # 587 in production (STARTTLS)


class SubmissionsSettings(ListenerSettings):
    listen: str = "127.0.0.1:4650"  # 465 in production (implicit TLS)


class UpstreamSettings(_Section):
    """Proxy mode of one POP3/IMAP listener (``[imap.upstream]`` …): after idsvc accepts a login,
    the connection is handed to this server, logged in there with a master user."""

    address: str  # host:port of the upstream IMAP/POP3 server
    tls: Literal["none", "starttls", "implicit"] = "starttls"
    tls_verify: bool = True
    tls_ca_file: Path | None = None  # None: the system's CA store
    tls_server_name: str | None = None  # SNI and the name verified; default: the address's host
    login: Literal["master_separator", "sasl_plain"] = "master_separator"
    master_user: str
    master_password_file: Path  # mode 0600 or stricter, read once at start
    master_separator: str = Field("*", min_length=1, max_length=4)  # auth_master_user_separator
    timeout: float = Field(30.0, gt=0, le=300)  # connect + TLS + login upstream
    forward_client_ip: bool = False  # IMAP ID x-originating-ip / POP3 XCLIENT (trusted upstream)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"upstream address: expected host:port, got {value!r}")
        return value

    @field_validator("master_user", "master_separator")
    @classmethod
    def _token(cls, value: str) -> str:
        if not value or any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("must be non-empty, printable and without spaces")
        return value

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def server_name(self) -> str:
        return self.tls_server_name or self.host


class MailListenerSettings(ListenerSettings):
    upstream: UpstreamSettings | None = None  # proxy mode; None: serve the local Maildir store


class Pop3Settings(MailListenerSettings):
    listen: str = "127.0.0.1:1100"  # 110 in production (STLS)


class Pop3sSettings(MailListenerSettings):
    listen: str = "127.0.0.1:9950"  # 995 in production (implicit TLS)


class ImapSettings(MailListenerSettings):
    listen: str = "127.0.0.1:1430"  # 143 in production (STARTTLS)


class ImapsSettings(MailListenerSettings):
    listen: str = "127.0.0.1:9930"  # 993 in production (implicit TLS)


class AccessSettings(_Section):
    """What the POP3 and IMAP listeners share."""

    allow_plaintext: bool = False  # LOGIN/USER/AUTH PLAIN before STARTTLS/STLS
    max_connections: int = Field(512, ge=1)
    max_connections_per_ip: int = Field(20, ge=1)  # per client IP (each listener)
    max_user_ip_connections: int = Field(10, ge=1)  # logged-in sessions per user and client IP
    pop3_timeout: float = Field(600.0, ge=60, le=3600)  # RFC 1939: at least 10 minutes
    imap_timeout: float = Field(1800.0, ge=60, le=7200)  # RFC 3501: autologout >= 30 min
    imap_preauth_timeout: float = Field(60.0, gt=0, le=600)
    imap_max_line: int = Field(65536, ge=8192, le=1 << 20)  # after login (8 KiB before)
    imap_max_literal: int = Field(52_428_800, ge=65536)  # APPEND size, after login
    imap_max_bad_commands: int = Field(20, ge=3, le=1000)  # after login


class TlsSettings(_Section):
    cert: Path | None = None
    key: Path | None = None
    self_signed: bool = True  # generate one under the state dir when cert/key are not set
    self_signed_dir: Path = Field(default_factory=lambda: default_state_dir() / "tls")

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls: set both cert and key, or neither")
        return self


class SmarthostSettings(_Section):
    address: str | None = None  # host:port of the MTA that queues outbound mail
    starttls: bool = False
    timeout: float = Field(60.0, gt=0, le=600)


class SmtpSettings(_Section):
    hostname: str = Field(default_factory=lambda: os.uname().nodename)
    max_message_size: int = Field(26_214_400, ge=1024)  # SIZE, enforced while reading DATA
    max_recipients: int = Field(100, ge=1, le=10000)
    max_connections: int = Field(256, ge=1)
    max_connections_per_ip: int = Field(20, ge=1)
    timeout: float = Field(300.0, gt=0, le=3600)  # per command (RFC 5321 §4.5.3.2)
    max_bad_commands: int = Field(20, ge=1, le=1000)  # AUTH attempts, RSET … per session
    relay_networks: tuple[str, ...] = ()  # clients that may relay without AUTH (like mynetworks)
    alias_depth: int = Field(8, ge=1, le=32)
    alias_fanout: int = Field(100, ge=1, le=10000)  # local copies per recipient, at most

    @field_validator("relay_networks")
    @classmethod
    def _relay(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            net = ipaddress.ip_network(text, strict=False)
            minimum = MIN_V4_PREFIX if net.version == 4 else MIN_V6_PREFIX
            if net.prefixlen < minimum:
                raise ValueError(
                    f"relay_networks: {text} would make an open relay "
                    f"(narrower than /{minimum} required)"
                )
        return value


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ServeSettings(_Section):
    # the event loop: auto = uvloop when it is installed (it is a dependency), else asyncio's
    loop: Literal["auto", "uvloop", "asyncio"] = "auto"


class Settings(_Section):
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    mx: MxSettings = Field(default_factory=MxSettings)
    submission: SubmissionSettings = Field(default_factory=SubmissionSettings)
    submissions: SubmissionsSettings = Field(default_factory=SubmissionsSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    pop3: Pop3Settings = Field(default_factory=Pop3Settings)
    pop3s: Pop3sSettings = Field(default_factory=Pop3sSettings)
    imap: ImapSettings = Field(default_factory=ImapSettings)
    imaps: ImapsSettings = Field(default_factory=ImapsSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    smarthost: SmarthostSettings = Field(default_factory=SmarthostSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)

    @model_validator(mode="after")
    def _tls_for_submission(self) -> Settings:
        tls = self.tls.cert is not None or self.tls.self_signed
        if (self.submission.enabled or self.submissions.enabled) and not tls:
            raise ValueError("submission needs TLS: set tls.cert/tls.key or tls.self_signed")
        if (self.pop3s.enabled or self.imaps.enabled) and not tls:
            raise ValueError("pop3s/imaps need TLS: set tls.cert/tls.key or tls.self_signed")
        return self


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, raw in env.items():
        if not name.startswith("MAILSVC_") or "__" not in name:
            continue
        path = name[len("MAILSVC_") :].lower().split("__")
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = raw


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``path`` (TOML; optional) and the environment; :class:`ConfigError`."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    _apply_env(data, os.environ if env is None else env)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
