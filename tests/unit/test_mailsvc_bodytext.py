"""``mailsvc.imap.bodytext``: the text SEARCH BODY/TEXT looks in, read without the stdlib
``email`` parser. Table-driven cases, the same answers as a stdlib reference on the test corpus,
and hypothesis: any bytes give a string, never an exception."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsvc.imap.bodytext import body_text
from tests.fixtures.mailcorpus import CORPUS


def reference(raw: bytes) -> str:
    """What the stdlib ``email`` package reads as the text parts (the previous implementation)."""
    texts = []
    for part in email.message_from_bytes(raw, policy=email.policy.compat32).walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            charset = part.get_content_charset() or "us-ascii"
            try:
                texts.append(payload.decode(charset, "replace"))
            except LookupError:
                texts.append(payload.decode("utf-8", "replace"))
    return "\n".join(texts).lower()


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


MULTI = crlf(
    'Subject: x\nContent-Type: multipart/mixed;\n boundary="b\\"1"\n\n'
    '--b"1\nContent-Type: text/plain; charset=ISO-8859-1\n'
    "Content-Transfer-Encoding: quoted-printable\n\nCaf=E9 soft=\n break\n"
    '--b"1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n'
    "bmVlZGxl\n"
    '--b"1\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\nPGI+TmVlZGxlPC9iPg==\n'
    '--b"1--\n'
)

CASES = [
    (crlf("Subject: plain\n\nHello World\n"), "hello world\r\n"),
    (crlf("Subject: none\n"), ""),
    (MULTI, "café soft break\n<b>needle</b>"),
    # a type/subtype on a folded line, upper case names, a charset in RFC 2231 form
    (
        crlf(
            "CONTENT-TYPE:\n TEXT/Plain;\n charset*=utf-8''utf-8\n"
            "Content-Transfer-Encoding: BASE64\n\nw6l0w6k=\n"
        ),
        "été",
    ),
    # broken base64 still yields what decodes; an unknown encoding and charset leave the bytes
    (crlf("Content-Transfer-Encoding: base64\n\naGVsbG8gd29ybGQ*!\n"), "hello world"),
    (crlf("Content-Transfer-Encoding: x-rot13\n\nUnchanged\n"), "unchanged\r\n"),
    (crlf("Content-Type: text/plain; charset=no-such-charset\n\nKept\n"), "kept\r\n"),
    # not text: nothing to search; a nested message is searched inside
    (crlf("Content-Type: image/png\n\nNEEDLE\n"), ""),
    (crlf("Content-Type: message/rfc822\n\nSubject: in\n\nInner Needle\n"), "inner needle\r\n"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_body_text(raw: bytes, expected: str) -> None:
    assert body_text(raw) == expected


@pytest.mark.parametrize(
    "raw", [*CORPUS, MULTI], ids=lambda raw: raw[:24].decode("ascii", "replace")
)
def test_the_same_text_as_the_stdlib_reads(raw: bytes) -> None:
    assert body_text(raw) == reference(raw)


@given(st.binary(max_size=2000))
def test_any_bytes_give_text(raw: bytes) -> None:
    assert isinstance(body_text(raw), str)


@given(
    st.lists(
        st.sampled_from(
            [
                b"Content-Type: multipart/mixed; boundary=z\r\n",
                b"Content-Type: message/rfc822\r\n",
                b"Content-Transfer-Encoding: base64\r\n",
                b"Content-Transfer-Encoding: quoted-printable\r\n",
                b"\r\n",
                b"--z\r\n",
                b"--z--\r\n",
                b"text =E9 line\r\n",
                b"aGVsbG8=\r\n",
            ]
        ),
        max_size=200,
    )
)
def test_any_nesting_of_mime_lines_gives_text(lines: list[bytes]) -> None:
    assert isinstance(body_text(b"".join(lines)), str)
