"""BINARY (RFC 3516) codec: section-binary parsing, transfer decoding (base64, quoted-printable,
identities, unknown), the converted whole message / part, and literal8 in the command parser —
tables of good and malformed input, hypothesis round trips and never-crash properties."""

from __future__ import annotations

import base64
import quopri

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsvc.imap import fetch as fx
from mailsvc.imap import protocol as p
from mailsvc.mailbox.mime import parse as parse_mime


@pytest.mark.parametrize(
    ("spec", "path"), [("", ()), ("1", (1,)), ("2.1.3", (2, 1, 3)), ("10", (10,))]
)
def test_binary_section(spec: str, path: tuple[int, ...]) -> None:
    assert fx.parse_binary_section(spec) == path


@pytest.mark.parametrize(
    "spec",
    ["0", "1.0", "TEXT", "HEADER", "1.HEADER", "1.MIME", "1.", ".1", "1..2", " 1", "1 ", "-1",
     "01", "1234567890", "a"],
)  # fmt: skip
def test_binary_section_malformed(spec: str) -> None:
    with pytest.raises(fx.BadSection):
        fx.parse_binary_section(spec)


@pytest.mark.parametrize(
    ("data", "cte", "decoded"),
    [
        (b"aGVsbG8gd29ybGQ=\r\n", "base64", b"hello world"),
        (b"aGVs\r\nbG8g\r\n d29y bGQ=", "base64", b"hello world"),
        (b"aGVsbG8gd29ybGQ", "base64", b"hello world"),  # padding left off
        (b"", "base64", b""),
        (b"Gr=C3=BC=C3=9Fe=\r\n soft  \r\n", "quoted-printable", b"Gr\xc3\xbc\xc3\x9fe soft\r\n"),
        (b"a=3db=3D=\nc", "quoted-printable", b"a=b=c"),
        (b"bad =zz and =4", "quoted-printable", b"bad =zz and =4"),
        (b"line\r\n\r\nend", "quoted-printable", b"line\r\n\r\nend"),
        (b"as is =41\r\n", "7bit", b"as is =41\r\n"),
        (b"\xff\x00", "8bit", b"\xff\x00"),
        (b"\xff\x00", "binary", b"\xff\x00"),
        (b"\xff", "", b"\xff"),
    ],
)
def test_decode_transfer(data: bytes, cte: str, decoded: bytes) -> None:
    assert fx.decode_transfer(data, cte) == decoded


@pytest.mark.parametrize(
    ("data", "cte", "error"),
    [
        (b"aGVsbG8*!!", "base64", fx.BadEncoding),
        (b"aGVsb", "base64", fx.BadEncoding),  # one character over a quantum
        (b"====", "base64", fx.BadEncoding),
        (b"begin 644 x", "x-uuencode", fx.UnknownCte),
        (b"x", "base-64", fx.UnknownCte),
    ],
)
def test_decode_transfer_errors(data: bytes, cte: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        fx.decode_transfer(data, cte)


@given(st.binary(max_size=400))
def test_base64_round_trip(data: bytes) -> None:
    assert fx.decode_transfer(base64.encodebytes(data).replace(b"\n", b"\r\n"), "base64") == data


@given(st.binary(max_size=400).filter(lambda b: b"\r" not in b and b"\n" not in b))
def test_quoted_printable_round_trip(data: bytes) -> None:
    assert fx.decode_qp(quopri.encodestring(data, quotetabs=True)) == data


@given(st.binary(max_size=300))
def test_qp_never_grows(data: bytes) -> None:
    assert len(fx.decode_qp(data)) <= len(data)


MESSAGE = (
    b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n"
    b"--b\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\na=3Db\r\n"
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\nContent-Transfer-Encoding:\r\n"
    b" base64\r\n\r\nAAE=\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b--\r\npost\r\n"
)


def test_binary_of_parts_and_whole() -> None:
    root = parse_mime(MESSAGE)
    assert fx.binary_section(MESSAGE, root, (1,)) == (b"a=b", True)
    assert fx.binary_section(MESSAGE, root, (3,)) == (b"plain", False)
    assert fx.binary_section(MESSAGE, root, (2, 1)) == (b"\x00\x01", True)
    assert fx.binary_section(MESSAGE, root, (2,)) == (
        b"Subject: in\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01",
        True,
    )  # the folded field rewritten whole
    assert fx.binary_section(MESSAGE, root, (7,)) == (b"", False)
    whole, decoded = fx.binary_section(MESSAGE, root, ())
    assert decoded
    assert whole == MESSAGE.replace(b"Quoted-Printable\r\n\r\na=3Db", b"binary\r\n\r\na=b").replace(
        b"Encoding:\r\n base64\r\n\r\nAAE=", b"Encoding: binary\r\n\r\n\x00\x01"
    )


@given(st.binary(max_size=600))
def test_binary_never_fails_otherwise(tail: bytes) -> None:
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + tail
    root = parse_mime(raw)
    for path in [(), (1,), (1, 1), (2,)]:
        try:
            data, _ = fx.binary_section(raw, root, path)
        except (fx.UnknownCte, fx.BadEncoding):
            continue
        assert isinstance(data, bytes)


@pytest.mark.parametrize(
    ("line", "args"),
    [
        (b"a APPEND Drafts ~{3}\r\n\x00\x01\xff", ["Drafts", b"\x00\x01\xff"]),
        (b"a APPEND Drafts (\\Seen) ~{0+}\r\n", ["Drafts", ["\\Seen"], b""]),
        (b"a APPEND Drafts ~x", ["Drafts", "~x"]),  # just an atom
    ],
)
def test_literal8_in_commands(line: bytes, args: list[p.Token]) -> None:
    assert p.literal_at_end(b"a APPEND Drafts ~{3}") == (3, False)
    assert p.parse_command(line).args == args


@pytest.mark.parametrize(
    "line", [b"a APPEND Drafts ~{3}\r\nab", b"a APPEND Drafts ~{x}\r\nabc", b"a APPEND Drafts ~{"]
)
def test_literal8_malformed(line: bytes) -> None:
    with pytest.raises(p.ParseError):
        p.parse_command(line)
