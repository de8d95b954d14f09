"""The python-ldap → idsvc error table of idsvc.directory.ldap.map_error, row by row (no server:
the exceptions are the ones python-ldap raises, built the way it builds them)."""

from __future__ import annotations

import ldap
import pytest

from idsvc.directory.ldap import decode_cursor, encode_cursor, map_error
from idsvc.errors import (
    AlreadyExists,
    AmbiguousEntry,
    Conflict,
    DirectoryError,
    InvalidInput,
    NotFound,
    TemporaryFailure,
)


def _err(cls: type[ldap.LDAPError], info: str = "") -> ldap.LDAPError:
    return cls({"result": 0, "desc": cls.__name__.replace("_", " ").lower(), "info": info})


TABLE: list[tuple[type[ldap.LDAPError], bool, bool, type[Exception]]] = [
    # (exception, write, point query, expected)
    (ldap.SERVER_DOWN, False, True, TemporaryFailure),
    (ldap.SERVER_DOWN, True, False, TemporaryFailure),
    (ldap.CONNECT_ERROR, False, False, TemporaryFailure),
    (ldap.TIMEOUT, True, False, TemporaryFailure),
    (ldap.BUSY, False, False, TemporaryFailure),
    (ldap.UNAVAILABLE, True, False, TemporaryFailure),
    (ldap.TIMELIMIT_EXCEEDED, True, False, TemporaryFailure),
    (ldap.ADMINLIMIT_EXCEEDED, False, False, TemporaryFailure),
    (ldap.UNWILLING_TO_PERFORM, True, False, TemporaryFailure),
    (ldap.OTHER, True, False, TemporaryFailure),
    (ldap.REFERRAL, False, True, TemporaryFailure),
    (ldap.REFERRAL, True, False, TemporaryFailure),
    (ldap.SIZELIMIT_EXCEEDED, False, True, AmbiguousEntry),
    (ldap.SIZELIMIT_EXCEEDED, False, False, TemporaryFailure),
    (ldap.ALREADY_EXISTS, True, False, AlreadyExists),
    (ldap.NO_SUCH_OBJECT, True, False, NotFound),
    (ldap.NO_SUCH_OBJECT, False, True, TemporaryFailure),
    (ldap.NO_SUCH_ATTRIBUTE, True, False, Conflict),
    (ldap.ASSERTION_FAILED, True, False, Conflict),
    (ldap.NOT_ALLOWED_ON_NONLEAF, True, False, Conflict),
    (ldap.TYPE_OR_VALUE_EXISTS, True, False, Conflict),
    (ldap.INSUFFICIENT_ACCESS, False, True, TemporaryFailure),
    (ldap.INSUFFICIENT_ACCESS, True, False, DirectoryError),
    (ldap.OBJECT_CLASS_VIOLATION, True, False, DirectoryError),
    (ldap.INVALID_SYNTAX, True, False, DirectoryError),
]


@pytest.mark.parametrize(("exc", "write", "point", "expected"), TABLE)
def test_error_table(
    exc: type[ldap.LDAPError], write: bool, point: bool, expected: type[Exception]
) -> None:
    mapped = map_error(_err(exc, "diagnostic"), write=write, point=point)
    assert type(mapped) is expected
    assert isinstance(mapped, DirectoryError)


def test_never_none_and_never_foreign() -> None:
    for exc in (ldap.LOCAL_ERROR, ldap.DECODING_ERROR, ldap.PROTOCOL_ERROR):
        assert isinstance(map_error(_err(exc)), TemporaryFailure)
    assert isinstance(map_error(RuntimeError("boom")), TemporaryFailure)
    already = NotFound("x")
    assert map_error(already) is already


def test_messages_carry_no_secret() -> None:
    mapped = map_error(_err(ldap.INVALID_CREDENTIALS, "80090308: data 52e"), write=False)
    assert isinstance(mapped, TemporaryFailure)  # a refused *service* bind: cannot answer
    assert "52e" in str(mapped)


def test_cursor_round_trip_and_refusals() -> None:
    for key in ("a@example.org", "@example.org", "é@x", "k" * 254):
        assert decode_cursor("account", encode_cursor("account", key)) == key
    bad = [
        "",
        "*",
        "djE6",
        encode_cursor("domain", "x"),
        encode_cursor("account", "a\x00b"),
        "A" * 2000,
    ]
    for cursor in bad:
        with pytest.raises(InvalidInput):
            decode_cursor("account", cursor)
