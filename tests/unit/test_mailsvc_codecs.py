"""mailsvc's client codecs with literal bytes: netstrings, socketmap, Dovecot auth-client (client
side), policy delegation. Table-driven malformed input plus hypothesis round trips."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsvc.clients import Unavailable, netstring, policy, socketmap
from mailsvc.clients import dovecot_codec as dc
from mailsvc.clients.target import Target

# --- netstring -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"0:,", (b"", b"")),
        (b"3:abc,", (b"abc", b"")),
        (b"3:abc,4:", (b"abc", b"4:")),
        (b"3:ab", None),
        (b"3:abc", None),
        (b"12", None),
        (b"", None),
    ],
)
def test_netstring_decode(data: bytes, expected: tuple[bytes, bytes] | None) -> None:
    assert netstring.decode_one(data, 100) == expected


@pytest.mark.parametrize(
    "data",
    [b"x:abc,", b"3:abcd", b"03:abc,", b"-1:,", b"12345678901:", b"5:ab", b"ab", b"101:"],
)
def test_netstring_malformed(data: bytes) -> None:
    with pytest.raises(netstring.NetstringError):
        # b"5:ab" is just incomplete; feed a wrong terminator to make it malformed
        netstring.decode_one(data + (b"xxxx" if data == b"5:ab" else b""), 100)


@given(st.binary(max_size=300), st.binary(max_size=20))
def test_netstring_roundtrip(payload: bytes, rest: bytes) -> None:
    assert netstring.decode_one(netstring.encode(payload) + rest, 1000) == (payload, rest)


@given(st.binary(max_size=64))
def test_netstring_never_crashes(data: bytes) -> None:
    with contextlib.suppress(netstring.NetstringError):
        netstring.decode_one(data, 50)


# --- socketmap -----------------------------------------------------------------------------


def test_socketmap_request_bytes() -> None:
    assert socketmap.encode_request("alias", "alice@example.org") == b"23:alias alice@example.org,"


@pytest.mark.parametrize(
    ("mapname", "key"),
    [("", "k"), ("a b", "k"), ("m", ""), ("m", "a\r\nb"), ("m", "a\0b"), ("m", "x" * 10000)],
)
def test_socketmap_bad_requests(mapname: str, key: str) -> None:
    with pytest.raises(socketmap.BadRequest):
        socketmap.encode_request(mapname, key)


@pytest.mark.parametrize(
    ("payload", "status", "data"),
    [
        (b"OK alice@example.org", socketmap.Status.OK, "alice@example.org"),
        (b"OK a@x.org,b@y.org", socketmap.Status.OK, "a@x.org,b@y.org"),
        (b"NOTFOUND ", socketmap.Status.NOTFOUND, ""),
        (b"NOTFOUND", socketmap.Status.NOTFOUND, ""),
        (b"TEMP directory down", socketmap.Status.TEMP, "directory down"),
        (b"TIMEOUT slow", socketmap.Status.TIMEOUT, "slow"),
        (b"PERM bad map", socketmap.Status.PERM, "bad map"),
    ],
)
def test_socketmap_replies(payload: bytes, status: socketmap.Status, data: str) -> None:
    assert socketmap.parse_reply(payload) == socketmap.Reply(status, data)


@pytest.mark.parametrize("payload", [b"", b"ok x", b"OK", b"OK ", b"FOUND x", b"\xff\xfe"])
def test_socketmap_malformed_replies_are_temporary(payload: bytes) -> None:
    with pytest.raises(Unavailable):
        socketmap.parse_reply(payload)


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("unix:/run/idsvc/socketmap", Target(path="/run/idsvc/socketmap")),
        ("/run/x", Target(path="/run/x")),
        ("inet:127.0.0.1:10027", Target(host="127.0.0.1", port=10027)),
        ("inet:[::1]:25", Target(host="::1", port=25)),
    ],
)
def test_targets(text: str, target: Target) -> None:
    assert Target.parse(text) == target


@pytest.mark.parametrize(
    "text", ["", "unix:relative", "inet:host", "inet::25", "inet:h:0", "tcp:h:1"]
)
def test_bad_targets(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        Target.parse(text)


# --- Dovecot auth-client, client side ------------------------------------------------------


def test_hello_and_auth_lines() -> None:
    assert dc.hello(42) == b"VERSION\t1\t2\nCPID\t42\n"
    line = dc.auth_line(
        7, "plain", {"service": "smtp", "nologin": None, "rip": "192.0.2.1", "secured": None},
        b"\0alice@example.org\0pw",
    )  # fmt: skip
    assert line == (
        b"AUTH\t7\tPLAIN\tservice=smtp\tnologin\trip=192.0.2.1\tsecured\tresp="
        + base64.b64encode(b"\0alice@example.org\0pw")
        + b"\n"
    )
    assert dc.auth_line(1, "LOGIN", {"service": "smtp"}, b"") == (
        b"AUTH\t1\tLOGIN\tservice=smtp\tresp=\n"
    )
    assert dc.cont_line(3, b"pw") == b"CONT\t3\tcHc=\n"
    assert dc.cancel_line(3) == b"CANCEL\t3\n"


def test_auth_line_escapes_values() -> None:
    line = dc.auth_line(1, "PLAIN", {"rip": "a\tb\nc"})
    assert b"rip=a\x01tb\x01nc" in line


@pytest.mark.parametrize("mech", ["", "PL AIN", "PLAIN\t", "X" * 40])
def test_bad_mechanism_names(mech: str) -> None:
    with pytest.raises(ValueError, match="mechanism"):
        dc.auth_line(1, mech, {})


def test_handshake_reader() -> None:
    reader = dc.HandshakeReader()
    for line in [
        "VERSION\t1\t2", "MECH\tPLAIN\tplaintext", "MECH\tLOGIN\tplaintext", "SPID\t1",
        "CUID\t9", "COOKIE\t" + "a" * 32, "WHATEVER\tx",
    ]:  # fmt: skip
        reader.feed(line)
        assert not reader.done
    reader.feed("DONE")
    assert reader.done
    shake = reader.result()
    assert (shake.major, shake.minor) == (1, 2)
    assert shake.mechanisms == {
        "PLAIN": frozenset({"plaintext"}),
        "LOGIN": frozenset({"plaintext"}),
    }


@pytest.mark.parametrize("first", ["MECH\tPLAIN", "VERSION\t2\t0", "VERSION\tx\t1", "VERSION"])
def test_handshake_rejects(first: str) -> None:
    with pytest.raises(dc.ServerProtocolError):
        dc.HandshakeReader().feed(first)


@pytest.mark.parametrize(
    ("line", "kind", "rid", "data", "params"),
    [
        ("OK\t1\tuser=alice@example.org", "OK", 1, b"", {"user": "alice@example.org"}),
        (
            "FAIL\t2\treason=Authentication failed",
            "FAIL",
            2,
            b"",
            {"reason": "Authentication failed"},
        ),
        ("FAIL\t3\tcode=temp_fail", "FAIL", 3, b"", {"code": "temp_fail"}),
        ("CONT\t4\t", "CONT", 4, b"", {}),
        ("CONT\t5\tVXNlcm5hbWU6", "CONT", 5, b"Username:", {}),
        ("OK\t6\tuser=a\x01tb", "OK", 6, b"", {"user": "a\tb"}),
    ],
)
def test_replies(line: str, kind: str, rid: int, data: bytes, params: dict[str, str]) -> None:
    reply = dc.parse_reply(line)
    assert (reply.kind, reply.request_id, reply.data, dict(reply.params)) == (
        kind,
        rid,
        data,
        params,
    )


def test_reply_flags() -> None:
    assert dc.parse_reply("FAIL\t3\tcode=temp_fail").temporary
    assert not dc.parse_reply("FAIL\t3\tcode=user_disabled").temporary
    assert dc.parse_reply("OK\t1\tuser=u").user == "u"


@pytest.mark.parametrize(
    "line", ["", "OK", "OK\tx", "DONE", "CONT\t1\t***", "AUTH\t1\tPLAIN", "ok\t1\tuser=u"]
)
def test_malformed_replies(line: str) -> None:
    with pytest.raises(dc.ServerProtocolError):
        dc.parse_reply(line)


@given(st.text(max_size=50))
def test_escape_roundtrip(value: str) -> None:
    escaped = dc.escape(value)
    assert not any(c in escaped for c in "\t\r\n\0")
    assert dc.unescape(escaped) == value


@given(st.text(max_size=80))
def test_parse_reply_never_crashes(line: str) -> None:
    with contextlib.suppress(dc.ServerProtocolError):
        dc.parse_reply(line)


# --- policy ---------------------------------------------------------------------------------


def test_policy_request_bytes() -> None:
    data = policy.encode_request({"protocol_state": "RCPT", "sender": "a@b.org\r\nx=y"})
    assert data == (b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@b.orgx=y\n\n")


def test_policy_request_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match="attribute"):
        policy.encode_request({"Bad Name": "x"})


@pytest.mark.parametrize(
    ("action", "reply"),
    [
        ("DUNNO", None),
        ("OK", None),
        ("dunno", None),
        ("PREPEND X-Foo: bar", None),
        ("DEFER_IF_REJECT later", None),
        ("REJECT", "554 5.7.1 Access denied"),
        ("REJECT too many messages", "554 5.7.1 too many messages"),
        ("DEFER", "450 4.7.1 Try again later"),
        ("DEFER_IF_PERMIT rate limit", "450 4.7.1 rate limit"),
        ("450 4.7.1 Rate limit exceeded", "450 4.7.1 Rate limit exceeded"),
        ("552 5.2.2 Mailbox full", "552 5.2.2 Mailbox full"),
        ("550 no", "550 5.7.1 no"),
        ("HOLD", policy.DEFAULT_ACTION),
        ("FILTER smtp:x", policy.DEFAULT_ACTION),
        ("reject_unverified_sender", policy.DEFAULT_ACTION),
        ("250 ok", policy.DEFAULT_ACTION),
    ],
)
def test_policy_decisions(action: str, reply: str | None) -> None:
    assert policy.decide(action) == reply


def test_policy_reply_parsing() -> None:
    assert policy.parse_action(["action=DUNNO"]) == "DUNNO"
    assert policy.parse_action(["foo=bar", "action=REJECT no way"]) == "REJECT no way"
    with pytest.raises(Unavailable):
        policy.parse_action(["foo=bar"])


@given(st.text(max_size=60))
def test_policy_decide_is_total(action: str) -> None:
    reply = policy.decide(action)
    assert reply is None or (reply[:1] in "45" and "\n" not in reply and "\r" not in reply)
