"""The Dovecot auth-client codec with literal bytes: escaping, parsing, replies, limits, fuzzing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.wire.dovecot_auth import protocol as p


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ("a\tb", "a\x01tb"),
        ("\x01", "\x011"),
        ("cr\rlf\nnul\0", "cr\x01rlf\x01nnul\x010"),
        ("", ""),
    ],
)
def test_tab_escape_both_ways(raw: str, escaped: str) -> None:
    assert p.tab_escape(raw) == escaped
    assert p.tab_unescape(escaped) == raw


def test_unescape_unknown_escape_is_the_character_itself() -> None:
    assert p.tab_unescape("a\x01xb") == "axb"


def test_unescape_dangling_escape_is_malformed() -> None:
    with pytest.raises(p.MalformedLine):
        p.tab_unescape("abc\x01")


@given(st.text(max_size=64))
def test_escape_roundtrip_and_no_separators(value: str) -> None:
    escaped = p.tab_escape(value)
    assert not set(escaped) & {"\t", "\n", "\r", "\0"}
    assert p.tab_unescape(escaped) == value


# --- parsing ----------------------------------------------------------------------------------

POSTFIX_AUTH = (
    b"AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=192.0.2.1\trip=198.51.100.7\tsecured"
    b"\tresp=AGFsaWNlQGV4YW1wbGUub3JnAHMzY3JldA=="
)


def test_parse_postfix_auth_line() -> None:
    msg = p.parse_line(POSTFIX_AUTH)
    assert isinstance(msg, p.Auth)
    assert msg.request_id == 1
    assert msg.mechanism == "PLAIN"
    assert msg.service == "smtp"
    assert msg.local_ip == "192.0.2.1"
    assert msg.remote_ip == "198.51.100.7"
    assert msg.secured
    assert "nologin" in msg.flags
    assert msg.resp == "AGFsaWNlQGV4YW1wbGUub3JnAHMzY3JldA=="
    assert p.decode_base64(msg.resp) == b"\0alice@example.org\0s3cret"


def test_parse_dovecot_style_auth_line() -> None:
    msg = p.parse_line(
        b"AUTH\t7\tlogin\tprotocol=imap\tsession=abc\tsecured=tls\tlport=143\tfoo=b\x01tar"
    )
    assert isinstance(msg, p.Auth)
    assert msg.service == "imap"
    assert msg.secured
    assert msg.resp is None
    assert msg.params["foo"] == "b\tar"  # values are unescaped; unknown ones kept, ignored


def test_parse_handshake_and_other_commands() -> None:
    assert p.parse_line(b"VERSION\t1\t0") == p.Version(1, 0)
    assert p.parse_line(b"VERSION\t1\t3\r") == p.Version(1, 3)
    assert p.parse_line(b"CPID\t4242") == p.Cpid(4242)
    assert p.parse_line(b"CONT\t3\tczNjcmV0") == p.Cont(3, "czNjcmV0")
    assert p.parse_line(b"CONT\t3\t") == p.Cont(3, "")
    assert p.parse_line(b"CANCEL\t9") == p.Cancel(9)
    auth = p.parse_line(b"AUTH\t4294967295\tPLAIN\tservice=smtp\tresp=")
    assert isinstance(auth, p.Auth)
    assert auth.request_id == 2**32 - 1
    assert auth.resp == ""


MALFORMED: list[tuple[bytes, type[p.ProtocolError]]] = [
    (b"VERSION\t2\t0", p.BadVersion),
    (b"VERSION\t1", p.BadVersion),
    (b"VERSION\tx\t0", p.MalformedLine),
    (b"HELLO\t1", p.UnknownCommand),
    (b"", p.UnknownCommand),
    (b"auth\t1\tPLAIN\tservice=smtp", p.UnknownCommand),
    (b"AUTH\t1", p.MalformedLine),
    (b"AUTH\t0\tPLAIN\tservice=smtp", p.MalformedLine),
    (b"AUTH\t4294967296\tPLAIN\tservice=smtp", p.MalformedLine),
    (b"AUTH\t-1\tPLAIN\tservice=smtp", p.MalformedLine),
    (b"AUTH\t+1\tPLAIN\tservice=smtp", p.MalformedLine),
    (b"AUTH\t\xd9\xa1\tPLAIN\tservice=smtp", p.MalformedLine),  # Arabic-Indic digit one
    (b"AUTH\t1\t\tservice=smtp", p.MalformedLine),
    (b"AUTH\t1\tPLAIN\tservice=smtp\tresp=AA==\tsecured", p.ParamsAfterResp),
    (b"AUTH\t1\tPLAIN\tservice=smtp\tresp=\tresp=", p.ParamsAfterResp),
    (b"AUTH\t1\tPLAIN\t=x", p.MalformedLine),
    (b"AUTH\t1\tPLAIN\tservice=sm\x01", p.MalformedLine),
    (b"AUTH\t1\tPLAIN" + b"\tx" * (p.MAX_PARAMS + 1), p.MalformedLine),
    (b"CONT\t1", p.MalformedLine),
    (b"CONT\t1\tAA==\textra", p.MalformedLine),
    (b"CANCEL", p.MalformedLine),
    (b"CPID", p.MalformedLine),
    (b"CPID\t1\t2", p.MalformedLine),
    (b"AUTH\t1\tPLAIN\tservice=\xff", p.MalformedLine),
    (b"AUTH\t1\tPLAIN\tservice=smtp\tresp=" + b"A" * p.MAX_LINE, p.LineTooLong),
]


@pytest.mark.parametrize(("line", "error"), MALFORMED)
def test_malformed_lines(line: bytes, error: type[p.ProtocolError]) -> None:
    with pytest.raises(error):
        p.parse_line(line)


def test_protocol_error_messages_never_echo_the_line() -> None:
    secret = base64.b64encode(b"\0alice\0hunter2").decode()
    with pytest.raises(p.ProtocolError) as info:
        p.parse_line(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={secret}\tx".encode())
    assert secret not in str(info.value)


@pytest.mark.parametrize(
    ("text", "data"),
    [("", b""), ("=", b""), ("AA==", b"\0"), ("czNjcmV0", b"s3cret"), ("YWI=", b"ab")],
)
def test_base64_accepts(text: str, data: bytes) -> None:
    assert p.decode_base64(text) == data


@pytest.mark.parametrize(
    "text",
    [
        "A",
        "AA",
        "AA=",
        "AA=A",
        "A===",
        "czNj cmV0",
        "czNj\ncmV0",
        "****",
        "YWJ=",
        "==",
        "AA==AA==",
        "YQ",
    ],
)
def test_base64_rejects(text: str) -> None:
    with pytest.raises(p.InvalidBase64):
        p.decode_base64(text)


@given(st.binary(max_size=200))
def test_base64_roundtrip(data: bytes) -> None:
    assert p.decode_base64(p.encode_base64(data)) == data


@given(st.text(max_size=40))
def test_base64_rejects_or_roundtrips_any_text(text: str) -> None:
    try:
        data = p.decode_base64(text)
    except p.InvalidBase64:
        return
    assert p.encode_base64(data) == text or text == "="


@given(st.binary(max_size=p.MAX_LINE + 10))
def test_parse_line_only_returns_messages_or_raises_protocol_error(line: bytes) -> None:
    try:
        msg = p.parse_line(line)
    except p.ProtocolError:
        return
    assert isinstance(msg, p.Version | p.Cpid | p.Auth | p.Cont | p.Cancel)


_value = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(
    rid=st.integers(1, 2**32 - 1),
    service=_value.filter(bool),
    rip=_value,
    extra=st.dictionaries(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=10).filter(
            lambda k: k not in {"resp", "service", "protocol", "rip"}
        ),
        _value,
        max_size=5,
    ),
    resp=st.none() | st.binary(max_size=100),
)
def test_auth_encode_parse_roundtrip(
    rid: int, service: str, rip: str, extra: dict[str, str], resp: bytes | None
) -> None:
    """A client that escapes its values the Dovecot way is always understood exactly."""
    fields = ["AUTH", str(rid), "PLAIN", f"service={p.tab_escape(service)}"]
    fields.append(f"rip={p.tab_escape(rip)}")
    fields += [f"{k}={p.tab_escape(v)}" for k, v in extra.items()]
    if resp is not None:
        fields.append(f"resp={p.encode_base64(resp)}")
    msg = p.parse_line("\t".join(fields).encode())
    assert isinstance(msg, p.Auth)
    assert msg.request_id == rid
    assert msg.params["service"] == service
    assert msg.params["rip"] == rip
    for k, v in extra.items():
        assert msg.params[k] == v
    if resp is None:
        assert msg.resp is None
    else:
        assert msg.resp is not None
        assert p.decode_base64(msg.resp) == resp


# --- server lines -----------------------------------------------------------------------------


def test_handshake_bytes_are_exactly_what_postfix_expects() -> None:
    out = p.handshake(
        [("PLAIN", ["plaintext"]), ("LOGIN", ["plaintext"])],
        spid="123",
        cuid=7,
        cookie="0123456789abcdef0123456789abcdef",
    )
    assert out == (
        b"VERSION\t1\t2\n"
        b"MECH\tPLAIN\tplaintext\n"
        b"MECH\tLOGIN\tplaintext\n"
        b"SPID\t123\n"
        b"CUID\t7\n"
        b"COOKIE\t0123456789abcdef0123456789abcdef\n"
        b"DONE\n"
    )


@pytest.mark.parametrize("cookie", ["", "0" * 31, "0" * 33, "G" * 32, "A" * 32])
def test_handshake_refuses_bad_cookie(cookie: str) -> None:
    with pytest.raises(ValueError, match="cookie"):
        p.handshake([("PLAIN", [])], spid="1", cuid=1, cookie=cookie)


def test_replies() -> None:
    assert p.ok_reply(1, "alice@example.org") == b"OK\t1\tuser=alice@example.org\n"
    assert p.ok_reply(2, "odd\tname") == b"OK\t2\tuser=odd\x01tname\n"
    assert p.fail_reply(3) == b"FAIL\t3\treason=Authentication failed\n"
    assert (
        p.fail_reply(4, p.FailCode.USER_DISABLED)
        == b"FAIL\t4\tcode=user_disabled\treason=Authentication failed\n"
    )
    assert p.cont_reply(5, b"Username:") == b"CONT\t5\tVXNlcm5hbWU6\n"
    assert p.cont_reply(6, b"") == b"CONT\t6\t\n"
