"""The tcp_table codec: %-encoding both ways, malformed input (table-driven, hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.wire.tcp_table import protocol as proto


@pytest.mark.parametrize(
    ("line", "key"),
    [
        (b"get alice@example.org", "alice@example.org"),
        (b"get alice@example.org\r", "alice@example.org"),
        (b"get a%20b@example.org", "a b@example.org"),
        (b"get %41lice@example.org", "Alice@example.org"),
        (b"get %4a%4A", "JJ"),  # hex in any case
        (b"get %25", "%"),
        (b"get caf%C3%A9@x.example", "caf\u00e9@x.example"),
        (b"get ", None),  # empty key
        (b"get a%0Ab@example.org", None),  # LF inside the key
        (b"get a%00b@example.org", None),  # NUL
        (b"get %zz", None),  # broken escapes
        (b"get %4", None),
        (b"get 100%", None),
        (b"get %FF%FE", None),  # not UTF-8
    ],
)
def test_requests(line: bytes, key: str | None) -> None:
    assert proto.parse_request(line) == key


@pytest.mark.parametrize("line", [b"", b"put x", b"GET x", b"get", b"getx", b"\x00"])
def test_only_get_exists(line: bytes) -> None:
    with pytest.raises(proto.ProtocolError):
        proto.parse_request(line)


def test_replies() -> None:
    assert proto.found("a@x,b@y") == b"200 a@x,b@y\n"
    assert proto.found("a b%\n") == b"200 a%20b%25%0A\n"
    assert proto.not_found() == b"500 not%20found\n"
    assert proto.temporary("down now") == b"400 down%20now\n"
    assert proto.found("x" * proto.MAX_REPLY).startswith(b"400 ")


@given(st.text(min_size=1, max_size=200).filter(str.isprintable))
def test_quote_round_trip(key: str) -> None:
    assert proto.parse_request(b"get " + proto.quote(key).encode("ascii")) == key


@given(st.binary(max_size=300))
def test_parse_only_raises_protocol_error(line: bytes) -> None:
    try:
        key = proto.parse_request(line)
    except proto.ProtocolError:
        assert not line.startswith(b"get ")
        return
    assert key is None or key.isprintable()
