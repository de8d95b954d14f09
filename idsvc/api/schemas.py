"""Request and response bodies of the REST API (pydantic, ``extra="forbid"`` on input).

Inputs carry only shape limits (types, lengths, counts); meaning is validated once, by
``idsvc.provisioning`` and ``idsvc.model`` (canonicalisation), so the CLI, REST and SCIM agree.
Outputs never carry password hashes or token secrets (the token create response is the one
exception: its ``token`` field is the secret, shown once).
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from idsvc.config import AuthSettings, PasswordSettings
from idsvc.model import Service
from idsvc.state import Scope

T = TypeVar("T")

MAX_DOMAINS_IN_BODY = 100
MAX_DESTINATIONS_IN_BODY = 1000
MAX_QUOTA = 2**62


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=4096)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- domains ------------------------------------------------------------------------------------


class DomainCreate(_In):
    name: str = Field(min_length=1, max_length=1024)
    enabled: bool = True
    default_quota: int = Field(0, ge=0, le=MAX_QUOTA, description="bytes, 0 = unlimited")
    alias_domains: list[str] = Field(
        default_factory=list, max_length=MAX_DOMAINS_IN_BODY, description="other names for it"
    )
    description: str = Field("", max_length=1024)


class DomainPatch(_In):
    """JSON merge patch; absent (or null) fields stay as they are."""

    enabled: bool | None = None
    default_quota: int | None = Field(None, ge=0, le=MAX_QUOTA)
    alias_domains: list[str] | None = Field(None, max_length=MAX_DOMAINS_IN_BODY)
    description: str | None = Field(None, max_length=1024)


class DomainOut(_Out):
    name: str
    enabled: bool
    default_quota: int
    alias_domains: list[str]
    description: str
    created: datetime
    updated: datetime
    revision: int


# -- users --------------------------------------------------------------------------------------

MAX_PASSWORD_INPUT = 4096  # the ceiling of passwords.max_length; the policy enforces the setting
_PW = PasswordSettings()
_AUTH = AuthSettings()
POLICY_TEXT = (
    "A new password. Password policy (a violation is 422 `password-policy`; its detail names "
    f"the rule, never the password): {_PW.min_length} to {_PW.max_length} characters counted "
    "in Unicode code points (defaults of passwords.min_length / passwords.max_length), at most "
    f"auth.max_password_length ({_AUTH.max_password_length}) bytes in UTF-8; no control "
    "characters (NUL, TAB, LF, CR, DEL, C1, U+2028/2029, lone surrogates); not the account's "
    "address or local part; not on the list of common passwords (case-insensitive; "
    f"passwords.blocklist, default {'on' if _PW.blocklist else 'off'}). Spaces and any other "
    "Unicode character are allowed."
)
_FAST = sorted(set(_PW.import_schemes_admin) - set(_PW.import_schemes_domain_admin))
HASH_IMPORT_RULES = (
    "An existing {SCHEME} hash to import (migration). Schemes by role (defaults of "
    "passwords.import_schemes_domain_admin / import_schemes_admin): a domain admin may import "
    f"slow salted schemes only ({', '.join(_PW.import_schemes_domain_admin)}); a global admin "
    f"also {', '.join(_FAST)}. Iterated schemes need 1000+ iterations to count as slow. "
    "Unsalted ({MD5}, {SHA}, {SHA256}, {SHA512}, {PLAIN-MD5}, DES crypt) and cleartext "
    "({PLAIN}, {CLEAR}) hashes are refused with 422 `password-policy` unless "
    "passwords.allow_weak_imports is on, and then only for a global admin; an allowed {PLAIN} "
    "value is hashed with the configured scheme, never stored as is. An unusable hash is 422 "
    "`invalid-password-hash`."
)


class UserCreate(_In):
    """``address`` is ``local@domain`` or a bare local part (the domain comes from the path).
    Give exactly one of ``password`` (checked by the password policy, hashed here) or
    ``password_hash`` (an import of a scheme the caller's role may import)."""

    address: str = Field(min_length=1, max_length=1024)
    password: str | None = Field(
        None, min_length=1, max_length=MAX_PASSWORD_INPUT, description=POLICY_TEXT
    )
    password_hash: str | None = Field(
        None, min_length=1, max_length=1024, description=HASH_IMPORT_RULES
    )
    display_name: str = Field("", max_length=256)
    enabled: bool = True
    quota: int | None = Field(None, ge=0, le=MAX_QUOTA, description="default: domain's quota")
    services: list[Service] | None = Field(None, max_length=16)


class UserPatch(_In):
    """JSON merge patch; absent (or null) fields stay as they are."""

    display_name: str | None = Field(None, max_length=256)
    enabled: bool | None = None
    quota: int | None = Field(None, ge=0, le=MAX_QUOTA)
    services: list[Service] | None = Field(None, max_length=16)


class PasswordIn(_In):
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_INPUT, description=POLICY_TEXT)


class PasswordHashIn(_In):
    password_hash: str = Field(min_length=1, max_length=1024, description=HASH_IMPORT_RULES)


class UserOut(_Out):
    address: str
    display_name: str
    enabled: bool
    quota: int
    services: list[Service]
    maildir: str
    created: datetime
    updated: datetime
    revision: int


# -- aliases ------------------------------------------------------------------------------------


class AliasCreate(_In):
    """``source`` is ``local@domain`` (a bare local part takes the path's domain) or ``@domain``
    for a catch-all."""

    source: str = Field(min_length=1, max_length=1024)
    destinations: list[str] = Field(min_length=1, max_length=MAX_DESTINATIONS_IN_BODY)
    enabled: bool = True


class AliasPatch(_In):
    destinations: list[str] | None = Field(None, min_length=1, max_length=MAX_DESTINATIONS_IN_BODY)
    enabled: bool | None = None


class AliasOut(_Out):
    source: str
    destinations: list[str]
    enabled: bool
    created: datetime
    updated: datetime
    revision: int


# -- tokens -------------------------------------------------------------------------------------


class TokenCreate(_In):
    name: str = Field(min_length=1, max_length=64)
    scope: Scope
    domains: list[str] = Field(default_factory=list, max_length=MAX_DOMAINS_IN_BODY)
    owner: str | None = Field(None, min_length=1, max_length=1024, description="owner mailbox")


class TokenOut(_Out):
    id: str
    name: str
    scope: Scope
    domains: list[str]
    owner: str | None
    created: datetime
    created_by: str
    revoked: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="the secret; shown only in this response")


# -- audit and diagnostics ----------------------------------------------------------------------


class AuditOut(_Out):
    id: int
    time: datetime
    action: str
    outcome: str
    actor: str
    target: str
    remote: str | None
    service: str | None
    detail: dict[str, object]


class AuthTestIn(_In):
    login: str = Field(min_length=1, max_length=1024)
    password: str = Field(min_length=1, max_length=1024)
    service: Service = Service.IMAP


class AuthTestOut(_Out):
    outcome: str = Field(description="ok, mismatch, unknown_user, disabled, expired, rejected, …")
    user: str | None


class Health(_Out):
    status: str


class ListOf(_Out, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: done")
    total: int | None = Field(description="number of matching objects when the backend knows it")


# -- app passwords ------------------------------------------------------------------------------


class AppPasswordCreate(_In):
    """A per-device password for one account; idsvc generates the secret and returns it once."""

    name: str = Field(min_length=1, max_length=64, description="what it is for ('phone')")
    services: list[Service] = Field(
        default_factory=list, max_length=4, description="only these services (empty: all)"
    )
    networks: list[str] = Field(
        default_factory=list, max_length=16, description="only from these CIDR networks"
    )
    expires: datetime | None = Field(None, description="with a time zone; null: never")


class AppPasswordOut(_Out):
    id: str
    name: str
    user: str
    services: list[Service]
    networks: list[str]
    created: datetime
    expires: datetime | None
    revoked: datetime | None
    last_used: datetime | None
    last_ip: str | None
    active: bool


class AppPasswordCreated(AppPasswordOut):
    secret: str = Field(description="the app password: shown once, never again")
