"""Pre-lookup request checks and log sanitising (table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from idsvc.auth.inputs import is_loopback, request_problem, sanitize
from idsvc.auth.request import AuthRequest
from idsvc.config import AuthSettings
from idsvc.model import Secret

# the table below is about input checks: the cleartext rule is tested on its own further down
SETTINGS = AuthSettings(max_login_length=64, max_password_length=32, allow_cleartext_remote=True)
PW = "pw"


def req(login: str = "bob@example.org", password: str = PW, **kw: Any) -> AuthRequest:
    return AuthRequest(
        login=login, password=Secret(password), service=kw.pop("service", "imap"), **kw
    )


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (req(), None),
        (req("bob"), None),  # no domain yet: canonicalisation decides later
        (req("\u212aelvin@example.org"), None),  # a letter: Address.parse refuses it later
        (req(""), "empty login"),
        (req(password=""), "empty password"),
        (req("b\x00b@example.org"), "NUL in login"),
        (req(password="p\x00w"), "NUL in password"),
        (req("b" * 65), "login too long"),
        (req("\u00e9" * 33), "login too long"),  # 66 UTF-8 bytes
        (req(password="p" * 33), "password too long"),
        (req(password="\u00e9" * 17), "password too long"),  # 34 UTF-8 bytes
        (req(password="\udc80"), "password is not valid Unicode"),
        (req("bob\t@example.org"), "control character or space in login"),
        (req("bob @example.org"), "control character or space in login"),
        (req("bob\x7f@example.org"), "control character or space in login"),
        (req("b\u00f6b\u200b@example.org"), "control, format or space character in login"),
        (req("b\u00f6b\u3000@example.org"), "control, format or space character in login"),
        (req("b\u00f6b\u2028@example.org"), "control, format or space character in login"),
        (req("b\u00f6b\x85@example.org"), "control, format or space character in login"),
        (req("bob", realm="exa mple.org"), "control character or space in realm"),
        (req("bob", realm=""), None),  # saslauthd sends an empty realm: not given
        (req(authzid="x\x00"), "NUL in authzid"),
        (req(service="imap\n"), "malformed service name"),
        (req(service="s" * 65), "malformed service name"),
        (req(password=" spaces and\ttabs are fine "), None),
    ],
)
def test_request_problem(request_: AuthRequest, reason: str | None) -> None:
    assert request_problem(request_, SETTINGS) == reason


STRICT = AuthSettings()  # the default refuses cleartext from a remote peer (Dovecot does too)
OPEN = AuthSettings(allow_cleartext_remote=True)


@pytest.mark.parametrize(
    ("kw", "rejected"),
    [
        ({"remote_ip": "192.0.2.1"}, True),
        ({"remote_ip": None}, True),  # unknown peer: fail closed
        ({"remote_ip": "not an address"}, True),
        ({"remote_ip": "127.0.0.1"}, False),
        ({"remote_ip": "127.5.6.7"}, False),
        ({"remote_ip": "::1"}, False),
        ({"remote_ip": "::ffff:127.0.0.1"}, False),
        ({"remote_ip": "192.0.2.1", "secured": True}, False),
        ({"remote_ip": "192.0.2.1", "mechanism": "login"}, True),
        ({"remote_ip": "192.0.2.1", "mechanism": "XOAUTH2"}, False),
    ],
)
def test_cleartext_policy(kw: dict[str, Any], rejected: bool) -> None:
    problem = request_problem(req(**kw), STRICT)
    assert (problem == "cleartext authentication from a remote peer") is rejected
    assert request_problem(req(**kw), OPEN) is None  # the explicit opt-out allows it


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("fe80::1%lo", False), ("10.0.0.1", False), ("", False)],
)
def test_is_loopback(remote: str, loopback: bool) -> None:
    assert is_loopback(remote) is loopback


def test_sanitize() -> None:
    assert sanitize(None) == ""
    assert sanitize("bob@example.org") == "bob@example.org"
    assert sanitize("bob\r\nINJECTED: yes") == "bob??INJECTED: yes"
    assert sanitize("\x1b[31mred") == "?[31mred"
    assert sanitize("x" * 1000) == "x" * 256
    assert sanitize("abcdef", 3) == "abc"
