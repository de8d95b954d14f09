"""The proxy-mode upstream codec: reading upstream IMAP/POP3 handshake lines (a table of good
and malformed input, hypothesis: never anything but a result or UpstreamProtocolError), and the
master-login commands it writes, read back by mailsvc's own IMAP parser and by a SASL PLAIN
decoder (hypothesis over arbitrary user names and passwords)."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsvc.imap import protocol as ip
from mailsvc.proxy import protocol as pp

R, P = pp.ImapResponse, pp.Pop3Reply


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.",
         R("*", "OK", "CAPABILITY IMAP4rev1 STARTTLS", "Dovecot ready.")),
        (b"P3 OK [CAPABILITY IMAP4rev1 SORT] Logged in",
         R("P3", "OK", "CAPABILITY IMAP4rev1 SORT", "Logged in")),
        (b"P3 no [AUTHENTICATIONFAILED] Authentication failed.",
         R("P3", "NO", "AUTHENTICATIONFAILED", "Authentication failed.")),
        (b"P1 BAD Error in IMAP command", R("P1", "BAD", None, "Error in IMAP command")),
        (b"* BYE Server shutting down.", R("*", "BYE", None, "Server shutting down.")),
        (b"* CAPABILITY IMAP4rev1 ID", R("*", None, None, "CAPABILITY IMAP4rev1 ID")),
        (b"+", R("+", None, None, "")),
        (b"+ ", R("+", None, None, "")),
        (b"+ aGk=", R("+", None, None, "aGk=")),
        (b"P2 OK", R("P2", "OK", None, "")),
        (b"* PREAUTH ready", R("*", "PREAUTH", None, "ready")),
    ],
)  # fmt: skip
def test_parse_imap(line: bytes, expected: pp.ImapResponse) -> None:
    assert pp.parse_imap(line) == expected


@pytest.mark.parametrize(
    "line",
    [b"", b"*", b"P1", b"P1 ", b"P1 WHATEVER text", b"* OK \x00", b"* OK a\rb", b"* OK a\nb",
     b"* OK \xff\xfe", b"* OK " + b"x" * pp.MAX_LINE, b" OK x"],
)  # fmt: skip
def test_parse_imap_malformed(line: bytes) -> None:
    with pytest.raises(pp.UpstreamProtocolError):
        pp.parse_imap(line)


@pytest.mark.parametrize(
    ("line", "caps"),
    [
        (b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready", ["IMAP4rev1", "AUTH=PLAIN"]),
        (b"* CAPABILITY IMAP4rev1  LITERAL+", ["IMAP4rev1", "LITERAL+"]),
        (b"a OK [capability IMAP4rev1] done", ["IMAP4rev1"]),
        (b"a OK [READ-WRITE] done", None),
        (b"* OK ready", None),
        (b"* 3 EXISTS", None),
    ],
)  # fmt: skip
def test_capabilities(line: bytes, caps: list[str] | None) -> None:
    assert pp.capabilities(pp.parse_imap(line)) == caps


@pytest.mark.parametrize(
    "line",
    [b"* OK [CAPABILITY ] x", b'* CAPABILITY IMAP4rev1 "quoted"', b"* CAPABILITY (x)",
     b"a OK [CAPABILITY IMAP4rev1 {5}] x", b"* CAPABILITY IMAP4rev1 a\\b"],
)  # fmt: skip
def test_capabilities_malformed(line: bytes) -> None:
    with pytest.raises(pp.UpstreamProtocolError):
        pp.capabilities(pp.parse_imap(line))


@pytest.mark.parametrize(
    ("line", "expected"),
    [(b"+OK", P(True, "")), (b"+OK Dovecot ready.", P(True, "Dovecot ready.")),
     (b"-ERR [AUTH] Authentication failed.", P(False, "[AUTH] Authentication failed.")),
     (b"-ERR", P(False, ""))],
)  # fmt: skip
def test_parse_pop3(line: bytes, expected: pp.Pop3Reply) -> None:
    assert pp.parse_pop3(line) == expected


@pytest.mark.parametrize(
    "line", [b"", b"OK", b"+OKAY", b"-ERROR x", b"+ok", b"* OK", b"+OK \x00", b"+OK " + b"x" * 9000]
)
def test_parse_pop3_malformed(line: bytes) -> None:
    with pytest.raises(pp.UpstreamProtocolError):
        pp.parse_pop3(line)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_upstream_line_is_read_or_refused(line: bytes) -> None:
    try:
        response = pp.parse_imap(line)
    except pp.UpstreamProtocolError:
        response = None
    if response is not None:  # only clean, bounded, single lines are ever accepted
        assert len(line) <= pp.MAX_LINE
        assert not any(b in (0, 10, 13) for b in line)
        assert response.tag
        assert response.status in (None, "OK", "NO", "BAD", "BYE", "PREAUTH")
        with contextlib.suppress(pp.UpstreamProtocolError):
            caps = pp.capabilities(response)
            assert caps is None or all(c and " " not in c for c in caps)
    try:
        reply = pp.parse_pop3(line)
    except pp.UpstreamProtocolError:
        return
    assert line.startswith(b"+OK" if reply.ok else b"-ERR")


# --- what we send ------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


def _assembled(segments: list[bytes]) -> bytes:
    """The bytes an IMAP server assembles (literal announcements, data, rest), CRLF removed."""
    data = b"".join(segments)
    assert data.endswith(b"\r\n")
    return data[:-2]


def test_login_quoted_and_literal() -> None:
    assert pp.imap_login("P3", "alice@example.org*proxy", 'p"w\\') == [
        b'P3 LOGIN "alice@example.org*proxy" "p\\"w\\\\"\r\n'
    ]
    assert pp.imap_login("P3", "jürgen*proxy", "pw") == [
        b"P3 LOGIN {13}\r\n",
        "jürgen*proxy".encode() + b' "pw"\r\n',
    ]
    assert pp.imap_login("P3", "u", "a\r\nb") == [b'P3 LOGIN "u" {4}\r\n', b"a\r\nb\r\n"]


@settings(max_examples=300, deadline=None)
@given(_TEXT, _TEXT)
def test_login_reads_back_exactly(user: str, password: str) -> None:
    segments = pp.imap_login("P3", user, password)
    for segment in segments[:-1]:  # every segment but the last announces a literal
        assert ip.literal_at_end(segment[:-2]) is not None
    command = ip.parse_command(_assembled(segments))
    assert command.name == "LOGIN"
    assert [ip.as_string(a) for a in command.args] == [user.encode(), password.encode()]


@settings(max_examples=300, deadline=None)
@given(_TEXT.filter(lambda s: "\0" not in s), _TEXT.filter(lambda s: "\0" not in s),
       _TEXT.filter(lambda s: "\0" not in s))  # fmt: skip
def test_sasl_plain_reads_back(authzid: str, authcid: str, password: str) -> None:
    first, second = pp.imap_authenticate_plain("P3", authzid, authcid, password)
    assert first == b"P3 AUTHENTICATE PLAIN\r\n"
    decoded = base64.b64decode(second[:-2], validate=True)
    assert decoded.split(b"\0") == [authzid.encode(), authcid.encode(), password.encode()]
    line = pp.pop3_auth_plain(authzid, authcid, password)
    assert line.startswith(b"AUTH PLAIN ")
    assert line.endswith(b"\r\n")
    assert base64.b64decode(line[11:-2]) == decoded


def test_sasl_plain_refuses_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        pp.sasl_plain("alice\0bob", "proxy", "pw")


def test_imap_id() -> None:
    assert pp.imap_id("P2", {"x-originating-ip": "192.0.2.7"}) == (
        b'P2 ID ("x-originating-ip" "192.0.2.7")\r\n'
    )
    with pytest.raises(ValueError, match="quotable"):
        pp.imap_id("P2", {"x-originating-ip": "a\r\nb"})


def test_pop3_commands() -> None:
    assert pp.pop3_user_pass("alice@example.org*proxy", "pass word") == [
        b"USER alice@example.org*proxy\r\n",
        b"PASS pass word\r\n",
    ]
    assert pp.pop3_xclient("2001:db8::1") == b"XCLIENT ADDR=2001:db8::1\r\n"


@pytest.mark.parametrize(
    ("user", "password"),
    [("", "pw"), ("a b", "pw"), ("a\r\nQUIT", "pw"), ("a\tb", "pw"), ("alice", ""),
     ("alice", "pw\r\nDELE 1"), ("alice", "p\0w")],
)  # fmt: skip
def test_pop3_refuses_injection(user: str, password: str) -> None:
    with pytest.raises(ValueError, match="POP3"):
        pp.pop3_user_pass(user, password)
