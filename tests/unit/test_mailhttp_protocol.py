"""The pure codecs of the mail HTTP listeners: HTTP/1.x heads (idsvc.wire.mailhttp.protocol), the
nginx auth_http request/reply (nginx.py), Dovecot auth-policy (policy.py) and the Lua script's
requests (lua.py): tables of malformed input and hypothesis properties (never anything but the
codec's own error, whatever the bytes)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idsvc.auth.penalty import PenaltyTracker
from idsvc.auth.request import Outcome
from idsvc.config import AuthSettings, DovecotPolicySettings, NginxAuthSettings
from idsvc.wire.mailhttp.lua import (
    LuaRequestError,
    parse_passdb_request,
    parse_userdb_request,
    passdb_reply,
    userdb_reply,
)
from idsvc.wire.mailhttp.nginx import (
    NginxRequestError,
    parse_auth_request,
    reply_headers,
)
from idsvc.wire.mailhttp.policy import (
    PolicyRequest,
    PolicyRequestError,
    decide,
    parse_policy_request,
)
from idsvc.wire.mailhttp.protocol import (
    MAX_HEAD,
    HttpError,
    HttpRequest,
    parse_head,
    render_response,
)

NGINX_HEAD = (
    b"GET /auth HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\n"
    b"Auth-User: bob%40example.org\r\nAuth-Pass: p%25w\r\nAuth-Protocol: imap\r\n"
    b"Auth-Login-Attempt: 2\r\nClient-IP: 2001:db8::1\r\nAuth-SSL: on"
)


# -- HTTP heads ---------------------------------------------------------------------------------


def test_nginx_head_parses() -> None:
    request = parse_head(NGINX_HEAD)
    assert (request.method, request.path, request.version) == ("GET", "/auth", "HTTP/1.0")
    assert request.header("AUTH-USER") == "bob%40example.org"
    assert request.keep_alive is False
    assert request.content_length == 0


def test_query_keep_alive_and_lf_only_lines() -> None:
    request = parse_head(
        b"POST /policy?command=allow HTTP/1.1\nHost: x\nContent-Length: 12\nConnection: Keep-Alive"
    )
    assert request.query == {"command": "allow"}
    assert request.keep_alive is True
    assert request.content_length == 12
    assert parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close").keep_alive is False
    assert parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive").keep_alive is True


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"", 400),
        (b"GET", 400),
        (b"GET /auth", 400),
        (b"get /auth HTTP/1.0", 400),
        (b"GET  /auth HTTP/1.0", 400),
        (b"GET /auth HTTP/1.0 extra", 400),
        (b"GET auth HTTP/1.0", 400),
        (b"GET * HTTP/1.1", 400),
        (b"GET /a\x7fb HTTP/1.0", 400),
        (b"GET /\xc3\xa9 HTTP/1.0", 400),
        (b"GET / HTTP/2.0", 505),
        (b"GET / HTTP/1.x", 400),
        (b"GET / HTTPS/1.0", 400),
        (b"GET /" + b"a" * 2048 + b" HTTP/1.0", 414),
        (b"GET / HTTP/1.1", 400),  # no Host
        (b"GET / HTTP/1.0\r\nA: 1\r\nA: 2", 400),
        (b"GET / HTTP/1.0\r\nA: 1\r\na: 2", 400),
        (b"GET / HTTP/1.0\r\n folded", 400),
        (b"GET / HTTP/1.0\r\n\tfolded", 400),
        (b"GET / HTTP/1.0\r\nNo-Colon", 400),
        (b"GET / HTTP/1.0\r\n: empty-name", 400),
        (b"GET / HTTP/1.0\r\nSp ace: x", 400),
        (b"GET / HTTP/1.0\r\nA: x\x00y", 400),
        (b"GET / HTTP/1.0\r\nA: x\ry", 400),
        (b"GET / HTTP/1.0\r\nA: x\x1by", 400),
        (b"GET / HTTP/1.0\r\nContent-Length: -1", 400),
        (b"GET / HTTP/1.0\r\nContent-Length: 1e3", 400),
        (b"GET / HTTP/1.0\r\nContent-Length: 1, 1", 400),
        (b"GET / HTTP/1.0\r\nContent-Length: 9999999999", 400),
        (b"GET / HTTP/1.0\r\nContent-Length: \xd9\xa1", 400),  # Arabic-Indic digit
        (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked", 501),
        (b"GET / HTTP/1.0\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(65)), 431),
        (b"GET / HTTP/1.0\r\nA: " + b"a" * MAX_HEAD, 431),
        (b"GET /?a=1&a=2 HTTP/1.0", 400),
        (b"GET /?" + b"&".join(b"k%d=v" % i for i in range(20)) + b" HTTP/1.0", 400),
    ],
)
def test_malformed_heads(head: bytes, status: int) -> None:
    with pytest.raises(HttpError) as caught:
        parse_head(head)
    assert caught.value.status == status


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_give_a_request_or_an_http_error(data: bytes) -> None:
    try:
        request = parse_head(data)
    except HttpError as exc:
        status = exc.status
    else:
        status = 200
        assert request.path.startswith("/")
    assert status == 200 or 400 <= status < 600


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20).filter(
    lambda name: name not in ("transfer-encoding", "content-length")  # checked by value
)
_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=40,
).map(str.strip)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_token, _value, max_size=20))
def test_headers_round_trip(headers: dict[str, str]) -> None:
    head = "GET /auth HTTP/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = parse_head(head.rstrip("\r\n").encode("latin-1"))
    assert dict(request.headers) == headers


def test_render_response() -> None:
    data = render_response(
        200, [("Auth-Status", "OK")], b"{}", keep_alive=False, version="HTTP/1.0"
    )
    assert data == (
        b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    assert b"Connection: keep-alive" in render_response(200, keep_alive=True, version="HTTP/1.0")
    assert b"Connection" not in render_response(204, keep_alive=True)
    with pytest.raises(ValueError, match="line break"):
        render_response(200, [("Auth-Status", "OK\r\nAuth-Server: 10.0.0.1")])


# -- nginx ----------------------------------------------------------------------------------------


def _nginx(**headers: str) -> HttpRequest:
    base = {
        "auth-method": "plain",
        "auth-user": "bob%40example.org",
        "auth-pass": "p%25w",
        "auth-protocol": "imap",
        "auth-login-attempt": "1",
        "client-ip": "192.0.2.1",
    }
    for key, value in headers.items():
        name = key.replace("_", "-")
        if value == "<drop>":
            base.pop(name, None)
        else:
            base[name] = value
    return HttpRequest("GET", "/auth", {}, "HTTP/1.0", base)


def test_nginx_request_is_decoded() -> None:
    auth = parse_auth_request(parse_head(NGINX_HEAD))
    assert (auth.user, auth.password.reveal()) == ("bob@example.org", "p%w")
    assert (auth.protocol, auth.attempt, auth.client_ip, auth.secured) == (
        "imap",
        2,
        "2001:db8::1",
        True,
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"auth_method": "<drop>"},
        {"auth_protocol": "<drop>"},
        {"auth_protocol": "nntp"},
        {"auth_user": "<drop>"},
        {"auth_pass": "<drop>"},
        {"auth_user": "%ff"},
        {"auth_pass": "%c3%28"},
        {"auth_user": "a" * 5000},
        {"auth_login_attempt": "x"},
        {"auth_login_attempt": "-1"},
        {"auth_login_attempt": "99999999"},
        {"client_ip": "example.org"},
        {"client_ip": "192.0.2.1, 10.0.0.1"},
    ],
)
def test_malformed_nginx_requests(headers: dict[str, str]) -> None:
    with pytest.raises(NginxRequestError):
        parse_auth_request(_nginx(**headers))


def test_nginx_request_without_client_ip_or_attempt() -> None:
    auth = parse_auth_request(_nginx(client_ip="<drop>", auth_login_attempt="<drop>"))
    assert (auth.client_ip, auth.attempt) == (None, 1)
    none = parse_auth_request(_nginx(auth_method="none", auth_user="<drop>", auth_pass="<drop>"))
    assert none.user == ""


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(list(_nginx().headers)), _value, max_size=6))
def test_any_nginx_headers_parse_or_fail_cleanly(headers: dict[str, str]) -> None:
    request = _nginx(**{k.replace("-", "_"): v for k, v in headers.items()})
    with contextlib.suppress(NginxRequestError):
        parse_auth_request(request)


SETTINGS = NginxAuthSettings(
    listen="unix:/run/x", imap_backend="10.0.0.12:143", smtp_backend="[2001:db8::5]:25"
)


@pytest.mark.parametrize(
    ("outcome", "protocol", "attempt", "expected"),
    [
        (
            Outcome.OK,
            "imap",
            1,
            [
                ("Auth-Status", "OK"),
                ("Auth-Server", "10.0.0.12"),
                ("Auth-Port", "143"),
                ("Auth-User", "bob@example.org"),
            ],
        ),
        (
            Outcome.MISMATCH,
            "imap",
            1,
            [("Auth-Status", "[AUTHENTICATIONFAILED] Authentication failed."), ("Auth-Wait", "1")],
        ),
        (
            Outcome.UNKNOWN_USER,
            "imap",
            2,
            [("Auth-Status", "[AUTHENTICATIONFAILED] Authentication failed."), ("Auth-Wait", "1")],
        ),
        (Outcome.DISABLED, "pop3", 3, [("Auth-Status", "[AUTH] Authentication failed.")]),
        (
            Outcome.REJECTED,
            "smtp",
            1,
            [
                ("Auth-Status", "Authentication credentials invalid"),
                ("Auth-Error-Code", "535 5.7.8"),
            ],
        ),
        (
            Outcome.TEMPFAIL,
            "imap",
            9,
            [
                ("Auth-Status", "[UNAVAILABLE] Temporary authentication failure, try again later."),
                ("Auth-Wait", "5"),
            ],
        ),
        (
            Outcome.TEMPFAIL,
            "smtp",
            1,
            [
                ("Auth-Status", "Temporary authentication failure, try again later"),
                ("Auth-Error-Code", "451 4.3.0"),
            ],
        ),
        (  # OK without a configured backend: a temporary failure, not a success
            Outcome.OK,
            "pop3",
            1,
            [
                ("Auth-Status", "[SYS/TEMP] Temporary authentication failure, try again later."),
                ("Auth-Wait", "5"),
            ],
        ),
    ],
)
def test_nginx_reply_table(
    outcome: Outcome, protocol: str, attempt: int, expected: list[tuple[str, str]]
) -> None:
    got = reply_headers(outcome, protocol, SETTINGS, attempt=attempt, user="bob@example.org")
    assert got == expected


def test_nginx_ipv6_backend_is_unbracketed() -> None:
    got = reply_headers(Outcome.OK, "smtp", SETTINGS, user="bob@example.org")
    assert ("Auth-Server", "2001:db8::5") in got


@pytest.mark.parametrize("backend", ["mail.example.org:143", "10.0.0.1", "10.0.0.1:0", "1:2:3"])
def test_nginx_backend_must_be_an_ip_and_port(backend: str) -> None:
    with pytest.raises(ValueError, match=r"backend|ip:port"):
        NginxAuthSettings(listen="unix:/run/x", imap_backend=backend)


# -- Dovecot auth-policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "body"),
    [
        (None, b"{}"),
        ("other", b"{}"),
        ("allow", b""),
        ("allow", b"null"),
        ("allow", b'"x"'),
        ("allow", b'{"login": 1}'),
        ("allow", b'{"remote": ["x"]}'),
        ("allow", b'{"login": "' + b"a" * 2000 + b'"}'),
        ("report", b'{"success": 1}'),
        ("report", b'{"policy_reject": "no"}'),
        ("allow", b"[" * 5000 + b"]" * 5000),
        ("allow", b"\xff\xfe"),
    ],
)
def test_malformed_policy_requests(command: str | None, body: bytes) -> None:
    with pytest.raises(PolicyRequestError):
        parse_policy_request(command, body)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["allow", "report", None]), st.binary(max_size=256))
def test_any_policy_body_parses_or_fails_cleanly(command: str | None, body: bytes) -> None:
    with contextlib.suppress(PolicyRequestError):
        parse_policy_request(command, body)


def _decide(tracker: PenaltyTracker, request: PolicyRequest, **policy: Any) -> tuple[int, str]:
    auth = AuthSettings(penalty_max=8.0, default_domain="example.org")
    return decide(request, tracker, auth, DovecotPolicySettings(listen="127.0.0.1:1", **policy))


def test_policy_decisions() -> None:
    tracker = PenaltyTracker(maximum=8.0)
    allow = PolicyRequest("allow", "Bob", "192.0.2.1", None)
    failed = PolicyRequest("report", "bob", "192.0.2.1", success=False)
    assert _decide(tracker, allow) == (0, "")
    for expected in (0, 0, 2, 4, 8, 8):
        assert _decide(tracker, allow) == (expected, "")
        assert _decide(tracker, failed) == (0, "")
    assert tracker.delay(None, ("bob@example.org",)) == 8.0  # canonicalised with default_domain
    assert _decide(tracker, allow, reject_at_max=True)[0] == -1
    # a policy refusal is not counted again; a success clears the account only
    _decide(tracker, PolicyRequest("report", "bob", "192.0.2.9", False, policy_reject=True))
    assert tracker.delay("192.0.2.9") == 0.0
    for fail_type in ("internal", "policy"):  # Dovecot 2.4: not the client's fault
        _decide(tracker, PolicyRequest("report", "bob", "192.0.2.9", False, fail_type=fail_type))
    assert tracker.delay("192.0.2.9") == 0.0
    _decide(tracker, PolicyRequest("report", "bob", "192.0.2.1", success=True))
    assert tracker.delay(None, ("bob@example.org",)) == 0.0
    assert _decide(tracker, allow) == (8, "")
    # an unparsable login still counts for its network
    _decide(tracker, PolicyRequest("report", "a@@b", "198.51.100.1", success=False))
    assert tracker.sizes()[0] == 2


# -- the Lua script's requests -------------------------------------------------------------------


def test_lua_passdb_request() -> None:
    request = parse_passdb_request(
        json.dumps(
            {
                "user": "bob",
                "password": "pw",
                "service": "imap",
                "remote_ip": "192.0.2.1",
                "secured": True,
                "mechanism": "PLAIN",
            }
        ).encode()
    )
    assert (request.user, request.password.reveal(), request.secured) == ("bob", "pw", True)
    assert request.local_ip is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"password": "x", "service": "imap"}',
        b'{"user": "bob", "password": "x"}',
        b'{"user": 5, "password": "x", "service": "imap"}',
        b'{"user": "bob", "password": "x", "service": "imap", "secured": "yes"}',
        b'{"user": "bob", "password": "' + b"x" * 9000 + b'", "service": "imap"}',
    ],
)
def test_malformed_lua_requests(body: bytes) -> None:
    with pytest.raises(LuaRequestError):
        parse_passdb_request(body)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_any_lua_body_parses_or_fails_cleanly(body: bytes) -> None:
    for parse in (parse_passdb_request, parse_userdb_request):
        with contextlib.suppress(LuaRequestError):
            parse(body)


@pytest.mark.parametrize(
    ("outcome", "reply"),
    [
        (Outcome.OK, {"result": "ok", "user": "bob@example.org"}),
        (Outcome.MISMATCH, {"result": "password_mismatch"}),
        (Outcome.REJECTED, {"result": "password_mismatch"}),
        (Outcome.UNKNOWN_USER, {"result": "user_unknown"}),
        (Outcome.DISABLED, {"result": "user_disabled"}),
        (Outcome.EXPIRED, {"result": "pass_expired"}),
        (Outcome.TEMPFAIL, {"result": "internal_failure"}),
    ],
)
def test_lua_passdb_replies(outcome: Outcome, reply: dict[str, str]) -> None:
    assert json.loads(passdb_reply(outcome, "bob@example.org")) == reply


def test_lua_userdb_replies() -> None:
    assert json.loads(userdb_reply(None)) == {"result": "user_unknown"}
    assert json.loads(userdb_reply({"home": "/h"})) == {"result": "ok", "fields": {"home": "/h"}}
