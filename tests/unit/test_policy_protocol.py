"""The policy delegation codec: requests, limits, malformed input (table-driven, hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.wire.framing import FramingError
from idsvc.wire.policy import protocol as proto

SECTION_6 = (
    b"request=smtpd_access_policy\n"
    b"protocol_state=RCPT\n"
    b"sasl_username=alice@example.org\n"
    b"sender=alice@example.org\n"
    b"recipient=bob@example.net\n"
    b"client_address=198.51.100.7\n"
    b"instance=8045.5f2ab23.0\n"
    b"\n"
)


def requests(data: bytes, max_attributes: int = 100) -> list[dict[str, str]]:
    decoder = proto.PolicyDecoder(max_attributes)
    decoder.feed(data)
    out = []
    while (attrs := decoder.next()) is not None:
        out.append(attrs)
    return out


def test_the_documented_request() -> None:
    assert requests(SECTION_6) == [
        {
            "request": "smtpd_access_policy",
            "protocol_state": "RCPT",
            "sasl_username": "alice@example.org",
            "sender": "alice@example.org",
            "recipient": "bob@example.net",
            "client_address": "198.51.100.7",
            "instance": "8045.5f2ab23.0",
        }
    ]


@pytest.mark.parametrize(
    ("data", "expected", "pending"),
    [
        (SECTION_6 * 3, 3, False),  # pipelined, one connection
        (SECTION_6[:-1], 0, True),  # no terminating empty line (yet)
        (SECTION_6[:10], 0, True),
        (b"a=1\nb=\n\n", 1, False),  # empty values are values
        (b"a=1\na=2\n\n", 1, False),  # duplicates: the first counts
        (b"x=a=b\n\n", 1, False),  # '=' inside a value
        (b"sender=\xff\xfe@x\n\n", 1, False),  # invalid UTF-8 becomes U+FFFD
    ],
)
def test_framing(data: bytes, expected: int, pending: bool) -> None:
    decoder = proto.PolicyDecoder()
    decoder.feed(data)
    got = []
    while (attrs := decoder.next()) is not None:
        got.append(attrs)
    assert len(got) == expected
    assert decoder.pending is pending


def test_values() -> None:
    assert requests(b"a=1\na=2\nx=a=b\nsender=\xff@x\n\n") == [
        {"a": "1", "x": "a=b", "sender": "\ufffd@x"}
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"\n",  # an empty request
        b"no equals sign\n\n",
        b"=value\n\n",  # empty name
        b"n\x00ame=x\n\n",  # control character in a name
        b"n\xc3\xa9=x\n\n",  # non-ASCII name
        b"a=" + b"x" * (proto.MAX_LINE + 1),  # line over the limit, no LF yet
        b"".join(b"a%d=x\n" % i for i in range(5000)) + b"\n",  # thousands of attributes
        b"GET / HTTP/1.0\r\n\r\n",
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(FramingError):
        requests(data)


def test_attribute_limit_is_configurable() -> None:
    data = b"".join(b"a%d=x\n" % i for i in range(20)) + b"\n"
    assert len(requests(data, max_attributes=20)) == 1
    with pytest.raises(FramingError):
        requests(data, max_attributes=19)


@given(
    st.dictionaries(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20),
        st.text(max_size=100).filter(lambda v: "\n" not in v),
        min_size=1,
        max_size=30,
    ),
    st.integers(min_value=1, max_value=13),
)
def test_round_trip_in_any_chunking(attrs: dict[str, str], chunk: int) -> None:
    stream = proto.encode_request(attrs) * 2
    decoder = proto.PolicyDecoder()
    got = []
    for i in range(0, len(stream), chunk):
        decoder.feed(stream[i : i + chunk])
        while (one := decoder.next()) is not None:
            got.append(one)
    expected = {
        k: v.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for k, v in attrs.items()
    }
    assert got == [expected, expected]


@given(st.binary(max_size=400))
def test_decoder_only_raises_framing_errors(data: bytes) -> None:
    try:
        got = requests(data)
    except FramingError:
        return
    assert all(isinstance(k, str) and "=" not in k for attrs in got for k in attrs)


@pytest.mark.parametrize(
    ("action", "wire"),
    [
        ("DUNNO", b"action=DUNNO\n\n"),
        ("552 5.2.2 Mailbox full", b"action=552 5.2.2 Mailbox full\n\n"),
        ("REJECT a\nb\r", b"action=REJECT a b\n\n"),  # no reply-splitting
    ],
)
def test_replies(action: str, wire: bytes) -> None:
    assert proto.reply(action) == wire


def test_empty_action_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        proto.reply("\n")
