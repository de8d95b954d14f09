"""The netstring framing and the socketmap codec: table-driven malformed input and hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.wire.framing import FramingError, LineDecoder, NetstringDecoder, netstring
from idsvc.wire.socketmap import protocol as proto


def frames(decoder: NetstringDecoder | LineDecoder, data: bytes) -> list[bytes]:
    decoder.feed(data)
    out = []
    while (frame := decoder.next()) is not None:
        out.append(frame)
    return out


@pytest.mark.parametrize(
    ("data", "expected", "pending"),
    [
        (b"0:,", [b""], False),
        (b"5:hello,", [b"hello"], False),
        (b"5:hello,3:abc,", [b"hello", b"abc"], False),  # pipelined
        (b"5:hel", [], True),  # partial payload
        (b"12", [], True),  # partial length
        (b"5:hello", [], True),  # the comma has not arrived
        (b"3:a,b,", [b"a,b"], False),  # commas inside the payload are data
        (b"3:a:b,", [b"a:b"], False),
    ],
)
def test_netstrings(data: bytes, expected: list[bytes], pending: bool) -> None:
    decoder = NetstringDecoder(proto.MAX_QUERY)
    assert frames(decoder, data) == expected
    assert decoder.pending is pending


@pytest.mark.parametrize(
    "data",
    [
        b":hello,",  # no length
        b"-1:x,",
        b"+1:x,",
        b" 1:x,",
        b"1 :x,",
        b"0x1:a,",
        b"5:hello;",  # wrong terminator
        b"5:hello!",
        b"10001:",  # over MAX_QUERY
        b"99999999999999999999:",  # absurd length
        b"123456",  # more digits than any allowed length, no colon
        b"abc",
        b"\x00",
        b"GET / HTTP/1.0\r\n",
        b"3:abc,garbage",
    ],
)
def test_malformed_netstrings_fail_at_once(data: bytes) -> None:
    decoder = NetstringDecoder(proto.MAX_QUERY)
    with pytest.raises(FramingError):
        frames(decoder, data)


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(min_value=1, max_value=17))
def test_netstrings_round_trip_in_any_chunking(payloads: list[bytes], chunk: int) -> None:
    stream = b"".join(netstring(p) for p in payloads)
    decoder = NetstringDecoder(proto.MAX_QUERY)
    got: list[bytes] = []
    for i in range(0, len(stream), chunk):
        got.extend(frames(decoder, stream[i : i + chunk]))
    assert got == payloads
    assert not decoder.pending


@given(st.binary(max_size=200))
def test_netstring_decoder_never_fails_otherwise(data: bytes) -> None:
    decoder = NetstringDecoder(100)
    try:
        for frame in frames(decoder, data):
            assert len(frame) <= 100
    except FramingError:
        pass
    assert len(data) <= 200  # the decoder held no more than it was given


@pytest.mark.parametrize(
    ("payload", "table", "key"),
    [
        (b"alias alice@example.org", "alias", "alice@example.org"),
        (b"domain example.org", "domain", "example.org"),
        (b"alias a b", "alias", "a b"),  # the key is everything after the first space
        (b"alias ", "alias", None),  # empty key
        (b"alias a\x00b@example.org", "alias", None),  # NUL
        (b"alias a@example.org\r\n", "alias", None),  # CR/LF
        (b"alias a\tb@example.org", "alias", None),  # control character
        (b"alias \xff\xfe@example.org", "alias", None),  # not UTF-8
        (b"unknown-map x", "unknown-map", "x"),  # the server decides about the name
        (b"alias caf\xc3\xa9@example.org", "alias", "caf\u00e9@example.org"),
    ],
)
def test_parse_request(payload: bytes, table: str, key: str | None) -> None:
    assert proto.parse_request(payload) == proto.Request(table, key)


@pytest.mark.parametrize(
    "payload", [b"", b"alias", b" alias x", b"al/ias x", b"\x00 x", b"x" * 65 + b" k"]
)
def test_malformed_requests(payload: bytes) -> None:
    with pytest.raises(proto.MalformedRequest):
        proto.parse_request(payload)


@given(st.binary(max_size=300))
def test_parse_request_only_raises_malformed(payload: bytes) -> None:
    try:
        req = proto.parse_request(payload)
    except proto.MalformedRequest:
        return
    assert req.key is None or req.key.isprintable()


def test_replies() -> None:
    assert proto.ok("a@x,b@y") == b"10:OK a@x,b@y,"
    assert proto.notfound() == b"9:NOTFOUND ,"
    assert proto.temp("down") == b"9:TEMP down,"
    assert proto.perm("bad\nmap") == b"12:PERM bad?map,"
    too_long = proto.ok("x" * proto.MAX_REPLY)
    assert too_long == proto.perm("reply longer than socketmap_max_reply_size")
    assert len(proto.temp("x" * 10_000)) < 300


@given(
    st.lists(st.binary(max_size=50).map(lambda b: b.replace(b"\n", b"")), max_size=10),
    st.integers(min_value=1, max_value=11),
)
def test_lines_round_trip_in_any_chunking(lines: list[bytes], chunk: int) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    decoder = LineDecoder(64)
    got: list[bytes] = []
    for i in range(0, len(stream), chunk):
        got.extend(frames(decoder, stream[i : i + chunk]))
    assert got == lines
    assert not decoder.pending


def test_line_limit_is_exact() -> None:
    decoder = LineDecoder(5)
    assert frames(decoder, b"12345\n") == [b"12345"]
    with pytest.raises(FramingError):
        frames(decoder, b"123456\n")
    slow = LineDecoder(5)
    assert frames(slow, b"12345") == []
    with pytest.raises(FramingError):
        frames(slow, b"6")
