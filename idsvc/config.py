"""Typed settings: one TOML file plus ``IDSVC_*`` environment overrides, validated once at start-up.

Settings are immutable and passed down explicitly; no module keeps a configuration singleton.

Environment overrides use ``__`` between nested keys, e.g. ``IDSVC_DIRECTORY__BACKEND=ldap`` or
``IDSVC_DIRECTORY__LDAP__URIS='["ldap://a","ldap://b"]'`` (values are parsed as JSON when they
parse, else taken as strings). ``IDSVC_CONFIG`` names the TOML file (default
``/etc/idsvc/idsvc.toml`` when it exists). With no file and no environment the embedded store
is used, so ``idsvc`` works with no configuration at all.

Secrets are ``SecretStr`` (their repr is ``**********``); each secret can also come from a file
(``*_file``), which is how containers and systemd credentials hand them over.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from idsvc.errors import ConfigError

DEFAULT_CONFIG_FILE = Path("/etc/idsvc/idsvc.toml")
ENV_PREFIX = "IDSVC_"
# IDSVC_ variables that are not settings: the file to read, the compiled hot path switch
NOT_SETTINGS = frozenset({"IDSVC_CONFIG", "IDSVC_NATIVE"})


def _is_root() -> bool:
    return os.geteuid() == 0


def default_state_dir() -> Path:
    """``/var/lib/idsvc`` for root, else ``$XDG_DATA_HOME/idsvc`` (``~/.local/share/idsvc``)."""
    if _is_root():
        return Path("/var/lib/idsvc")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "idsvc"


def default_config_dir() -> Path:
    """``/etc/idsvc`` for root, else ``$XDG_CONFIG_HOME/idsvc`` (``~/.config/idsvc``)."""
    if _is_root():
        return DEFAULT_CONFIG_FILE.parent
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "idsvc"


def default_runtime_dir() -> Path:
    """``/run/idsvc`` for root, else ``$XDG_RUNTIME_DIR/idsvc`` (or ``/tmp/idsvc-<uid>``)."""
    if _is_root():
        return Path("/run/idsvc")
    base = os.environ.get("XDG_RUNTIME_DIR")
    return Path(base) / "idsvc" if base else Path(f"/tmp/idsvc-{os.getuid()}")  # noqa: S108


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret_from(value: SecretStr | None, path: Path | None, what: str) -> SecretStr | None:
    if value is not None and path is not None:
        raise ValueError(f"give {what} or {what}_file, not both")
    if path is None:
        return value
    try:
        return SecretStr(path.read_text(encoding="utf-8").rstrip("\r\n"))
    except OSError as exc:
        raise ValueError(f"cannot read {what}_file {path}: {exc.strerror}") from exc


class EmbeddedSettings(_Section):
    path: Path = Field(default_factory=lambda: default_state_dir() / "idsvc.db")
    busy_timeout: float = Field(5.0, gt=0, le=60)  # seconds to wait on a locked database
    workers: int = Field(4, ge=1, le=64)  # bounded executor for sqlite calls


class LdapSettings(_Section):
    uris: tuple[str, ...] = ("ldap://127.0.0.1:389",)
    base_dn: str = "dc=example,dc=org"
    # read-only service identity used for lookups and authentication
    bind_dn: str = ""
    bind_password: SecretStr | None = None
    bind_password_file: Path | None = None
    # writer identity used only by provisioning
    writer_dn: str = ""
    writer_password: SecretStr | None = None
    writer_password_file: Path | None = None
    starttls: bool = False
    ca_file: Path | None = None
    verify_tls: bool = True
    connect_timeout: float = Field(5.0, gt=0, le=60)
    timeout: float = Field(10.0, gt=0, le=120)
    pool_size: int = Field(8, ge=1, le=256)
    max_pending: int = Field(1024, ge=1)  # requests queued for a connection before TEMPFAIL
    retry_after: float = Field(2.0, ge=0, le=300)  # how long a failed server is skipped
    auth_method: Literal["search", "bind"] = "search"
    page_size: int = Field(500, ge=1, le=1000)
    # corporate directories (read-only; docs/corporate-ldap.md): "idsvc" is our own schema
    profile: Literal["idsvc", "ad", "inetorgperson", "postfix-book", "iredmail"] = "idsvc"
    mail_domains: tuple[str, ...] = ()  # the domains a read-only profile hosts
    required_group: str | None = None  # DN: only its members have mail
    mapping: dict[str, str | int | bool] = Field(default_factory=dict)  # profile overrides
    # read-only profiles: follow the directory's changes (syncrepl / AD change notification)
    change_feed: Literal["auto", "off"] = "auto"

    @model_validator(mode="after")
    def _secrets(self) -> LdapSettings:
        bind = _secret_from(self.bind_password, self.bind_password_file, "bind_password")
        writer = _secret_from(self.writer_password, self.writer_password_file, "writer_password")
        object.__setattr__(self, "bind_password", bind)
        object.__setattr__(self, "writer_password", writer)
        object.__setattr__(self, "bind_password_file", None)
        object.__setattr__(self, "writer_password_file", None)
        for uri in self.uris:
            if not uri.startswith(("ldap://", "ldaps://", "ldapi://")):
                raise ValueError(f"unsupported LDAP URI scheme: {uri!r}")
        if not self.uris:
            raise ValueError("at least one LDAP URI is required")
        if not self.base_dn.strip():
            raise ValueError("base_dn must not be empty")
        # a DN without its password would silently fall back to an anonymous bind
        if self.bind_dn and bind is None:
            raise ValueError("bind_dn is set but bind_password / bind_password_file is not")
        if self.writer_dn and writer is None:
            raise ValueError("writer_dn is set but writer_password / writer_password_file is not")
        if self.starttls and any(uri.startswith("ldaps://") for uri in self.uris):
            raise ValueError("starttls cannot be combined with ldaps:// URIs (already TLS)")
        if self.profile == "idsvc":
            if self.mapping or self.mail_domains or self.required_group:
                raise ValueError(
                    "mapping, mail_domains and required_group apply to read-only profiles only"
                )
        else:
            if not self.mail_domains:
                raise ValueError(f"profile {self.profile!r} needs mail_domains")
            if self.writer_dn:
                raise ValueError(f"profile {self.profile!r} is read-only: remove writer_dn")
        return self


class DirectorySettings(_Section):
    backend: Literal["embedded", "ldap"] = "embedded"
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
    ldap: LdapSettings = Field(default_factory=LdapSettings)

    def describe(self) -> str:
        """The configured backend for logs and diagnostics: ``ldap URI…`` or ``embedded PATH``."""
        if self.backend == "ldap":
            return "ldap " + " ".join(self.ldap.uris)
        return f"embedded {self.embedded.path}"


DOMAIN_ADMIN_IMPORT_SCHEMES: tuple[str, ...] = (
    *("ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT"),
    *("PASSLIB-PBKDF2-SHA256", "PASSLIB-PBKDF2-SHA512", "PASSLIB-BCRYPT-SHA256"),
)


class PasswordSettings(_Section):
    scheme: str = "ARGON2ID"  # for new hashes; Dovecot names (ARGON2ID, BLF-CRYPT, SSHA512 …)
    bcrypt_cost: int = Field(12, ge=4, le=31)
    # Argon2 defaults = Dovecot's ARGON2ID; p must stay 1 for Dovecot/libsodium to verify our hashes
    argon2_time_cost: int = Field(3, ge=1, le=64)
    argon2_memory_kib: int = Field(65536, ge=1024, le=1048576)
    argon2_parallelism: int = Field(1, ge=1, le=16)
    sha_crypt_rounds: int = Field(5000, ge=1000, le=1_000_000)  # SHA256/SHA512-CRYPT
    # Policy for passwords set through provisioning (API, SCIM, CLI): idsvc.password_policy
    min_length: int = Field(12, ge=8, le=1024)  # Unicode code points (NIST SP 800-63B: >= 8)
    max_length: int = Field(1024, ge=64, le=4096)  # code points; UTF-8 bytes also <= auth's max
    blocklist: bool = True  # refuse common passwords (shipped list, case-insensitive)
    blocklist_file: Path | None = None  # one password per line (plain or .gz) instead
    # Hash imports: schemes (canonical names, see docs/passwords.md) each role may import.
    # Unsalted and cleartext schemes cannot be listed: only allow_weak_imports lets a global
    # admin import them (a migration switch; a {PLAIN} import is hashed, never stored as is).
    import_schemes_admin: tuple[str, ...] = (
        *DOMAIN_ADMIN_IMPORT_SCHEMES,
        *("PBKDF2", "SCRAM-SHA-1", "SCRAM-SHA-256", "PASSLIB-PBKDF2-SHA1"),
        *("MD5-CRYPT", "SMD5", "SSHA", "SSHA256", "SSHA512"),
    )
    import_schemes_domain_admin: tuple[str, ...] = DOMAIN_ADMIN_IMPORT_SCHEMES
    allow_weak_imports: bool = False

    @field_validator("import_schemes_admin", "import_schemes_domain_admin")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name.upper() for name in value))

    @model_validator(mode="after")
    def _lengths(self) -> PasswordSettings:
        if self.min_length > self.max_length:
            raise ValueError("passwords.min_length is greater than passwords.max_length")
        return self


class AuthSettings(_Section):
    default_domain: str | None = None  # appended to logins without '@'
    realm_join: bool = True  # saslauthd: join login@realm when the login has no '@'
    max_login_length: int = Field(256, ge=1, le=1024)
    max_password_length: int = Field(1024, ge=1, le=8192)
    failure_delay: float = Field(2.0, ge=0, le=30)  # seconds, applied to every failure alike
    penalty: bool = True  # per-IP and per-account escalating delays
    penalty_max: float = Field(15.0, ge=0, le=300)
    penalty_window: float = Field(900.0, gt=0)  # failures older than this are forgotten
    cache: bool = True
    cache_ttl: float = Field(300.0, ge=0)  # positive results
    cache_negative_ttl: float = Field(60.0, ge=0)  # mismatch / unknown user
    cache_size: int = Field(100_000, ge=0)
    rehash_on_login: bool | None = None  # None: on for the embedded store, off for LDAP
    master_users: tuple[str, ...] = ()  # may log in as another user (authzid)
    # PLAIN/LOGIN without TLS from a non-loopback peer (Dovecot: disable_plaintext_auth = yes)
    allow_cleartext_remote: bool = False
    max_pending: int = Field(4096, ge=1)  # concurrent authentications before TEMPFAIL

    @field_validator("default_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        from idsvc.model import canonical_domain

        return None if value is None else canonical_domain(value)  # InvalidDomain: ValueError

    @field_validator("master_users")
    @classmethod
    def _masters(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from idsvc.model import canonical_address

        return tuple(canonical_address(user) for user in value)


class SocketSettings(_Section):
    enabled: bool = True
    path: Path
    mode: int = 0o660
    owner: str | None = None
    group: str | None = None


def _sock(name: str) -> Any:
    return Field(default_factory=lambda: SocketSettings(path=default_runtime_dir() / name))


class _ListenerLimits(_Section):
    """Admission limits every listener shares (idsvc.wire.listen.ConnectionSlots): when
    ``max_connections`` are open, a newcomer evicts the oldest connection without a complete
    request / handshake, else the least recently active idle one (never one with a request in
    flight); no single peer (UID / IP) holds more than ``max_connections -
    reserved_connections``."""

    max_connections: int = Field(512, ge=1)
    reserved_connections: int = Field(32, ge=0)

    @model_validator(mode="after")
    def _reserve_below_limit(self) -> _ListenerLimits:
        if self.reserved_connections >= self.max_connections:
            raise ValueError("reserved_connections must be below max_connections")
        return self


class SaslauthdSettings(_ListenerLimits):
    socket: SocketSettings = _sock("mux")
    read_timeout: float = Field(5.0, gt=0)
    fifth_field_grace: float = Field(0.05, ge=0, le=1)


class DovecotAuthSettings(_ListenerLimits):
    socket: SocketSettings = _sock("auth-client")
    tcp: str | None = None  # "127.0.0.1:12345" to listen on TCP as well
    mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    idle_timeout: float = Field(600.0, gt=0)
    handshake_timeout: float = Field(5.0, gt=0)  # VERSION + CPID must arrive within it
    # in flight per connection; beyond it the connection is not read from until one completes
    max_requests_per_connection: int = Field(256, ge=1)


class MailsvcHookSettings(_Section):
    """``idsvc serve`` also starts the mailsvc SMTP front end (idsvc/mailsvc_child.py)."""

    enabled: bool = False
    config: Path | None = None  # mailsvc.toml; None: idsvc's sockets and vmail_root are passed


class MailSettings(_Section):
    """Where mail lives and how addresses resolve (``idsvc.lookups``: Postfix maps, dict)."""

    vmail_root: Path = Path("/var/vmail")  # homes are <vmail_root>/<domain>/<local>
    vmail_user: str | None = None  # EXAMPLE "vmail": uid/gid are then read from the system
    vmail_uid: int = Field(5000, ge=1)  # the one owner of every mailbox (never root)
    vmail_gid: int = Field(5000, ge=1)
    home: str = "{root}/{domain}/{local}"  # {root} {domain} {local} {address}
    mail_location: str = "maildir:~/Maildir"  # Dovecot ``mail`` for every user
    quota_rule: str = "*:bytes={bytes}"  # Dovecot quota_rule; only for accounts with a quota
    recipient_delimiter: str = "+"  # as Postfix recipient_delimiter; "" turns it off
    cache_ttl: float = Field(30.0, ge=0, le=3600)  # seconds a lookup result is reused
    cache_size: int = Field(10_000, ge=0)  # per kind of record (domain, account, alias)
    timeout: float = Field(10.0, gt=0, le=120)  # one lookup; longer is a temporary failure
    max_alias_depth: int = Field(8, ge=1, le=100)  # alias → alias → … nesting
    max_alias_results: int = Field(1000, ge=1, le=100_000)  # addresses one alias expands to

    @field_validator("recipient_delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        if len(value) > 8 or any(ch in value for ch in "@. \t\r\n\x00"):
            raise ValueError("recipient_delimiter: at most 8 characters, no '@', '.' or space")
        return value

    @field_validator("home")
    @classmethod
    def _home(cls, value: str) -> str:
        try:
            value.format(root="r", domain="d", local="l", address="a")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"home: unknown placeholder or bad format ({exc})") from None
        return value

    @field_validator("quota_rule")
    @classmethod
    def _quota_rule(cls, value: str) -> str:
        try:
            value.format(bytes=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"quota_rule: unknown placeholder or bad format ({exc})") from None
        return value


def _off_sock(name: str) -> Any:
    """A socket that is off until enabled (the Postfix/Dovecot lookup listeners are opt-in)."""
    return Field(
        default_factory=lambda: SocketSettings(enabled=False, path=default_runtime_dir() / name)
    )


class LookupListenerSettings(_ListenerLimits):
    """The common shape of the lookup listeners (socketmap, tcp_table, policy, dovecot_dict)."""

    tcp: str | None = None  # EXAMPLE "127.0.0.1:10027" (loopback only: no authentication)
    idle_timeout: float = Field(300.0, gt=0)  # close a connection silent this long
    request_timeout: float = Field(30.0, gt=0)  # a partly sent request must finish within this

    @field_validator("tcp")
    @classmethod
    def _loopback(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import ipaddress

        host = value.rpartition(":")[0].strip("[]")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ValueError(f"tcp: these tables have no authentication; loopback only: {value!r}")
        return value


class SocketmapSettings(LookupListenerSettings):
    socket: SocketSettings = _off_sock("socketmap")


class TcpTableSettings(LookupListenerSettings):
    map: Literal["domain", "mailbox", "alias", "senderlogin", "quota"] = "alias"


class PolicySettings(LookupListenerSettings):
    socket: SocketSettings = _off_sock("policy")
    sender_login_check: bool = True  # MAIL FROM must be owned by sasl_username
    rate_limit: int = Field(0, ge=0)  # messages per sasl_username per rate_window; 0: none
    rate_window: float = Field(3600.0, gt=0, le=86400 * 7)
    rate_max_entries: int = Field(100_000, ge=1)
    quota_check: bool = True  # refuse RCPT to a mailbox over its quota (needs quota usage)
    max_attributes: int = Field(100, ge=10, le=10_000)


class DovecotDictSettings(LookupListenerSettings):
    socket: SocketSettings = _off_sock("dict")
    iterate_page: int = Field(500, ge=1, le=1000)  # users read per directory call (doveadm -A)


class ControlSettings(_Section):
    """The control socket other idsvc processes (the CLI) use to flush the auth cache."""

    socket: SocketSettings = Field(
        default_factory=lambda: SocketSettings(path=default_runtime_dir() / "control", mode=0o600)
    )


class ApiSettings(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:8080"  # host:port, or unix:/path
    tls_cert: Path | None = None
    tls_key: Path | None = None
    bootstrap_token_file: Path = Field(default_factory=lambda: default_state_dir() / "admin.token")
    max_body: int = Field(1_048_576, ge=1024)
    state_path: Path | None = None  # tokens + audit; default: state.db next to the embedded store
    audit_retention_days: int = Field(365, ge=0)  # 0 keeps audit records for ever
    token_failures: int = Field(10, ge=1)  # failed token attempts per client before 429
    token_failure_window: float = Field(60.0, gt=0, le=86400)  # seconds
    # peers whose X-Forwarded-For is believed (CIDR list); the client is the right-most hop
    # that is not one of them. Empty: the TCP peer is the client.
    trusted_proxies: tuple[str, ...] = ()
    auth_test_per_minute: int = Field(30, ge=1)  # POST /auth/test calls per token
    metrics_public: Literal["loopback", "always", "never"] = "loopback"  # else a token is needed

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for text in value:
            try:
                out.append(str(ipaddress.ip_network(text.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"trusted_proxies: not an address or CIDR: {text!r}") from None
        return tuple(out)

    @model_validator(mode="after")
    def _listen_and_tls(self) -> ApiSettings:
        if self.listen.startswith("unix:"):
            if not self.listen[5:].startswith("/"):
                raise ValueError(f"listen: UNIX socket path must be absolute: {self.listen!r}")
        else:
            host, sep, port = self.listen.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"listen: expected host:port or unix:/path, got {self.listen!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        return self


class AppPasswordSettings(_Section):
    """Per-device app passwords kept in idsvc's local overlay (docs/app-passwords.md)."""

    enabled: bool = True
    path: Path | None = None  # default: overlay.db next to the embedded store
    # services for which the account's own password is refused: only app passwords log in
    required_for: tuple[Literal["smtp", "submission", "imap", "pop3"], ...] = ()


def _loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class MailHttpSettings(_ListenerLimits):
    """One small HTTP listener for local mail daemons (``idsvc.wire.mailhttp``): off by default.

    ``listen`` is ``unix:/path`` (``mode``/``owner``/``group`` apply) or ``host:port``; a TCP
    address that is not loopback is refused unless a ``secret`` is set, because the callers are
    trusted to pass the client's address and the password.
    """

    enabled: bool = False
    listen: str
    mode: int = 0o660
    owner: str | None = None
    group: str | None = None
    read_timeout: float = Field(10.0, gt=0, le=300)  # head + body of one request
    idle_timeout: float = Field(30.0, gt=0, le=3600)  # between requests on a kept-alive connection
    max_body: int = Field(16_384, ge=256, le=1_048_576)
    secret_header: str = "X-Idsvc-Secret"  # noqa: S105 (a header name)
    secret: SecretStr | None = None
    secret_file: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> MailHttpSettings:
        secret = _secret_from(self.secret, self.secret_file, "secret")
        if secret is not None and not secret.get_secret_value():
            raise ValueError("secret must not be empty")
        object.__setattr__(self, "secret", secret)
        object.__setattr__(self, "secret_file", None)
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", self.secret_header):
            raise ValueError(f"secret_header is not a header name: {self.secret_header!r}")
        if self.listen.startswith("unix:"):
            if not self.listen[5:].startswith("/"):
                raise ValueError(f"listen: UNIX socket path must be absolute: {self.listen!r}")
            return self
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"listen: expected host:port or unix:/path, got {self.listen!r}")
        if secret is None and not _loopback_host(host):
            raise ValueError(f"listen: {host} is not loopback; set a secret to listen there")
        return self

    @property
    def unix_path(self) -> Path | None:
        return Path(self.listen[5:]) if self.listen.startswith("unix:") else None


class NginxAuthSettings(MailHttpSettings):
    """``[nginx_auth]``: the nginx mail ``auth_http`` endpoint (``GET /auth``)."""

    imap_backend: str | None = None  # "ip:port" nginx proxies IMAP to after OK
    pop3_backend: str | None = None
    smtp_backend: str | None = None
    max_attempts: int = Field(3, ge=1, le=20)  # in-session retries nginx is offered (Auth-Wait)
    retry_wait: int = Field(1, ge=1, le=60)  # Auth-Wait seconds after a failure (added to delays)
    tempfail_wait: int = Field(5, ge=1, le=300)  # Auth-Wait seconds after a temporary failure

    @field_validator("imap_backend", "pop3_backend", "smtp_backend")
    @classmethod
    def _backend(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"expected ip:port, got {value!r}")
        try:
            ipaddress.ip_address(host.strip("[]"))  # nginx does not resolve Auth-Server names
        except ValueError:
            raise ValueError(
                f"backend host must be an IP address (nginx does not resolve it): {value!r}"
            ) from None
        return value


class DovecotPolicySettings(MailHttpSettings):
    """``[dovecot_policy]``: Dovecot's ``auth_policy_server_url`` endpoint (``POST /policy``)."""

    reject_at_max: bool = False  # refuse (status -1) a source whose penalty reached penalty_max


class DovecotLuaSettings(MailHttpSettings):
    """``[dovecot_lua]``: the endpoint contrib/dovecot/idsvc.lua calls (passdb verify, userdb)."""


class WebSettings(_Section):
    """The admin console (/admin) and self-service (/account) pages on the API listener
    (docs/web.md)."""

    enabled: bool = True
    session_idle: float = Field(900.0, gt=0, le=86400)  # seconds without a request
    session_absolute: float = Field(28800.0, gt=0, le=7 * 86400)  # seconds since login
    max_sessions: int = Field(10_000, ge=1)  # oldest evicted beyond this
    # SQLite file for TOTP secrets and recovery codes; default: web.db beside the state store
    second_factor_path: Path | None = None
    # the key file sealing the TOTP secrets (created 0600 on first use); default: outside the
    # state directory, /etc/idsvc/web-totp.key for root, else $XDG_CONFIG_HOME/idsvc/
    second_factor_key: Path | None = None
    totp_issuer: str = Field("idsvc", min_length=1, max_length=64)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    # which authentications make an audit log line: failures (Dovecot's default), all
    # (Dovecot's auth_verbose) or none; provisioning changes always do
    auth_log: Literal["all", "failures", "none"] = "failures"
    audit_queue: int = Field(10_000, ge=1, le=1_000_000)  # events waiting before drops


MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """The number of cores this process may run on, capped at ``MAX_DEFAULT_WORKERS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


class ServeSettings(_Section):
    """``idsvc serve``: worker processes and the event loop."""

    workers: int | None = Field(None, ge=1, le=64)  # None: the number of cores, capped at 4
    loop: Literal["auto", "uvloop", "asyncio"] = "auto"  # auto: uvloop when it is installed

    def worker_count(self) -> int:
        return self.workers if self.workers is not None else default_workers()


class Settings(_Section):
    directory: DirectorySettings = Field(default_factory=DirectorySettings)
    passwords: PasswordSettings = Field(default_factory=PasswordSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    saslauthd: SaslauthdSettings = Field(default_factory=SaslauthdSettings)
    dovecot_auth: DovecotAuthSettings = Field(default_factory=DovecotAuthSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    mail: MailSettings = Field(default_factory=MailSettings)
    socketmap: SocketmapSettings = Field(default_factory=SocketmapSettings)
    tcp_table: TcpTableSettings = Field(default_factory=TcpTableSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    dovecot_dict: DovecotDictSettings = Field(default_factory=DovecotDictSettings)
    mailsvc: MailsvcHookSettings = Field(default_factory=MailsvcHookSettings)
    nginx_auth: NginxAuthSettings = Field(
        default_factory=lambda: NginxAuthSettings(
            listen=f"unix:{default_runtime_dir() / 'nginx-auth'}"
        )
    )
    dovecot_policy: DovecotPolicySettings = Field(
        default_factory=lambda: DovecotPolicySettings(listen="127.0.0.1:8091")
    )
    dovecot_lua: DovecotLuaSettings = Field(
        default_factory=lambda: DovecotLuaSettings(listen=f"unix:{default_runtime_dir() / 'lua'}")
    )
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    app_passwords: AppPasswordSettings = Field(default_factory=AppPasswordSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    @model_validator(mode="after")
    def _distinct_sockets(self) -> Settings:
        seen: dict[Path, str] = {}
        paths = [
            ("saslauthd.socket.path", self.saslauthd.socket),
            ("dovecot_auth.socket.path", self.dovecot_auth.socket),
            ("control.socket.path", self.control.socket),
            ("socketmap.socket.path", self.socketmap.socket),
            ("policy.socket.path", self.policy.socket),
            ("dovecot_dict.socket.path", self.dovecot_dict.socket),
        ]
        for key, socket in paths:
            if not socket.enabled:
                continue
            if socket.path in seen:
                raise ValueError(f"{key} is the same path as {seen[socket.path]}")
            seen[socket.path] = key
        listens = [("api.listen", self.api.listen)] if self.api.enabled else []
        for key, surface in (
            ("nginx_auth.listen", self.nginx_auth),
            ("dovecot_policy.listen", self.dovecot_policy),
            ("dovecot_lua.listen", self.dovecot_lua),
        ):
            if surface.enabled:
                listens.append((key, surface.listen))
        addresses: dict[str, str] = {}
        for key, listen in listens:
            if listen.startswith("unix:"):
                path = Path(listen[5:])
                if path in seen:
                    raise ValueError(f"{key} is the same path as {seen[path]}")
                seen[path] = key
            elif not listen.endswith(":0"):
                if listen in addresses:
                    raise ValueError(f"{key} is the same address as {addresses[listen]}")
                addresses[listen] = key
        return self


def _env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for key, raw in sorted(env.items()):
        if not key.startswith(ENV_PREFIX) or key in NOT_SETTINGS:
            continue
        path = [part.lower() for part in key[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            raise ConfigError(f"malformed environment override {key}")
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment override {key} conflicts with a scalar setting")
            node = child
        node[path[-1]] = _env_value(raw)


def load_settings(
    path: Path | None = None, env: Mapping[str, str] | None = None
) -> tuple[Settings, Path | None]:
    """Read the TOML file (if any), apply the environment, validate. Returns (settings, file used).

    Raises ConfigError with every problem listed, each with its dotted key.
    """
    env = os.environ if env is None else env
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = Path(env[ENV_PREFIX + "CONFIG"])
    if path is None and DEFAULT_CONFIG_FILE.exists():
        path = DEFAULT_CONFIG_FILE
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    _apply_env(data, env)
    try:
        return Settings.model_validate(data), path
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: "
            + err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
