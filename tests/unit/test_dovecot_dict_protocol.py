"""The Dovecot dict codec: handshake, commands, escaping, malformed input (table-driven and
hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.wire.dovecot_auth.protocol import tab_escape
from idsvc.wire.dovecot_dict import protocol as proto
from idsvc.wire.framing import FramingError


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"H3\t2\t0\t\tauth", proto.Hello(3, 2, 0, "", "auth")),
        (b"H2\t1\t0\t\tauth", proto.Hello(2, 1, 0, "", "auth")),
        (b"H4\t0\t0\t\tauth", proto.Hello(4, 0, 0, "", "auth")),
        (b"H3\t2", proto.Hello(3, 2, 0, "", "")),
        (b"H3\t2\t1\tuser\x01tx\tname\r", proto.Hello(3, 2, 1, "user\tx", "name")),
    ],
)
def test_handshake(line: bytes, expected: proto.Hello) -> None:
    assert proto.parse_line(line, greeted=False) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            b"Lshared/passdb/a@b.example\ta@b.example",
            proto.Lookup("shared/passdb/a@b.example", "a@b.example"),
        ),
        (b"Lkey", proto.Lookup("key", "")),
        (b"Lk\x01ne\x011y\t", proto.Lookup("k\ne\x01y", "")),
        (b"I9\t0\tshared/userdb/\t", proto.Iterate(9, 0, "shared/userdb/", "")),
        (b"I1\t100\tshared/userdb/", proto.Iterate(1, 100, "shared/userdb/", "")),
        (b"C7", proto.Commit("7")),
        (b"B7\tuser", proto.Ignored("B")),
        (b"S7\tk\tv", proto.Ignored("S")),
        (b"R7", proto.Ignored("R")),
    ],
)
def test_commands(line: bytes, expected: proto.Command) -> None:
    assert proto.parse_line(line, greeted=True) == expected


@pytest.mark.parametrize(
    ("line", "greeted"),
    [
        (b"Lkey\t", False),  # no handshake first
        (b"H1\t0\t0\t\tauth", False),  # unknown major versions
        (b"H5\t0", False),
        (b"H99999999999\t0", False),
        (b"Hx\t0", False),
        (b"H3", False),
        (b"H-3\t2", False),
        (b"", True),
        (b"Z", True),  # unknown opcodes
        (b"*1\tLkey", True),
        (b"Ix\t0\tpath", True),
        (b"I1\t-1\tpath", True),
        (b"I1\t0", True),
        (b"I1\t0\tp\tu\textra", True),
        (b"Lk\tu\textra", True),
        (b"Lkey\x01", True),  # dangling escape
        (b"C", True),
        (b"\xff\xfe", True),  # not UTF-8
    ],
)
def test_malformed(line: bytes, greeted: bool) -> None:
    with pytest.raises(proto.ProtocolError):
        proto.parse_line(line, greeted=greeted)


def test_replies_escape_what_they_carry() -> None:
    assert proto.found('{"a":"b"}') == b'O{"a":"b"}\n'
    assert proto.found("x\ty\nz") == b"Ox\x01ty\x01nz\n"
    assert proto.not_found() == b"N\n"
    assert proto.failure("down\n") == b"Fdown\x01n\n"
    assert proto.row("shared/userdb/a@b", "") == b"Oshared/userdb/a@b\t\n"
    assert proto.end_of_rows() == b"\n"
    assert proto.commit_failed("3", "read-only") == b"F3\tread-only\n"


def test_line_limit() -> None:
    decoder = proto.decoder()
    decoder.feed(b"L" + b"x" * proto.MAX_LINE)
    with pytest.raises(FramingError):
        decoder.next()
    ok = proto.decoder()
    ok.feed(b"L" + b"x" * 100 + b"\n")
    assert ok.next() == b"L" + b"x" * 100


@given(st.text(max_size=200), st.text(max_size=50))
def test_lookup_round_trip(key: str, user: str) -> None:
    line = ("L" + tab_escape(key) + "\t" + tab_escape(user)).encode("utf-8", "surrogatepass")
    try:
        parsed = proto.parse_line(line, greeted=True)
    except proto.ProtocolError:
        assert any("\ud800" <= ch <= "\udfff" for ch in key + user)  # not encodable as UTF-8
        return
    assert parsed == proto.Lookup(key, user)


@given(st.binary(max_size=300), st.booleans())
def test_parse_line_only_raises_protocol_error(line: bytes, greeted: bool) -> None:
    try:
        parsed = proto.parse_line(line, greeted=greeted)
    except proto.ProtocolError:
        return
    expected = (
        proto.Hello if not greeted else (proto.Lookup, proto.Iterate, proto.Commit, proto.Ignored)
    )
    assert isinstance(parsed, expected)
