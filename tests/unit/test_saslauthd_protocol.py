"""saslauthd codec: literal bytes from protocols.md §1.4, malformed inputs, hypothesis fuzzing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idsvc.wire.saslauthd.protocol import (
    MAX_FIELD,
    RequestDecoder,
    SaslauthdProtocolError,
    SaslauthdRequest,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    reply_is_ok,
)

# protocols.md §1.4, byte for byte
EXAMPLE_4 = bytes.fromhex(
    "0005616c69636500067333637265 74000473 6d7470000b6578616d706c652e6f7267".replace(" ", "")
)
EXAMPLE_5 = EXAMPLE_4 + bytes.fromhex("000f3139322e302e322e373b3439313532")
OK_REPLY = bytes.fromhex("00024f4b")


def test_example_four_fields() -> None:
    req = decode_request(EXAMPLE_4)
    assert req == SaslauthdRequest("alice", "s3cret", "smtp", "example.org")
    assert req.client_addr is None
    assert req.remote_ip is None
    assert encode_request(req) == EXAMPLE_4


def test_example_five_fields() -> None:
    req = decode_request(EXAMPLE_5)
    assert req.client_addr == "192.0.2.7;49152"
    assert req.remote_ip == "192.0.2.7"
    assert encode_request(req) == EXAMPLE_5


def test_reply_bytes() -> None:
    assert encode_reply("OK") == OK_REPLY
    assert encode_reply("NO authentication failed") == b"\x00\x18NO authentication failed"
    assert decode_reply(OK_REPLY + b"junk") == ("OK", 4)
    assert decode_reply(b"\x00") is None
    assert decode_reply(b"\x00\x05OK") is None
    assert reply_is_ok('OK "Success."')
    assert not reply_is_ok("NO x")
    with pytest.raises(ValueError, match="starts with OK or NO"):
        encode_reply("MAYBE")
    with pytest.raises(SaslauthdProtocolError, match="reply longer"):
        decode_reply(b"\x04\x00")


def test_repr_hides_password() -> None:
    assert "s3cret" not in repr(decode_request(EXAMPLE_4))


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_any_chunking(chunk: int) -> None:
    decoder = RequestDecoder()
    seen = []
    for i in range(0, len(EXAMPLE_5), chunk):
        decoder.feed(EXAMPLE_5[i : i + chunk])
        seen.append(decoder.fields)
    assert seen == sorted(seen)
    assert decoder.fields == 5
    assert not decoder.partial
    assert decoder.request() == decode_request(EXAMPLE_5)


def test_four_fields_then_partial_fifth() -> None:
    decoder = RequestDecoder()
    decoder.feed(EXAMPLE_4 + b"\x00\x0f192.0")
    assert decoder.fields == 4
    assert decoder.partial
    assert decoder.request().client_addr is None  # the server may give up waiting


def test_bytes_after_fifth_field_are_ignored_not_buffered() -> None:
    decoder = RequestDecoder()
    decoder.feed(EXAMPLE_5 + b"\x00\x03abc" + b"x" * 10_000)
    decoder.feed(b"y" * 100)
    assert decoder.fields == 5
    assert not decoder.partial
    assert decoder.ignored == 5 + 10_000 + 100


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x01", "login field longer than 256"),
        (b"\x00\x01a\xff\xff", "password field longer"),
        (b"\x00\x01a\x00\x01b\x00\x01c" + b"\x01\x01", "realm field longer"),
        (EXAMPLE_4 + b"\x01\x01", "client_addr field longer"),
    ],
)
def test_over_long_field_fails_on_the_length_prefix(data: bytes, message: str) -> None:
    decoder = RequestDecoder()
    with pytest.raises(SaslauthdProtocolError, match=message):
        decoder.feed(data)


def test_field_of_exactly_max_is_accepted() -> None:
    login = "a" * MAX_FIELD
    req = SaslauthdRequest(login, "pw", "smtp", "")
    assert decode_request(encode_request(req)).login == login
    with pytest.raises(SaslauthdProtocolError, match="longer than 256"):
        encode_request(SaslauthdRequest(login + "a", "pw", "smtp", ""))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "0 of 4 fields"),
        (b"\x00\x05alice", "1 of 4 fields"),
        (b"\x00\x05alice\x00\x06s3cret\x00\x04smtp", "3 of 4 fields"),
        (b"\x00\x05alice\x00\x06s3c", "truncated field"),
        (b"\x00", "truncated field"),
        (b"\x00\x05al\x00ce\x00\x01p\x00\x01s\x00\x00", "login field contains NUL"),
        (b"\x00\x01a\x00\x02p\x00\x00\x01s\x00\x00", "password field contains NUL"),
        (b"\x00\x01\xff\x00\x01p\x00\x01s\x00\x00", "login field is not UTF-8"),
        (b"\x00\x01a\x00\x01p\x00\x01s\x00\x02\xc3\x28", "realm field is not UTF-8"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(SaslauthdProtocolError, match=message):
        decode_request(data)


def test_empty_fields_decode() -> None:
    # empty login/password are a policy "NO" in the server, not a framing error
    req = decode_request(b"\x00\x00" * 4)
    assert req == SaslauthdRequest("", "", "", "")


@pytest.mark.parametrize(
    ("addr", "ip"),
    [
        ("192.0.2.7;49152", "192.0.2.7"),
        ("2001:db8::1;25", "2001:db8::1"),
        ("192.0.2.7", "192.0.2.7"),
        ("192.0.2.7;", "192.0.2.7"),
        ("", None),
        ("not-an-ip;25", None),
        ("192.0.2.7;port", None),
        ("192.0.2.7;1234567", None),
        ("192.0.2.700;25", None),
    ],
)
def test_remote_ip(addr: str, ip: str | None) -> None:
    data = encode_request(SaslauthdRequest("u", "p", "smtp", "", client_addr=addr))
    assert decode_request(data).remote_ip == ip


field_text = st.text(
    alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=60
)


@given(
    login=field_text,
    password=field_text,
    service=field_text,
    realm=field_text,
    addr=st.one_of(st.none(), field_text.filter(bool)),
)
def test_round_trip(login: str, password: str, service: str, realm: str, addr: str | None) -> None:
    req = SaslauthdRequest(login, password, service, realm, addr)
    assert decode_request(encode_request(req)) == req


@settings(max_examples=300)
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=8))
def test_fuzz_only_own_error(data: bytes, cuts: list[int]) -> None:
    decoder = RequestDecoder()
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    try:
        for lo, hi in itertools.pairwise(bounds):
            decoder.feed(data[lo:hi])
        req = decoder.request()
    except SaslauthdProtocolError:
        return
    # whatever decoded re-encodes to a prefix of the input: nothing invented, nothing lost
    assert data.startswith(encode_request(req))


@given(data=st.binary(max_size=64))
def test_fuzz_reply_decoder(data: bytes) -> None:
    try:
        out = decode_reply(data)
    except SaslauthdProtocolError:
        return
    if out is not None:
        text, used = out
        assert 2 <= used <= len(data)
        assert len(text) <= used - 2
