"""python-ldap → idsvc error mapping, in one table, for the whole LDAP adapter.

``map_error`` is the only place where python-ldap exceptions become ``idsvc.errors`` types;
``bind_failure`` refines an invalidCredentials bind answer with Active Directory's sub-codes.
Nothing here talks to a server or logs; descriptions never contain credentials (python-ldap puts
only the server's diagnostic text in ``info``).

=========================================================  ===================================
SERVER_DOWN, CONNECT_ERROR, TIMEOUT, BUSY, UNAVAILABLE,    TemporaryFailure (never None)
TIMELIMIT/ADMINLIMIT_EXCEEDED, UNWILLING_TO_PERFORM,
LOCAL_ERROR, OTHER, service bind refused, TLS failure,
any other unexpected error on a read
two entries for one key, SIZELIMIT_EXCEEDED (point query)  AmbiguousEntry
REFERRAL result or search continuation reference           TemporaryFailure — never followed,
                                                           never "not found", never success
ALREADY_EXISTS                                             AlreadyExists
NO_SUCH_OBJECT on a write                                  NotFound
NO_SUCH_ATTRIBUTE on the revision CAS, ASSERTION_FAILED,   Conflict
NOT_ALLOWED_ON_NONLEAF, TYPE_OR_VALUE_EXISTS
NO_SUCH_OBJECT on a lookup's search base                   TemporaryFailure (misconfigured base)
schema/ACL refusals of a write                             DirectoryError
=========================================================  ===================================
"""

from __future__ import annotations

import re

import ldap

from idsvc.directory.base import BindResult
from idsvc.errors import (
    AlreadyExists,
    AmbiguousEntry,
    Conflict,
    DirectoryError,
    NotFound,
    TemporaryFailure,
)

# Errors after which the server is skipped for retry_after and the connection dropped.
FAILOVER: tuple[type[Exception], ...] = (
    ldap.SERVER_DOWN,
    ldap.CONNECT_ERROR,
    ldap.TIMEOUT,
    ldap.BUSY,
    ldap.UNAVAILABLE,
)
# Errors that say "not now" on any operation, read or write.
TRANSIENT: tuple[type[Exception], ...] = (
    *FAILOVER,
    ldap.TIMELIMIT_EXCEEDED,
    ldap.ADMINLIMIT_EXCEEDED,
    ldap.UNWILLING_TO_PERFORM,
    ldap.LOCAL_ERROR,
    ldap.OTHER,
)
_AD_SUBCODE = re.compile(r"data ([0-9a-f]{3})", re.IGNORECASE)
_AD_EXPIRED = frozenset({"532", "773"})
_AD_DISABLED = frozenset({"533", "701", "775"})


class ReferralSeen(Exception):
    """A search returned a continuation reference (not followed)."""


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a python-ldap error."""
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    text = str(info.get("desc") or type(exc).__name__)
    extra = info.get("info")
    return f"{text} ({extra})" if extra else text


def map_error(exc: BaseException, *, write: bool = False, point: bool = False) -> DirectoryError:
    """Translate a python-ldap exception (or a referral) into an idsvc DirectoryError."""
    if isinstance(exc, DirectoryError):
        return exc
    if isinstance(exc, (ReferralSeen, ldap.REFERRAL)):
        return TemporaryFailure("LDAP server returned a referral (not followed)")
    if isinstance(exc, ldap.ALREADY_EXISTS):
        return AlreadyExists("entry already exists")
    if isinstance(exc, ldap.NO_SUCH_OBJECT):
        if write:
            return NotFound("no such entry (or parent entry)")
        return TemporaryFailure("LDAP search base does not exist")
    if isinstance(
        exc,
        (
            ldap.NO_SUCH_ATTRIBUTE,
            ldap.ASSERTION_FAILED,
            ldap.NOT_ALLOWED_ON_NONLEAF,
            ldap.TYPE_OR_VALUE_EXISTS,
        ),
    ):
        return Conflict(f"conflicting change: {describe(exc)}")
    if isinstance(exc, ldap.SIZELIMIT_EXCEEDED):
        if point:
            return AmbiguousEntry("more than one LDAP entry matches")
        return TemporaryFailure(
            "LDAP size limit exceeded (a paged listing needs size.prtotal=unlimited for the "
            "writer identity: see docs/ldap.md)"
        )
    if isinstance(exc, TRANSIENT):
        return TemporaryFailure(f"LDAP error: {describe(exc)}")
    if isinstance(exc, ldap.LDAPError):
        if write:
            return DirectoryError(f"LDAP server refused the change: {describe(exc)}")
        return TemporaryFailure(f"LDAP error: {describe(exc)}")
    return TemporaryFailure(f"LDAP client error: {type(exc).__name__}")


def bind_failure(exc: BaseException) -> BindResult:
    """invalidCredentials, refined by Active Directory's ``data NNN`` sub-code when present."""
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    match = _AD_SUBCODE.search(str(info.get("info", "")))
    if match and match.group(1).lower() in _AD_EXPIRED:
        return BindResult.EXPIRED
    if match and match.group(1).lower() in _AD_DISABLED:
        return BindResult.DISABLED
    return BindResult.INVALID_CREDENTIALS
